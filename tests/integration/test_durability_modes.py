"""Durability modes: ``strict`` commits a pending row before the body and the outcome after it;
``outcome`` commits only the outcome, in one transaction, before the call returns."""

from __future__ import annotations

import pytest

from agent_relay import AgentRuntime, ConfigurationError, calltable, current_call, tool
from agent_relay import semconv as sc
from agent_relay.run import current_run
from agent_relay.testing import capture_spans
from tests.support import calls_of


def _rows_of(runtime: AgentRuntime, run_id: str) -> list[tuple[str, str]]:
    return [(r["tool_name"], r["status"]) for r in calls_of(runtime, run_id)]


@pytest.mark.parametrize("durability", ["strict", "outcome"])
def test_the_row_a_body_sees_while_it_runs(database_url: str, durability: str) -> None:
    runtime = AgentRuntime(database_url, durability=durability)
    seen: list[list[tuple[str, str]]] = []
    try:

        @tool(runtime)
        def charge(amount: int) -> str:
            call = current_call()
            assert call is not None
            seen.append(_rows_of(runtime, call.run_id))  # read on another connection, as another process
            return f"ch-{amount}"

        with runtime.agent_session(name="checkout") as session:
            assert charge(5) == "ch-5"
            after = _rows_of(runtime, session.run_id)  # committed before charge() returned
    finally:
        runtime.shutdown()
    assert seen == ([[("charge", "pending")]] if durability == "strict" else [[]])
    assert after == [("charge", "succeeded")]


def test_outcome_rows_carry_what_strict_rows_carry(database_url: str) -> None:
    runtime = AgentRuntime(database_url)
    try:

        @tool(runtime, name="strict_send")
        def strict_send(to: str) -> dict:
            return {"id": "m1", "to": to}

        @tool(runtime, name="outcome_send", durability="outcome", cost=0.25)
        def outcome_send(to: str) -> dict:
            return {"id": "m1", "to": to}

        with runtime.agent_session(name="mail") as session:
            strict_send("a@example.com")
            outcome_send("a@example.com")
        strict_row, outcome_row = calls_of(runtime, session.run_id)
    finally:
        runtime.shutdown()
    assert outcome_row["output"] == {"id": "m1", "to": "a@example.com"}
    assert outcome_row["arguments"] == {"to": "a@example.com"}
    assert float(outcome_row["cost_usd"]) == 0.25
    assert outcome_row["seq"] == 2 and outcome_row["attempts"] == 1 and outcome_row["origin"] == "live"
    assert outcome_row["ended_at"] >= outcome_row["started_at"]
    same = ("status", "phase", "owner")
    assert {k: outcome_row[k] for k in same} == {k: strict_row[k] for k in same}
    assert len(outcome_row["trace_id"]) == 32 and len(outcome_row["span_id"]) == 16


def test_outcome_failure_is_recorded_and_a_retry_overwrites_it_counting_attempts(database_url: str) -> None:
    runtime = AgentRuntime(database_url, durability="outcome")
    attempts: list[int] = []
    try:

        @tool(runtime)
        def flaky(order: str) -> str:
            call = current_call()
            assert call is not None
            attempts.append(call.attempt)
            if len(attempts) < 3:
                raise TimeoutError("provider timed out")
            return "ok"

        with runtime.agent_session(name="retrying") as session:
            for _ in range(2):
                with pytest.raises(TimeoutError):
                    flaky("o-1")
                (row,) = calls_of(runtime, session.run_id)
                assert (row["status"], row["error_type"]) == ("failed", "TimeoutError")
            assert flaky("o-1") == "ok"
        (row,) = calls_of(runtime, session.run_id)
    finally:
        runtime.shutdown()
    assert attempts == [1, 2, 3]
    assert (row["status"], row["output"], row["attempts"], row["error_type"]) == ("succeeded", "ok", 3, None)


