"""Energy: from samples to joules — update placement, windows, measurements, storage.

Owns what happens after the sampler: :mod:`.recording` (``Recording``, the columns),
:mod:`.updates` (when each counter update happened, the one placement every consumer
uses), :mod:`.windows` (window energies and their bound), :mod:`.measurement`,
:mod:`.monitor`, :mod:`.repeat` (``measure``), :mod:`.storage` (npz files),
:mod:`.stream` and :mod:`.compact` (streamed recordings).

May import: the sampling layer, :mod:`jouletrace.errors` and the private helpers; the
kernels layer, analysis and the CLI import it, never the reverse. See ARCHITECTURE.md.
"""
