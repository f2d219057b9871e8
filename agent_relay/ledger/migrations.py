"""Schema versions, and the ordered DDL that moves a ledger from one to the next.

Ordered, versioned DDL rather than Alembic: the ledger is two tables owned by a library that users embed,
its changes are additive, and an upgrade must run from the library itself (``agent-relay db upgrade`` or
``LedgerOptions(upgrade=True)``) on SQLite and PostgreSQL alike, without a migrations directory or a
second tool for users to carry. Each step runs in one transaction with the version bump, so a ledger is
always at exactly one version; concurrent upgraders serialise on the version row. Rows are never
rewritten or dropped: a step adds columns (with defaults), tables or indexes.

Version 1: the core ledger (runs, calls, idempotency keys). Version 2: sagas, budgets, replay and resume
(``cost_unknown``, run ``owner`` and ``fork_after``, call ``origin``). Version 3: exact values — JSON
columns keep their text: on SQLite ``JSON_TEXT`` (TEXT affinity) instead of ``JSON`` (NUMERIC affinity),
on PostgreSQL ``json`` instead of ``jsonb`` (which rewrote numbers); money on SQLite is decimal text
(``DECIMAL_TEXT``) instead of REAL. (Values already rewritten keep what they became: a ``1.0`` SQLite
stored as ``1`` stays ``1``.)
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .schema import agent_runs, tool_calls

# Columns each version added, by table: the DDL of a step, and what a test drops to build the old schema.
ADDED_COLUMNS: dict[int, list[tuple[sa.Table, str]]] = {
    3: [],
    2: [
        (agent_runs, "cost_unknown"),
        (agent_runs, "owner"),
        (agent_runs, "fork_after"),
        (tool_calls, "cost_unknown"),
        (tool_calls, "origin"),
    ],
}


# SQLite columns whose declared type (and so affinity) a version changed, with the type they had before.
RETYPED_ON_SQLITE: dict[int, list[tuple[sa.Table, str, str]]] = {
    3: [
        (agent_runs, "input_payload", "JSON"),
        (agent_runs, "output", "JSON"),
        (agent_runs, "budget_limit_usd", "NUMERIC(20, 10)"),
        (agent_runs, "cost_usd", "NUMERIC(20, 10)"),
        (tool_calls, "arguments", "JSON"),
        (tool_calls, "output", "JSON"),
        (tool_calls, "cost_usd", "NUMERIC(20, 10)"),
    ],
}


# PostgreSQL columns a version turned from jsonb into json.
JSONB_TO_JSON: dict[int, list[tuple[sa.Table, str]]] = {
    3: [
        (agent_runs, "input_payload"),
        (agent_runs, "output"),
        (tool_calls, "arguments"),
        (tool_calls, "output"),
    ],
}


def retype_sqlite_column(conn: Connection, table: sa.Table, name: str, declared: str) -> None:
    """Give a SQLite column a new declared type, keeping its values as text (SQLite cannot alter a column's
    type: a new column is filled from it, the old one dropped and the new one renamed; the table, its
    constraints and the other columns stay as they are)."""
    column = table.c[name]
    temporary = f"{name}__retyped"
    spec = f"{temporary} {declared}"
    if column.server_default is not None:  # (a plain text default: the retyped columns have no other)
        spec += f" DEFAULT '{column.server_default.arg}'"  # type: ignore[attr-defined]
    if not column.nullable:
        spec += " NOT NULL"
    conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {spec}")
    conn.exec_driver_sql(
        f"UPDATE {table.name} SET {temporary} = CASE WHEN typeof({name}) IN ('text', 'null') THEN {name} "
        f"ELSE CAST({name} AS TEXT) END"
    )
    conn.exec_driver_sql(f"ALTER TABLE {table.name} DROP COLUMN {name}")
    conn.exec_driver_sql(f"ALTER TABLE {table.name} RENAME COLUMN {temporary} TO {name}")


def _add_columns(version: int) -> Callable[[Connection], None]:
    def step(conn: Connection) -> None:
        for table, name in ADDED_COLUMNS[version]:
            ddl = sa.schema.CreateColumn(table.c[name]).compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {ddl}")

    return step


def _exact_values(conn: Connection) -> None:
    if conn.dialect.name != "sqlite":  # PostgreSQL: NUMERIC was exact already; json keeps the text
        for table, name in JSONB_TO_JSON[3]:
            conn.exec_driver_sql(
                f"ALTER TABLE {table.name} ALTER COLUMN {name} TYPE json USING {name}::text::json"
            )
        return
    for table, name, _ in RETYPED_ON_SQLITE[3]:
        declared = table.c[name].type.compile(dialect=conn.dialect)
        retype_sqlite_column(conn, table, name, declared)


STEPS: dict[int, Callable[[Connection], None]] = {2: _add_columns(2), 3: _exact_values}
"""``STEPS[v]`` upgrades a ledger from version ``v - 1`` to ``v``."""
