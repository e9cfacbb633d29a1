"""Test doubles and workloads that tests and benchmarks import (ARCHITECTURE.md, "Testing").

:mod:`.workloads`: synthetic kernel workloads, recordings synthesised from the
simulated GPU's sensor model (perfect timing: for the maths and for speed), and
real traces' kernel timelines tiled into power schedules. :mod:`.replay`: the
same timelines replayed by simulated GPUs *in real time* while the real
sampler thread records them — the end-to-end accuracy harness. :mod:`.rapl`:
``FakeRapl``, fake machines for the RAPL sources. :mod:`.traces`: tables written
back out as Nsight Systems and PyTorch-profiler files. :mod:`.waiting`: liveness waits for
real-time tests (wait for the sampler's reads, not for a fixed time). :mod:`.stats`: coverage
floors for tests that assert a rate, derived from the binomial.

May import anything in the package; nothing outside ``testing`` imports it but the CLI's demo.
"""
