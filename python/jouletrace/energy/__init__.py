"""Energy: from samples to joules — update placement, windows, measurements, storage.

Owns what happens after the sampler: :mod:`.updates` (when each counter update
happened, the one placement every consumer uses). It imports only
:mod:`jouletrace.errors` and numpy; the kernels layer and the CLI import it, never
the reverse. See ARCHITECTURE.md.
"""
