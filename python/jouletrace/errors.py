"""The exception hierarchy of jouletrace.

Every error jouletrace raises on purpose is a :class:`JouletraceError`. Messages
say what happened and what to do about it. The native core raises the same
classes (its C++ exceptions are translated to these).
"""

from __future__ import annotations

__all__ = [
    "JouletraceError",
    "SourceUnavailableError",
    "PermissionDeniedError",
    "DeviceLostError",
    "InvalidArgumentError",
    "TraceFormatError",
    "RecordingFormatError",
    "MeasurementUnavailableWarning",
]


class JouletraceError(Exception):
    """Base class of every jouletrace error."""


class SourceUnavailableError(JouletraceError):
    """A source cannot be used on this machine (library, driver or device missing)."""


class PermissionDeniedError(JouletraceError, PermissionError):
    """The source exists but this process may not read it; the message names the fix."""


class DeviceLostError(JouletraceError):
    """A device stopped answering during a recording.

    What was recorded before is kept: ``recording`` holds it when the error was
    raised by a sampler.
    """

    def __init__(self, message: str, recording: object | None = None) -> None:
        super().__init__(message)
        self.recording = recording


class InvalidArgumentError(JouletraceError, ValueError):
    """An argument names something that does not exist (device index, option, source)."""


class TraceFormatError(JouletraceError, ValueError):
    """A profiler trace is malformed, truncated or of an unknown version."""


class RecordingFormatError(JouletraceError, ValueError):
    """A saved recording is truncated, corrupt or from a newer jouletrace."""


class MeasurementUnavailableWarning(UserWarning):
    """Nothing can be measured here; the default Monitor's windows are marked unavailable.

    Issued once per process by ``jouletrace.window`` (the default Monitor) when no
    energy source is usable, instead of failing the instrumented program.
    """
