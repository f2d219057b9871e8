"""Schema versions, and the ordered DDL that moves a ledger from one to the next.

Ordered, versioned DDL rather than Alembic: the ledger is two tables owned by a library that users embed,
its changes are additive, and an upgrade must run from the library itself (``agent-relay db upgrade`` or
``LedgerOptions(upgrade=True)``) on SQLite and PostgreSQL alike, without a migrations directory or a
second tool for users to carry. Each step runs in one transaction with the version bump, so a ledger is
always at exactly one version; concurrent upgraders serialise on the version row. Rows are never
rewritten or dropped: a step adds columns (with defaults), tables or indexes (or drops an index).

Version 1: the core ledger (runs, calls, idempotency keys). Version 2: sagas, budgets, replay and resume
(``cost_unknown``, run ``owner`` and ``fork_after``, call ``origin``). Version 3: exact values — JSON
columns keep their text: on SQLite ``JSON_TEXT`` (TEXT affinity) instead of ``JSON`` (NUMERIC affinity),
on PostgreSQL ``json`` instead of ``jsonb`` (which rewrote numbers); money on SQLite is decimal text
(``DECIMAL_TEXT``) instead of REAL. (Values already rewritten keep what they became: a ``1.0`` SQLite
stored as ``1`` stays ``1``.) Version 4: attempt history and retention — the ``tool_call_attempts`` table,
and ``ON DELETE CASCADE`` on the foreign keys to runs (on SQLite, which cannot alter a constraint,
``tool_calls`` is rebuilt with every row), so deleting a run deletes its calls and their attempts.
Version 5: keyed idempotency keys — the ledger's key secret (``agent_relay_key_secrets``, one made by the
step) and each run's ``key_version`` / ``key_id``; runs recorded before keep key version 1 (their column
is NULL), so they replay, fork and resume unchanged. Version 6: cancelling a run from outside — each
run's ``cancel_requested_at`` and ``cancel_reason``. Version 7: approval before a tool runs — each call's
``decided_by``, ``decided_at`` and ``decision_note``, and a ``status`` wide enough for
``awaiting_approval`` (on PostgreSQL; SQLite does not enforce a length). Version 8: leases on claims —
each call's ``lease_expires_at``, until when the owner of a pending row holds it (``ledger.leases``);
rows claimed before keep it NULL (only a same-host owner's death frees them, as before). Version 9:
budget reservations — each run's ``reserved_usd`` (what its calls in flight may cost at most; see
``agent_relay.reserve``). Version 10: multi-agent sagas and keys
across runs — each run's ``unwind_with_parent`` and an index on ``parent_run_id`` (a failing parent finds
its children); the ``tool_call_keys`` table (one row per global idempotency key, with its holder, output
and expiry). Version 11: ``tool_calls`` loses its index on ``status`` alone (``ix_tool_calls_status``):
no query of the README, the CLI or the library filters on it without ``run_id`` (the unique key serves
those), every outcome rewrote it (about 15 µs of a 170 µs call on SQLite; on PostgreSQL no outcome's
``UPDATE`` could be a HOT update), and PostgreSQL's planner scanned it for the outcome's ``UPDATE``
instead of the primary key when its statistics saw few pending rows.

The trigger and views (``derived``) are not steps: every upgrade drops them before its steps change the
tables, and its last step makes the current ones. To add a version: bump ``SCHEMA_VERSION``, write the
step, and add it to ``STEPS``.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import LedgerError
from .schema import agent_runs, key_secrets, tool_call_attempts, tool_call_keys, tool_calls
from .secrets import ensure_secret

# Columns each version added, by table: the DDL of a step, and what a test drops to build the old schema.
ADDED_COLUMNS: dict[int, list[tuple[sa.Table, str]]] = {
    11: [],
    10: [(agent_runs, "unwind_with_parent")],
    9: [(agent_runs, "reserved_usd")],
    8: [(tool_calls, "lease_expires_at")],
    7: [(tool_calls, "decided_by"), (tool_calls, "decided_at"), (tool_calls, "decision_note")],
    6: [(agent_runs, "cancel_requested_at"), (agent_runs, "cancel_reason")],
    5: [(agent_runs, "key_version"), (agent_runs, "key_id")],
    4: [],
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


# Tables each version added, and foreign keys it gave ON DELETE CASCADE (table, constraint name).
ADDED_TABLES: dict[int, list[sa.Table]] = {4: [tool_call_attempts], 5: [key_secrets], 10: [tool_call_keys]}
# Indexes each version added on existing tables.
ADDED_INDEXES: dict[int, list[sa.Index]] = {
    10: [next(i for i in agent_runs.indexes if i.name == "ix_agent_runs_parent_run_id")]
}
CASCADED: dict[int, list[tuple[sa.Table, str]]] = {4: [(tool_calls, "fk_tool_calls_run")]}


def later_columns(table: sa.Table, version: int) -> set[str]:
    """The columns of ``table`` that versions after ``version`` added (a step must not make them: the
    step that adds them comes later)."""
    return {name for v, added in ADDED_COLUMNS.items() if v > version for t, name in added if t is table}


def rebuild_sqlite_table(conn: Connection, table: sa.Table, version: int, ddl: str | None = None) -> None:
    """Make a SQLite table again as ``ddl`` declares it (by default, as the schema of ``version`` does),
    keeping every row: SQLite cannot alter a constraint, so a new table is filled from the old one, which
    is dropped, and the new one renamed; then its indexes are made."""
    temporary = f"{table.name}__rebuilt"
    ddl = ddl or str(sa.schema.CreateTable(table).compile(dialect=conn.dialect))
    later = later_columns(table, version)
    # (CreateTable writes one column per line, constraints after them: leaving a line out keeps it valid)
    ddl = "\n".join(line for line in ddl.splitlines() if line.strip().split(" ", 1)[0] not in later)
    head = f"CREATE TABLE {table.name} ("
    assert ddl.strip().startswith(head), ddl
    conn.exec_driver_sql(ddl.strip().replace(head, f"CREATE TABLE {temporary} (", 1))
    names = ", ".join(c.name for c in table.c if c.name not in later)
    conn.exec_driver_sql(f"INSERT INTO {temporary} ({names}) SELECT {names} FROM {table.name}")
    conn.exec_driver_sql(f"DROP TABLE {table.name}")
    conn.exec_driver_sql(f"ALTER TABLE {temporary} RENAME TO {table.name}")
    for index in table.indexes:
        conn.execute(sa.schema.CreateIndex(index))


def _orphans(conn: Connection) -> None:
    """Refuse, before changing anything, calls whose run is gone (deleted by user SQL while SQLite's
    foreign keys were off): the cascading key cannot hold them, and an upgrade drops no row."""
    c = tool_calls.c
    orphans = conn.execute(
        sa.select(sa.func.count()).where(c.run_id.not_in(sa.select(agent_runs.c.run_id)))
    ).scalar_one()
    if orphans:
        database = conn.engine.url.render_as_string(hide_password=True)
        raise LedgerError(
            f"cannot upgrade the ledger at {database}: {orphans} tool_calls rows belong to no agent_runs "
            f"row (their runs were deleted); delete them (DELETE FROM tool_calls WHERE run_id NOT IN "
            f"(SELECT run_id FROM agent_runs)) and upgrade again.",
            database=database,
        )


def _attempts_and_cascade(conn: Connection) -> None:
    _orphans(conn)
    for table, name in CASCADED[4]:
        if conn.dialect.name == "sqlite":
            rebuild_sqlite_table(conn, table, 4)
            continue
        [key] = [k for k in table.foreign_keys if k.constraint is not None and k.constraint.name == name]
        parent = key.column
        conn.exec_driver_sql(
            f"ALTER TABLE {table.name} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} FOREIGN KEY "
            f"({key.parent.name}) REFERENCES {parent.table.name} ({parent.name}) ON DELETE CASCADE"
        )
    for table in ADDED_TABLES[4]:
        table.create(conn)


def _keyed_keys(conn: Connection) -> None:
    _add_columns(5)(conn)
    for table in ADDED_TABLES[5]:
        table.create(conn)
    ensure_secret(conn)


def _approvals(conn: Connection) -> None:
    _add_columns(7)(conn)
    if conn.dialect.name != "sqlite":
        conn.exec_driver_sql("ALTER TABLE tool_calls ALTER COLUMN status TYPE varchar(32)")


def _multi_run(conn: Connection) -> None:
    _add_columns(10)(conn)
    for index in ADDED_INDEXES[10]:
        index.create(conn, checkfirst=True)
    for table in ADDED_TABLES[10]:
        table.create(conn)


def _no_status_index(conn: Connection) -> None:
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_tool_calls_status")


STEPS: dict[int, Callable[[Connection], None]] = {
    2: _add_columns(2),
    3: _exact_values,
    4: _attempts_and_cascade,
    5: _keyed_keys,
    6: _add_columns(6),
    7: _approvals,
    8: _add_columns(8),
    9: _add_columns(9),
    10: _multi_run,
    11: _no_status_index,
}
"""``STEPS[v]`` upgrades a ledger from version ``v - 1`` to ``v``."""
