"""One clock-pair converter (jouletrace.sampling.clock) serves the recording and the trace alignment."""

from __future__ import annotations

import numpy as np
import pytest

from jouletrace import InvalidArgumentError, Recording
from jouletrace.kernels.alignment import Alignment
from jouletrace.sampling import clock


def _recording(pairs: np.ndarray | None) -> Recording:
    t = np.arange(10, dtype=np.int64) * 1_000_000
    return Recording(t_ns=t, t_before_ns=t - 2000, t_after_ns=t + 2000, seq=np.arange(10, dtype=np.uint64),
                     status=np.zeros(10, np.int32), values={"gpu0.energy_j": np.arange(10.0)},
                     cumulative={"gpu0.energy_j": True}, clock_pairs=pairs)


def _reference_nearest(keys: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The nearest pair by a plain scan (ties to the earlier pair)."""
    return np.array([int(np.argmin(np.abs(keys - x))) for x in q.reshape(-1)], dtype=np.intp).reshape(q.shape)


def _pairs(rng: np.random.Generator, k: int) -> np.ndarray:
    # k distinct instants on a 997 ns lattice over 1000 s (drawn, not chosen from a 10^9-element range)
    steps = rng.permutation(np.unique(rng.integers(0, 10**12 // 997, size=4 * k)))[:k]
    mono = (10**9 + 997 * np.sort(steps)).astype(np.int64)
    # an offset that moves by up to a few ms between pairs (NTP slew), plus the read bracket
    off = 1_700_000_000 * 10**9 + np.cumsum(rng.integers(-3_000_000, 3_000_000, size=k))
    return np.stack([mono, mono + off, rng.integers(50, 500, size=k)], axis=1).astype(np.int64)


@pytest.mark.parametrize("k", [1, 2, 3, 17])
def test_the_converter_goes_through_the_nearest_pair_exactly(k):
    rng = np.random.default_rng(k)
    pairs = _pairs(rng, k)
    mono, real = pairs[:, 0], pairs[:, 1]
    q = np.concatenate([rng.integers(mono[0] - 10**10, mono[-1] + 10**10, size=500), mono,
                        (mono[:-1] + mono[1:]) // 2]).astype(np.int64)  # midpoints: the ties
    got = clock.to_epoch_ns(pairs, q)
    assert got.dtype == np.int64
    assert np.array_equal(got, q + (real - mono)[_reference_nearest(mono, q)])
    e = real[0] + (q - mono[0])
    assert np.array_equal(clock.to_monotonic_ns(pairs, e), e - (real - mono)[_reference_nearest(real, e)])
    if k == 1:
        assert np.array_equal(clock.to_monotonic_ns(pairs, clock.to_epoch_ns(pairs, q)), q)


def test_recording_and_alignment_convert_alike():
    rng = np.random.default_rng(0)
    pairs = _pairs(rng, 9)
    rec = _recording(pairs)
    al = Alignment("clock_pairs", "epoch", 0, 0, pairs)
    shifted = Alignment("markers", "epoch", 1234, 0, pairs)
    t_mono = rng.integers(pairs[0, 0], pairs[-1, 0], size=1000).astype(np.int64)
    t_epoch = rec.to_epoch_ns(t_mono)
    assert np.array_equal(al.to_trace(t_mono), t_epoch)
    assert np.array_equal(al.to_monotonic(t_epoch), rec.to_monotonic_ns(t_epoch))
    assert np.array_equal(shifted.to_monotonic(t_epoch), rec.to_monotonic_ns(t_epoch) + 1234)
    assert np.array_equal(shifted.to_trace(shifted.to_monotonic(t_epoch)), al.to_trace(al.to_monotonic(t_epoch)))


def test_no_pairs_is_a_clear_error():
    rec = _recording(None)
    with pytest.raises(InvalidArgumentError, match="no clock pairs"):
        rec.to_epoch_ns([1, 2])
    with pytest.raises(InvalidArgumentError, match="no clock pairs"):
        Alignment("clock_pairs", "epoch", 0, 0, rec.clock_pairs).to_monotonic([1])