def test_outcome_calls_deduplicate_and_replay_like_strict_ones(database_url: str) -> None:
    runtime = AgentRuntime(database_url, durability="outcome")
    ran: list[str] = []
    try:

        @tool(runtime)
        def lookup(sku: str) -> int:
            ran.append(sku)
            return len(sku)

        with runtime.agent_session(name="stock") as source:
            assert [lookup("ab"), lookup("abc"), lookup("ab")] == [2, 3, 2]
        with runtime.agent_session(name="stock", replay=True, replay_run_id=source.run_id) as replay:
            assert [lookup("ab"), lookup("abc"), lookup("ab")] == [2, 3, 2]
        replayed = calls_of(runtime, replay.run_id)
    finally:
        runtime.shutdown()
    assert ran == ["ab", "abc"]
    assert [(r["origin"], r["output"]) for r in replayed] == [("replayed", 2), ("replayed", 3)]


def test_outcome_span_is_the_same_tool_span(database_url: str) -> None:
    runtime = AgentRuntime(database_url, durability="outcome")
    spans = capture_spans(runtime)
    try:

        @tool(runtime)
        def ping(host: str) -> str:
            return "pong"

        with runtime.agent_session(name="net") as session:
            ping("db")
        (row,) = calls_of(runtime, session.run_id)
    finally:
        runtime.shutdown()
    (span,) = spans.tool_spans()
    assert span.attributes is not None
    assert span.attributes[sc.IDEMPOTENCY_KEY] == row["idempotency_key"]
    assert span.attributes[sc.CALL_ATTEMPT] == 1
    assert span.context is not None and f"{span.context.span_id:016x}" == row["span_id"]


@pytest.mark.parametrize("bad", ["fast", "", None, "STRICT "])
def test_an_unknown_durability_is_refused_before_anything_runs(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"durability must be 'strict'.*or 'outcome'"):
        AgentRuntime("sqlite://", durability=bad)  # type: ignore[arg-type]
    runtime = AgentRuntime("sqlite://")
    try:
        with pytest.raises(ConfigurationError, match=r"@tool\(charge\): durability must be"):
            tool(runtime, name="charge", durability=bad or "x")(lambda amount: amount)
        assert "charge" not in runtime.tools
    finally:
        runtime.shutdown()


def test_durability_from_the_environment() -> None:
    runtime = AgentRuntime.from_env(
        {"AGENT_RELAY_DATABASE_URL": "sqlite://", "AGENT_RELAY_DURABILITY": "outcome"}
    )
    try:
        assert runtime.durability == "outcome"
    finally:
        runtime.shutdown()
    with pytest.raises(ConfigurationError, match="durability must be"):
        AgentRuntime.from_env({"AGENT_RELAY_DATABASE_URL": "sqlite://", "AGENT_RELAY_DURABILITY": "yolo"})


@pytest.mark.parametrize("durability", ["strict", "outcome"])
def test_a_long_session_keeps_a_bounded_index_and_serves_older_calls_from_the_ledger(
    database_url: str, durability: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(calltable, "DEDUP_INDEX_SIZE", 3)
    runtime = AgentRuntime(database_url, durability=durability)
    ran: list[int] = []
    try:

        @tool(runtime)
        def square(n: int) -> int:
            ran.append(n)
            return n * n

        with runtime.agent_session(name="long") as session:
            assert [square(n) for n in range(6)] == [0, 1, 4, 9, 16, 25]
            run = current_run()
            assert run is not None and len(run.table) == 3  # the index keeps the 3 most recent calls
            assert [square(n) for n in (0, 1, 5, 0)] == [0, 1, 25, 0]  # 0 and 1 from the ledger
        rows = calls_of(runtime, session.run_id)
    finally:
        runtime.shutdown()
    assert ran == [0, 1, 2, 3, 4, 5]  # no body ran twice
    assert [(r["output"], r["status"], r["attempts"]) for r in rows] == [
        (n * n, "succeeded", 1) for n in range(6)
    ]
