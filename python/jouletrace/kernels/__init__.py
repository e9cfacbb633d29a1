"""Kernels: profiler traces lined up with recordings, energy per launch and per name, export.

Owns the kernel side of the data flow (ARCHITECTURE.md): :mod:`.traces` (importers
into one ``KernelTable``), :mod:`.alignment` (trace clocks onto CLOCK_MONOTONIC,
trace devices onto recording channels), :mod:`.attribution` (per-launch and per-name
energies), :mod:`.markers` (sync markers) and :mod:`.export` (Perfetto).

May import: the energy layer (:class:`jouletrace.energy.recording.Recording` and its
one update placement, :mod:`jouletrace.energy.updates`), the sampling layer,
:mod:`jouletrace.errors` and the private helpers; never the reverse.
"""
