"""Bad set-up and a ledger that cannot be written: clear errors, before side effects, never silent."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from agent_relay import (
    AgentRuntime,
    ConfigurationError,
    DuplicateToolError,
    LedgerError,
    LedgerOptions,
    RuntimeClosedError,
    SchemaVersionError,
    SessionStateError,
    tool,
)
from agent_relay.ledger import LedgerStore
from agent_relay.ledger.writer import ServedRows
from agent_relay.testing import capture_spans
from tests.support import calls_of, run_row


def test_duplicate_tool_name_is_a_clear_error(runtime: AgentRuntime) -> None:
    @tool(runtime, name="send")
    def send_email(to: str) -> None: ...

    with pytest.raises(DuplicateToolError, match="'send' is already registered") as caught:

        @tool(runtime, name="send")
        def send_sms(to: str) -> None: ...

    assert isinstance(caught.value, ValueError)
    assert "send_email" in str(caught.value) and "send_sms" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": ""}, "non-empty string"),
        ({"compensation": 3}, "must name a tool"),
        ({"cost": -1}, ">= 0"),
        ({"cost": "cheap"}, "number of USD"),
    ],
)
def test_bad_tool_options_are_refused_at_decoration(
    runtime: AgentRuntime, options: dict, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        tool(runtime, **options)


def test_tool_without_runtime_says_how_to_use_it() -> None:
    with pytest.raises(ConfigurationError, match=r"@tool\(runtime"):

        @tool  # type: ignore[arg-type]
        def f() -> None: ...


def test_session_cannot_be_entered_twice_or_written_after_exit(runtime: AgentRuntime) -> None:
    session = runtime.agent_session(name="once")
    with session:
        pass
    with pytest.raises(SessionStateError, match="already entered"), session:
        pass
    with pytest.raises(SessionStateError, match="inside the session"):
        session.set_output({"late": True})


def test_runtime_after_shutdown_refuses_new_sessions(database_url: str) -> None:
    rt = AgentRuntime(database_url)
    rt.shutdown()
    rt.shutdown()  # idempotent
    with pytest.raises(RuntimeClosedError, match="shut down"):
        rt.agent_session(name="late")


def test_ledger_of_another_schema_version_is_refused(database_url: str) -> None:
    AgentRuntime(database_url).shutdown()
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE agent_relay_schema SET version = 99")
    engine.dispose()
    with pytest.raises(SchemaVersionError, match="schema version 99") as caught:
        AgentRuntime(database_url)
    assert caught.value.found == 99 and "upgrade agent-relay" in str(caught.value)


def test_read_only_ledger_fails_the_session_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    AgentRuntime(f"sqlite:///{path}").shutdown()
    # SQLite's own read-only mode: the tests run as root, for whom file permissions do not bite.
    rt = AgentRuntime(f"sqlite:///file:{path}?mode=ro&uri=true")
    ran = []

    @tool(rt)
    def send(to: str) -> None:
        ran.append(to)

    with pytest.raises(LedgerError, match="read-only") as caught, rt.agent_session(name="ro"):
        send("x")
    assert ran == []
    assert str(path) in caught.value.database
    rt.shutdown()


def test_locked_ledger_fails_the_call_before_the_tool_runs(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    rt = AgentRuntime(f"sqlite:///{path}", ledger_options=LedgerOptions(busy_timeout_s=0.2))
    ran = []

    @tool(rt)
    def charge(card: str) -> str:
        ran.append(card)
        return "ok"

    with rt.agent_session(name="locked") as session:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        with pytest.raises(LedgerError, match="could not claim a call of tool 'charge'") as caught:
            charge("4242")
        assert ran == []
        assert caught.value.tool_name == "charge" and caught.value.run_id == session.run_id
        blocker.execute("ROLLBACK")
        blocker.close()
        assert charge("4242") == "ok"  # the ledger is writable again: the same call now runs
    assert ran == ["4242"]
    assert [r["status"] for r in calls_of(rt, session.run_id)] == ["succeeded"]
    rt.shutdown()


@pytest.mark.parametrize(("durability", "left"), [("strict", ["pending"]), ("outcome", [])])
def test_ledger_failure_after_the_tool_ran_is_raised_not_swallowed(
    tmp_path: Path, durability: str, left: list[str]
) -> None:
    path = tmp_path / "ledger.db"
    rt = AgentRuntime(
        f"sqlite:///{path}", durability=durability, ledger_options=LedgerOptions(busy_timeout_s=0.2)
    )
    blocker = sqlite3.connect(path, isolation_level=None)

    @tool(rt)
    def ship(order: str) -> str:
        blocker.execute("BEGIN IMMEDIATE")  # the ledger becomes unwritable while the tool runs
        return "shipped"

    with rt.agent_session(name="ship") as session:
        with pytest.raises(LedgerError, match="record the outcome of tool 'ship'"):
            ship("o-1")
        blocker.execute("ROLLBACK")
        # strict: the call is left pending, its outcome unknown to the ledger, which is the truth;
        # outcome: nothing was recorded (a resume runs it again)
        assert [r["status"] for r in calls_of(rt, session.run_id)] == left
    assert run_row(rt, session.run_id)["status"] == "succeeded"
    rt.shutdown()


def test_unopenable_ledger_names_the_database() -> None:
    with pytest.raises(LedgerError, match=r"/no/such/dir/ledger\.db") as caught:
        AgentRuntime("sqlite:////no/such/dir/ledger.db")
    assert "writable" in str(caught.value)


def test_password_is_masked_in_errors() -> None:
    store_url = "postgresql+nosuchdriver://user:s3cret@127.0.0.1/db"
    with pytest.raises(LedgerError) as caught:
        LedgerStore(store_url)
    assert "s3cret" not in str(caught.value) and "***" in caught.value.database


def test_calls_are_recorded_when_the_tracer_samples_nothing(database_url: str) -> None:
    provider = TracerProvider(sampler=ALWAYS_OFF)
    rt = AgentRuntime(database_url, tracer_provider=provider)
    spans = capture_spans(rt)

    @tool(rt)
    def act(x: int) -> int:
        return x + 1

    with rt.agent_session(name="unsampled") as session:
        assert act(1) == 2
        assert act(1) == 2
    (row,) = calls_of(rt, session.run_id)
    assert row["status"] == "succeeded" and row["output"] == 2 and row["ended_at"] is not None
    assert spans.spans() == ()
    rt.shutdown()


def test_users_provider_is_used_and_not_shut_down(database_url: str) -> None:
    provider = TracerProvider()
    rt = AgentRuntime(database_url, tracer_provider=provider)
    assert rt.tracer_provider is provider
    spans = capture_spans(rt)

    @tool(rt)
    def ping() -> str:
        return "pong"

    with rt.agent_session(name="mine"):
        ping()
    rt.shutdown()
    assert [s.name for s in spans.tool_spans()] == ["execute_tool ping"]
    provider.get_tracer("after").start_span("still alive").end()
    assert spans.spans()[-1].name == "still alive"


def test_a_second_runtime_on_the_same_ledger_sees_the_rows(database_url: str) -> None:
    first = AgentRuntime(database_url)

    @tool(first)
    def step() -> str:
        return "done"

    with first.agent_session(name="a") as session:
        step()
    first.shutdown()
    second = AgentRuntime(database_url)
    assert [r["output"] for r in calls_of(second, session.run_id)] == ["done"]
    second.shutdown()


def test_a_replay_batch_that_cannot_be_written_fails_the_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ServedRows, "BATCH", 2)  # batches go to the background writer
    path = tmp_path / "ledger.db"
    rt = AgentRuntime(f"sqlite:///{path}", ledger_options=LedgerOptions(busy_timeout_s=0.2))

    @tool(rt)
    def lookup(n: int) -> int:
        return n

    with rt.agent_session(name="source") as source:
        for n in range(6):
            lookup(n)
    blocker = sqlite3.connect(path, isolation_level=None)
    replay = rt.agent_session(name="source", replay=True, replay_run_id=source.run_id)
    with pytest.raises(LedgerError, match="could not record replayed calls"), replay:
        blocker.execute("BEGIN IMMEDIATE")  # the ledger is locked while the replay writes its rows
        for n in range(6):
            try:
                assert lookup(n) == n
            except LedgerError:  # an earlier batch's failure may surface at a later call already
                break
        time.sleep(0.5)  # past the writer's busy timeout: its first batch has failed by now
        blocker.execute("ROLLBACK")
    blocker.close()
    rt.shutdown()
