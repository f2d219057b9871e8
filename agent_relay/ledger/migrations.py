"""Schema versions, and the ordered DDL that moves a ledger from one to the next.

Ordered, versioned DDL rather than Alembic: the ledger is two tables owned by a library that users embed,
its changes are additive, and an upgrade must run from the library itself (``agent-relay db upgrade`` or
``LedgerOptions(upgrade=True)``) on SQLite and PostgreSQL alike, without a migrations directory or a
second tool for users to carry. Each step runs in one transaction with the version bump, so a ledger is
always at exactly one version; concurrent upgraders serialise on the version row. Rows are never
rewritten or dropped: a step adds columns (with defaults), tables or indexes.

Version 1: the core ledger (runs, calls, idempotency keys). Version 2: sagas, budgets, replay and resume
(``cost_unknown``, run ``owner`` and ``fork_after``, call ``origin``).
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import agent_runs, tool_calls

# Columns each version added, by table: the DDL of a step, and what a test drops to build the old schema.
ADDED_COLUMNS: dict[int, list[tuple[sa.Table, str]]] = {
    2: [
        (agent_runs, "cost_unknown"),
        (agent_runs, "owner"),
        (agent_runs, "fork_after"),
        (tool_calls, "cost_unknown"),
        (tool_calls, "origin"),
    ],
}


def _add_columns(version: int) -> Callable[[Connection], None]:
    def step(conn: Connection) -> None:
        for table, name in ADDED_COLUMNS[version]:
            ddl = sa.schema.CreateColumn(table.c[name]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")

    return step


STEPS: dict[int, Callable[[Connection], None]] = {2: _add_columns(2)}
"""``STEPS[v]`` upgrades a ledger from version ``v - 1`` to ``v``."""
