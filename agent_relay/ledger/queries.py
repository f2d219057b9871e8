"""Read-only queries over the ledger, for the ``agent-relay`` command and scripts.

Every statement uses an index: runs newest first (``ix_agent_runs_started_at``), a run's calls in order
(``ix_tool_calls_run_seq``), run ids by prefix (the primary key, as a range).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from ..errors import AmbiguousRunError, UnknownRunError
from .schema import agent_runs, tool_calls
from .store import LedgerStore


def resolve_run_id(store: LedgerStore, prefix: str) -> str:
    """The one run whose id starts with ``prefix``; ``UnknownRunError`` / ``AmbiguousRunError`` else."""
    if not prefix:
        raise UnknownRunError(prefix, store.database)
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    stmt = (
        sa.select(agent_runs.c.run_id)
        .where(agent_runs.c.run_id >= prefix, agent_runs.c.run_id < upper)
        .order_by(agent_runs.c.run_id)
        .limit(3)
    )
    with store.reading("find a run") as conn:
        found = list(conn.execute(stmt).scalars())
    if prefix in found:
        return prefix
    if not found:
        raise UnknownRunError(prefix, store.database)
    if len(found) > 1:
        raise AmbiguousRunError(prefix, found)
    return str(found[0])


def list_runs(
    store: LedgerStore,
    *,
    status: str | None = None,
    name: str | None = None,
    since: dt.datetime | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Runs newest first, each with its number of calls."""
    calls = (
        sa.select(sa.func.count())
        .where(tool_calls.c.run_id == agent_runs.c.run_id)
        .scalar_subquery()
        .label("calls")
    )
    stmt = sa.select(agent_runs, calls).order_by(agent_runs.c.started_at.desc()).limit(limit)
    if status:
        stmt = stmt.where(agent_runs.c.status == status)
    if name:
        stmt = stmt.where(agent_runs.c.name == name)
    if since:
        stmt = stmt.where(agent_runs.c.started_at >= since)
    with store.reading("list runs") as conn:
        return [dict(row) for row in conn.execute(stmt).mappings()]


def get_run(store: LedgerStore, run_id: str) -> dict[str, Any]:
    row = store.get_run(run_id)
    if row is None:
        raise UnknownRunError(run_id, store.database)
    return dict(row._mapping)


def run_calls(store: LedgerStore, run_id: str) -> list[dict[str, Any]]:
    """A run's calls, both phases, in ``seq`` order."""
    return [dict(row._mapping) for row in store.list_calls(run_id)]
