"""A ledger made by the previous schema version upgrades in place with every row intact."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, LedgerOptions, SchemaVersionError, tool
from agent_relay.ledger import LedgerStore, agent_runs, metadata, tool_calls
from agent_relay.ledger.migrations import (
    ADDED_COLUMNS,
    JSONB_TO_JSON,
    RETYPED_ON_SQLITE,
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


def build_v1_ledger(url: str) -> None:
    """Version 1's schema: today's tables without the columns later versions added, their columns of the
    types they had then (on SQLite: JSON and money of NUMERIC affinity), filled with rows that name only
    version-1 columns."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        metadata.create_all(conn)
        for version in range(SCHEMA_VERSION, 1, -1):
            for table, column in ADDED_COLUMNS[version]:
                conn.exec_driver_sql(f"ALTER TABLE {table.name} DROP COLUMN {column}")
            if conn.dialect.name == "sqlite":
                for table, column, declared in RETYPED_ON_SQLITE.get(version, []):
                    retype_sqlite_column(conn, table, column, declared)
            else:
                for table, column in JSONB_TO_JSON.get(version, []):
                    conn.exec_driver_sql(f"ALTER TABLE {table.name} ALTER COLUMN {column} TYPE jsonb")
        conn.execute(schema_info.insert().values(id=1, version=1, created_at=T0))
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
