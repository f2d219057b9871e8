"""Reading the ledger: every attempt of a retried call is kept, the shipped views answer the everyday
questions (failures including retried ones, live spend, runs awaiting action) with exact money, and
``agent_relay.query.LedgerReader`` gives the same answers as typed values, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, LedgerError, SchemaVersionError, UnknownRunError, tool
from agent_relay.ledger.records import CallRecord
from agent_relay.ledger.schema import schema_info
from agent_relay.query import Attempt, Awaiting, LedgerReader, Spend
from tests.support import dead_owner


def _spending_run(runtime: AgentRuntime) -> tuple[str, str]:
    """A run whose ``flaky`` call fails once (having spent 0.1) and then succeeds (0.1 again), and whose
    ``cheap`` call spends 0.7; then a replay of it, which copies those costs. (run id, replay's run id)"""
    tries: list[int] = []

    @tool(runtime)
    def flaky(n: int) -> int:
        tries.append(n)
        session.record_usage("model-a", 10, 1, cost_usd=Decimal("0.1"))
        if len(tries) == 1:
            raise TimeoutError("upstream took too long")
        return n

    @tool(runtime)
    def cheap(n: int) -> int:
        session.record_usage("model-b", 5, 5, cost_usd=Decimal("0.7"))
        return n

    with runtime.agent_session(name="spender") as session:
        with pytest.raises(TimeoutError):
            flaky(1)
        assert flaky(1) == 1 and cheap(2) == 2
    with runtime.agent_session(name="spender", replay=True, replay_run_id=session.run_id) as replay:
        assert flaky(1) == 1 and cheap(2) == 2
    assert tries == [1, 1]  # the replay ran no body
    return session.run_id, replay.run_id


def test_a_retried_call_keeps_its_failed_attempt(runtime: AgentRuntime) -> None:
    run_id, _ = _spending_run(runtime)
    with LedgerReader(runtime.ledger) as ledger:
        flaky, cheap = ledger.calls(run_id)
    assert (flaky.tool_name, flaky.status, flaky.attempts, flaky.output) == ("flaky", "succeeded", 2, 1)
    first, second = flaky.history
    assert (first.attempt, first.status, first.latest, first.error_type, first.error_message) == (
        1, "failed", False, "TimeoutError", "upstream took too long",
    )  # fmt: skip
    assert (first.cost_usd, first.input_tokens, first.model) == (Decimal("0.1"), 10, "model-a")
    assert first.ended_at is not None and first.started_at <= first.ended_at <= second.started_at
    assert first.started_at.tzinfo is dt.UTC and first.owner == second.owner is not None
    assert (second.attempt, second.status, second.latest, second.error_type) == (2, "succeeded", True, None)
    assert first.trace_id == second.trace_id and first.span_id != second.span_id  # one trace, two spans
    assert [(a.attempt, a.status) for a in cheap.history] == [(1, "succeeded")]


def test_failures_include_the_retried_ones_but_not_a_replays_copies(runtime: AgentRuntime) -> None:
    run_id, _ = _spending_run(runtime)
    with LedgerReader(runtime.ledger) as ledger:
        [failure] = ledger.failures()
        assert ledger.failures(tool="cheap") == []
        assert ledger.failures(since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == []
    assert isinstance(failure, Attempt)
    assert (failure.run_id, failure.tool_name, failure.attempt, failure.latest) == (run_id, "flaky", 1, False)
    with runtime.ledger.engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT run_name, tool_name, attempt, error_type FROM call_failures"
        ).all()
    assert [tuple(r) for r in rows] == [("spender", "flaky", 1, "TimeoutError")]


def test_live_spend_counts_every_attempt_once_and_exactly(runtime: AgentRuntime) -> None:
    run_id, replay_id = _spending_run(runtime)
    today = dt.datetime.now(dt.UTC).date()
    with LedgerReader(runtime.ledger) as ledger:
        by_model = ledger.spend(by="model")
        by_day = ledger.spend(by="day")
        by_run = ledger.spend(by="run")
        everything = ledger.spend(by="tool", live_only=False)
        run, replay = ledger.run(run_id), ledger.run(replay_id)
        assert ledger.live_cost(run_id) == run.cost_usd == Decimal("0.9")
        assert replay.cost_usd == Decimal("0.8")  # what it served, counted against its budget
        assert ledger.live_cost(replay_id) == 0  # ... but spent nothing itself
        assert ledger.spend(until=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)) == []
    assert by_model == [
        Spend("model-a", Decimal("0.2"), False, 20, 2, 2),  # the failed attempt spent too
        Spend("model-b", Decimal("0.7"), False, 5, 5, 1),
    ]
    assert by_day == [Spend(today, Decimal("0.9"), False, 25, 7, 3)]  # 0.1 + 0.1 + 0.7, not 0.8999...
    assert by_run == [Spend(run_id, Decimal("0.9"), False, 25, 7, 3)]  # the replay copied, spent nothing
    assert [(s.key, s.cost_usd, s.attempts) for s in everything] == [
        ("cheap", Decimal("1.4"), 2),
        ("flaky", Decimal("0.3"), 3),
    ]
    with runtime.ledger.engine.connect() as conn:
        daily = conn.exec_driver_sql(
            "SELECT day, tool_name, model, cost_usd, input_tokens, attempts FROM live_spend_daily "
            "ORDER BY tool_name"
        ).all()
        total = conn.exec_driver_sql("SELECT count(*) FROM live_spend").scalar_one()
    # plain SQL sees exact amounts too: NUMERIC on PostgreSQL, decimal text on SQLite
    assert [(str(r[0]), r[1], r[2], Decimal(str(r[3])), r[4], r[5]) for r in daily] == [
        (str(today), "cheap", "model-b", Decimal("0.7"), 5, 1),
        (str(today), "flaky", "model-a", Decimal("0.2"), 20, 2),
    ]
    assert total == 3


