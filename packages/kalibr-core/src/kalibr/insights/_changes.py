"""The change log: what automatic jobs did to a goal's paths (generated, retired), shown in insights.

Every store keeps the log (``Store.record_event`` and ``Store.events``), so it survives a restart and replicas
sharing a database see one log. Entries hold metadata only: path ids, params, rates.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from kalibr.stores.base import Store

__all__ = ["changes", "record_change"]


def record_change(store: Store, tenant: str, goal: str, kind: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """Append one change to the store's log; returns it as ``changes`` shows it.

    The store stamps the entry; the returned ``at`` is read just after, so it can be later by the write's duration.
    """
    entry = dict(data)
    store.record_event(tenant, goal, kind, entry)
    return {"at": datetime.now(UTC).isoformat(), "goal": goal, "kind": kind, "data": entry}


def changes(store: Store, tenant: str, goal: str | None, since: datetime) -> list[dict[str, Any]]:
    """The changes to ``goal`` (or every goal) since ``since``, oldest first."""
    return store.events(tenant, goal, since)
