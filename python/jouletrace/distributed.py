"""``jouletrace.distributed``: energy across ranks and nodes (see :mod:`jouletrace.integrations.distributed`)."""

from __future__ import annotations

from .integrations.distributed import Gathered, GatheredStep, gather, merge_payloads, rank_payload

__all__ = ["gather", "Gathered", "GatheredStep", "merge_payloads", "rank_payload"]
