"""A ledger made by the previous schema version upgrades in place with every row intact."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, LedgerOptions, SchemaVersionError, tool
from agent_relay.ledger import LedgerStore, agent_runs, derived, metadata, tool_calls
from agent_relay.ledger.migrations import (
    ADDED_COLUMNS,
    ADDED_TABLES,
    CASCADED,
    JSONB_TO_JSON,
    RETYPED_ON_SQLITE,
    rebuild_sqlite_table,
    retype_sqlite_column,
)
from agent_relay.ledger.schema import SCHEMA_VERSION, schema_info
from tests.support import calls_of, run_row

T0 = dt.datetime(2026, 1, 1, 10, 0, tzinfo=dt.UTC)
V1_RUN = {
    "run_id": "run-v1",
    "name": "legacy",
    "status": "failed",
    "mode": "live",
    "input_payload": {"q": 1},
    "error_type": "RuntimeError",
    "error_message": "boom",
    "cost_usd": Decimal("0.25"),
    "input_tokens": 10,
    "output_tokens": 5,
    "trace_id": "ab" * 16,
    "started_at": T0,
}
V1_CALLS = [
    {"call_id": f"c{i}", "run_id": "run-v1", "seq": i, "tool_name": "lookup", "phase": "forward",
     "idempotency_key": key, "arguments": {"sku": f"s{i}"}, "output": f"v{i}", "status": status,
     "attempts": 1, "owner": "old-host:1", "started_at": T0}
    for i, (key, status) in enumerate([("k1", "succeeded"), ("k2", "failed")], start=1)
]  # fmt: skip


def uncascade(conn: sa.Connection, table: sa.Table, name: str) -> None:
    """Foreign key ``name`` of ``table`` as it was before version 4: without ON DELETE CASCADE."""
    if conn.dialect.name == "sqlite":
        ddl = str(sa.schema.CreateTable(table).compile(dialect=conn.dialect))
        rebuild_sqlite_table(conn, table, 3, ddl.replace(" ON DELETE CASCADE", ""))
        return
    [key] = [k for k in table.foreign_keys if k.constraint is not None and k.constraint.name == name]
    conn.exec_driver_sql(
        f"ALTER TABLE {table.name} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} FOREIGN KEY "
        f"({key.parent.name}) REFERENCES {key.column.table.name} ({key.column.name})"
    )


def build_old_schema(conn: sa.Connection, old: int) -> None:
    """Version ``old``'s schema: today's tables without what later versions added, their columns of the
    types they had then (on SQLite: JSON and money of NUMERIC affinity)."""
    metadata.create_all(conn)
    derived.drop(conn)
    for version in range(SCHEMA_VERSION, old, -1):
        for table in ADDED_TABLES.get(version, []):
            table.drop(conn)
        for table, name in CASCADED.get(version, []):
            uncascade(conn, table, name)
        for table, column in ADDED_COLUMNS[version]:
            conn.exec_driver_sql(f"ALTER TABLE {table.name} DROP COLUMN {column}")
        if conn.dialect.name == "sqlite":
            for table, column, declared in RETYPED_ON_SQLITE.get(version, []):
                retype_sqlite_column(conn, table, column, declared)
        else:
            for table, column in JSONB_TO_JSON.get(version, []):
                conn.exec_driver_sql(f"ALTER TABLE {table.name} ALTER COLUMN {column} TYPE jsonb")
    conn.execute(schema_info.insert().values(id=1, version=old, created_at=T0))


def build_v1_ledger(url: str) -> None:
    """Version 1's schema, filled with rows that name only version-1 columns."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        build_old_schema(conn, 1)
        conn.execute(agent_runs.insert().values(**V1_RUN))
        for call in V1_CALLS:
            conn.execute(tool_calls.insert().values(**call))
    engine.dispose()


def test_previous_version_is_refused_with_the_way_to_upgrade(database_url: str) -> None:
    build_v1_ledger(database_url)
    with pytest.raises(SchemaVersionError, match="agent-relay --db <url> db upgrade") as caught:
        AgentRuntime(database_url)
    assert (caught.value.found, caught.value.expected) == (1, SCHEMA_VERSION)


