"""jouletrace.Sampler: the sampler (:mod:`jouletrace.sampling.sampler`) as the energy layer hands it out.

The sampling layer's :class:`~jouletrace.sampling.sampler.Sampler` runs the native thread and
hands over its columns (:class:`~jouletrace.sampling.samples.Samples`); it never imports this
layer. This subclass is the one the package exports: ``recording()`` gives the columns as a
:class:`~jouletrace.energy.recording.Recording` (the energy methods), and ``stream_to=PATH``
attaches the streaming writer (:mod:`.stream`) through the base class's start/stop hooks.
"""

from __future__ import annotations

import os
from typing import Any

from ..sampling import sampler as _sampling
from .recording import Recording
from .stream import Streamer, require_pyarrow

__all__ = ["Sampler", "SOURCE_NAMES"]

SOURCE_NAMES = _sampling.SOURCE_NAMES

#: Storage bound of a streaming sampler: its old samples' memory is given back, so only
#: address space grows (8 bytes a column a sample; 2**36 is two years at 1 kHz).
_STREAM_MAX_SAMPLES = 1 << 36


class Sampler(_sampling.Sampler):
    """Samples one source on a native thread at ``rate_hz``, with the GIL out of the way.

    ``source`` is one of ``nvml``, ``sim`` (the simulated GPU), ``rapl``,
    ``rapl-perf``, ``rapl-msr``, ``rapl-powercap`` (see :func:`jouletrace.sources`);
    the source and sampler options are listed in :class:`jouletrace.sampling.sampler.Sampler`,
    the sampling layer's part of this class. ``recording()`` returns the samples so far
    (zero-copy) as a :class:`jouletrace.Recording` at any time.

    Streaming (:mod:`jouletrace.energy.stream`): ``stream_to=PATH`` writes the
    recording to a new folder as it is made (flushed every ``flush_s``, 0.5 s;
    readable with ``jouletrace.load(PATH)`` even after a crash), compacted
    without loss unless ``compact=False``; memory stays bounded: ``recording()``
    then covers the last ``keep_s`` seconds (600; None keeps everything in memory
    too). Needs pyarrow (``pip install 'jouletrace[stream]'``).

    Lifecycle (context manager, ``start()`` / ``stop()``) and errors of the sampling
    thread: as :class:`jouletrace.sampling.sampler.Sampler`.
    """

    def __init__(
        self,
        source: str = "nvml",
        rate_hz: float = 1000.0,
        *,
        max_samples: int = 0,
        stream_to: str | os.PathLike[str] | None = None,
        compact: bool = True,
        keep_s: float | None = 600.0,
        flush_s: float = 0.5,
        **options: Any,
    ) -> None:
        if stream_to is not None:
            require_pyarrow()  # before anything starts
            if max_samples == 0:
                max_samples = _STREAM_MAX_SAMPLES  # the memory of old samples is given back: no week bound
        super().__init__(source, rate_hz, max_samples=max_samples, **options)
        #: The streaming writer (``stream_to=``), created at the first start(); else None.
        self.stream: Any = None
        self._stream_args: dict[str, Any] | None = None if stream_to is None else dict(
            path=os.fspath(stream_to), compact=compact, keep_s=keep_s, flush_s=flush_s)
        #: Set by a Monitor: its windows that ended since the last call, for the stream.
        self._windows_stream: Any = None

    def _starting(self) -> None:
        if self._stream_args is not None and self.stream is None:
            self.stream = Streamer(self, metadata=self._metadata(), **self._stream_args)
            self.stream.windows_source = self._windows_stream

    def _started(self) -> None:
        if self.stream is not None:
            self.stream.start()

    def _stopped(self) -> None:
        if self.stream is not None:
            self.stream.finish(self.recording().metadata)

    def recording(self) -> Recording:
        """Every sample so far as a :class:`Recording` of read-only, zero-copy numpy views.

        A streaming sampler's recording covers the last ``keep_s`` seconds (from poll
        ``metadata["stream"]["first_poll"]``); the whole run is in the file.
        """
        if self.stream is None:
            return self._samples(Recording)
        stream = self.stream
        first: list[int] = []

        def first_poll() -> int:
            first.append(stream.view_start)
            return first[0]

        rec = self._samples(Recording, first_poll)
        start = first[0]
        rec.metadata["stream"] = {"path": stream.path, "first_poll": start, "polls": start + len(rec),
                                  "compacted": stream.writer.compact,
                                  "error": None if stream.error is None else str(stream.error)}
        return rec
