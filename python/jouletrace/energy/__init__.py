"""Energy: from samples to joules — update placement, windows, measurements, storage.

Owns what happens after the sampler: :mod:`.sampler` (``jouletrace.Sampler``: the sampling
layer's sampler handing over a Recording, and streaming), :mod:`.recording` (``Recording``:
the sampled columns and their energy), :mod:`.updates` (when each counter update happened,
the one placement every consumer uses), :mod:`.windows` (window energies and their bound),
:mod:`.measurement`, :mod:`.monitor`, :mod:`.repeat` (``measure``), :mod:`.calibrate` (a GPU
sensor measured), :mod:`.archive` and :mod:`.storage` (npz files: writer, reader),
:mod:`.stream` and :mod:`.compact` (streamed recordings).

May import: the sampling layer, :mod:`jouletrace.errors` and the private helpers; the
kernels layer, analysis and the CLI import it, never the reverse. See ARCHITECTURE.md.
"""