def test_upgrade_keeps_every_row_and_the_run_can_be_resumed(database_url: str) -> None:
    build_v1_ledger(database_url)
    store = LedgerStore(database_url)
    assert store.upgrade() == (1, SCHEMA_VERSION)
    assert store.upgrade() == (SCHEMA_VERSION, SCHEMA_VERSION)  # twice is a no-op
    store.dispose()

    rt = AgentRuntime(database_url)
    run = run_row(rt, "run-v1")
    assert (run["name"], run["status"], run["error_message"], run["input_payload"]) == (
        "legacy",
        "failed",
        "boom",
        {"q": 1},
    )
    assert (float(run["cost_usd"]), run["input_tokens"], run["cost_unknown"]) == (0.25, 10, False)
    rows = calls_of(rt, "run-v1")
    assert [(r["call_id"], r["status"], r["output"], r["origin"], r["cost_unknown"]) for r in rows] == [
        ("c1", "succeeded", "v1", "live", False),
        ("c2", "failed", "v2", "live", False),
    ]
    rt.shutdown()


def test_upgrade_on_open_when_asked(database_url: str) -> None:
    build_v1_ledger(database_url)
    rt = AgentRuntime(database_url, ledger_options=LedgerOptions(upgrade=True))
    ran = []

    @tool(rt)
    def lookup(sku: str) -> str:
        ran.append(sku)
        return sku

    with rt.agent_session(name="after-upgrade") as session:
        lookup("x")
    assert ran == ["x"] and calls_of(rt, session.run_id)[0]["origin"] == "live"
    assert len(calls_of(rt, "run-v1")) == 2
    rt.shutdown()


def test_a_newer_ledger_is_refused(database_url: str) -> None:
    AgentRuntime(database_url).shutdown()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(schema_info.update().values(version=SCHEMA_VERSION + 1))
    engine.dispose()
    store = LedgerStore(database_url)
    with pytest.raises(SchemaVersionError, match="upgrade agent-relay"):
        store.upgrade()
    store.dispose()


def test_version_3_ledger_of_100_000_calls_upgrades_with_every_row(database_url: str) -> None:
    """Version 4 rebuilds ``tool_calls`` on SQLite (a constraint cannot be altered there) and alters its
    foreign key on PostgreSQL: every row comes through, and the ledger then cascades and keeps attempts."""
    engine = sa.create_engine(database_url)
    runs = [
        {"run_id": f"run-{r:04d}", "name": "bulk", "status": "succeeded", "mode": "live", "started_at": T0}
        for r in range(1_000)
    ]
    calls = [
        {"call_id": f"c{r:04d}{i:03d}", "run_id": f"run-{r:04d}", "seq": i, "tool_name": f"tool{i % 7}",
         "phase": "forward", "idempotency_key": f"k{i}", "arguments": {"i": i, "f": 1.5},
         "output": [r, i], "status": "failed" if i == 99 else "succeeded", "attempts": 1,
         "cost_usd": Decimal("0.0000012345") * i, "started_at": T0 + dt.timedelta(seconds=i)}
        for r in range(1_000)
        for i in range(100)
    ]  # fmt: skip
    with engine.begin() as conn:
        build_old_schema(conn, 3)
        conn.execute(agent_runs.insert(), runs)
        conn.execute(tool_calls.insert(), calls)
    engine.dispose()

    store = LedgerStore(database_url)
    assert store.upgrade() == (3, SCHEMA_VERSION)
    store.dispose()
    rt = AgentRuntime(database_url)
    with rt.ledger.engine.connect() as conn:
        count = sa.select(sa.func.count())
        assert conn.execute(count.select_from(tool_calls)).scalar_one() == 100_000
        assert conn.execute(count.select_from(agent_runs)).scalar_one() == 1_000
        keys = sa.inspect(conn).get_foreign_keys("tool_calls")
        assert [(k["name"], k["options"].get("ondelete")) for k in keys] == [("fk_tool_calls_run", "CASCADE")]
    last = calls_of(rt, "run-0999")[-1]
    assert (last["call_id"], last["status"], last["output"], last["arguments"]) == (
        "c0999099", "failed", [999, 99], {"i": 99, "f": 1.5},
    )  # fmt: skip
    assert last["cost_usd"] == Decimal("0.0001222155")

    # the upgraded ledger keeps the attempt a new one replaces, and deleting a run deletes its calls
    with rt.ledger.engine.begin() as conn:
        conn.execute(
            tool_calls.update()
            .where(tool_calls.c.call_id == "c0999099")
            .values(attempts=tool_calls.c.attempts + 1, status="succeeded")
        )
        kept = conn.exec_driver_sql(
            "SELECT call_id, attempt, status, latest FROM call_attempts WHERE call_id = 'c0999099' "
            "ORDER BY attempt"
        ).all()
        conn.execute(agent_runs.delete().where(agent_runs.c.run_id == "run-0999"))
        left = conn.execute(count.select_from(tool_calls)).scalar_one()
    assert [tuple(row) for row in kept] == [
        ("c0999099", 1, "failed", False),
        ("c0999099", 2, "succeeded", True),
    ]
    assert left == 99_900
    rt.shutdown()