def _stopped_run(runtime: AgentRuntime) -> str:
    """A run stopped in doubt: its status ``in_doubt``, a call left pending by a process that is gone."""
    run_id = str(uuid.uuid4())
    runtime.ledger.insert_run(
        run_id=run_id, name="wire", status="in_doubt", mode="live", started_at=dt.datetime.now(dt.UTC)
    )
    runtime.ledger.calls.claim(
        CallRecord(
            run_id=run_id, call_id=uuid.uuid4().hex, seq=1, tool_name="wire", phase="forward",
            idempotency_key="k", arguments={"amount": 10}, owner=dead_owner(), started_ns=time.time_ns(),
        )
    )  # fmt: skip
    return run_id


def test_runs_awaiting_action_and_run_filters(runtime: AgentRuntime) -> None:
    run_id, replay_id = _spending_run(runtime)
    stopped = _stopped_run(runtime)
    with runtime.agent_session(name="child-parent") as parent, runtime.agent_session(name="child") as child:
        pass
    with LedgerReader(runtime.ledger) as ledger:
        [waiting] = ledger.awaiting_action()
        assert isinstance(waiting, Awaiting)
        assert (waiting.run_id, waiting.status, waiting.pending_calls) == (stopped, "in_doubt", 1)
        assert [r.run_id for r in ledger.runs(mode="replay")] == [replay_id]
        assert [r.run_id for r in ledger.runs(name="spender", status="succeeded", mode="live")] == [run_id]
        assert [r.run_id for r in ledger.runs(parent=parent.run_id)] == [child.run_id]
        assert [r.run_id for r in ledger.runs(status=["in_doubt", "failed"])] == [stopped]
        assert {r.run_id for r in ledger.runs(limit=2)} == {parent.run_id, child.run_id}  # newest first
        assert ledger.run(run_id).calls == 2 and ledger.resolve(run_id[:8]) == run_id
        cut = ledger.run(replay_id).started_at
        assert {r.run_id for r in ledger.runs(until=cut)} == {run_id}
        with pytest.raises(UnknownRunError):
            ledger.run("no-such-run")
        with pytest.raises(ValueError, match=r"spend\(by=...\) must be one of"):
            ledger.spend(by="week")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="since must be a datetime"):
            ledger.runs(since="2026-01-01")  # type: ignore[arg-type]
    with runtime.ledger.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT run_id, pending_calls FROM runs_awaiting_action").all()
    assert [tuple(r) for r in rows] == [(stopped, 1)]


def test_the_reader_only_reads(tmp_path: Path, database_url: str) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(LedgerError, match="the file does not exist"):
        LedgerReader(f"sqlite:///{missing}")
    assert not missing.exists()  # and none was made
    AgentRuntime(database_url).shutdown()
    with LedgerReader(database_url) as ledger:
        assert ledger.runs() == [] and ledger.spend() == [] and ledger.awaiting_action() == []
    public = {name for name in dir(LedgerReader) if not name.startswith("_")}
    assert public == {
        "attempts", "awaiting_action", "calls", "close", "count_runs", "database", "failures", "iter_runs",
        "live_cost", "resolve", "run", "runs", "spend",
    }  # fmt: skip
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(schema_info.update().values(version=1))
    engine.dispose()
    with pytest.raises(SchemaVersionError):
        LedgerReader(database_url)


def test_streaming_runs_does_not_hold_up_calls_recorded_meanwhile(runtime: AgentRuntime) -> None:
    """``iter_runs`` on the runtime's own store: between two runs it hands out, another thread records a
    call (on SQLite the store serialises writes under a lock the stream must not keep)."""

    @tool(runtime)
    def note(n: int) -> int:
        return n

    for n in range(3):
        with runtime.agent_session(name="stream"):
            note(n)
    seen = []
    with LedgerReader(runtime.ledger) as ledger:
        for run, calls in ledger.iter_runs(batch=1):
            seen.append((run.name, run.calls, [c.output for c in calls]))
            if len(seen) == 1:
                worker = threading.Thread(target=lambda: _record_in_a_session(runtime, note))
                worker.start()
                worker.join()  # (would wait forever if the stream held the store's lock)
    # the stream reads one snapshot, taken before the other thread's run
    assert seen == [("stream", 1, [0]), ("stream", 1, [1]), ("stream", 1, [2])]
    assert [r.name for r in LedgerReader(runtime.ledger).runs(name="meanwhile")] == ["meanwhile"]


def _record_in_a_session(runtime: AgentRuntime, note: Any) -> None:
    with runtime.agent_session(name="meanwhile"):
        note(7)
