"""Kernels: profiler traces lined up with recordings, energy per launch and per name, export.

Owns the kernel side of the data flow (ARCHITECTURE.md): :mod:`.alignment` (trace
clocks onto CLOCK_MONOTONIC, trace devices onto recording channels) and
:mod:`.attribution` (per-launch and per-name energies). It consumes the energy
layer (:class:`jouletrace.Recording` and its one update placement,
:mod:`jouletrace.energy.updates`) and never the reverse.
"""
