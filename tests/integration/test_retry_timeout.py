"""``@tool(retry=..., timeout_s=...)`` (issue 16): every attempt recorded, retries that stop for the budget,
timeouts that cancel an async body and leave a call that may still happen in doubt."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_relay import (
    AgentRuntime,
    BudgetExceededError,
    CallInDoubtError,
    ConfigurationError,
    LedgerReader,
    Retry,
    ToolTimeoutError,
    tool,
)
from tests.support import calls_of, run_row

NOW = Retry(attempts=3, initial_delay_s=0, jitter=False)  # retries at once: nothing here waits on a clock


@pytest.fixture
def runtime(database_url: str) -> Iterator[AgentRuntime]:
    rt = AgentRuntime(database_url)
    yield rt
    rt.shutdown()


def test_a_flaky_call_is_retried_and_every_failed_attempt_is_kept(runtime: AgentRuntime) -> None:
    tries: list[int] = []

    @tool(runtime, retry=NOW)
    def fetch(sku: str) -> str:
        tries.append(len(tries) + 1)
        if len(tries) < 3:
            raise ConnectionError(f"reset by peer on try {len(tries)}")
        return f"{sku}: 3 in stock"

    with runtime.agent_session(name="shop") as session:
        assert fetch("a-1") == "a-1: 3 in stock"
    assert tries == [1, 2, 3]
    [row] = calls_of(runtime, session.run_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 3)
    with LedgerReader(runtime.ledger) as reader:
        history = reader.attempts(session.run_id)
    assert [(a.attempt, a.status, a.error_message) for a in history] == [
        (1, "failed", "reset by peer on try 1"),
        (2, "failed", "reset by peer on try 2"),
        (3, "succeeded", None),
    ]


def test_each_attempt_has_its_own_span_and_a_retry_event(tmp_path: object) -> None:
    exporter = InMemorySpanExporter()
    rt = AgentRuntime(f"sqlite:///{tmp_path}/ledger.db", span_exporters=[exporter])
    failures = iter([TimeoutError("slow upstream")])

    @tool(rt, retry=Retry(attempts=2, initial_delay_s=0.001, jitter=False))
    def fetch(sku: str) -> str:
        for error in failures:
            raise error
        return sku

    with rt.agent_session(name="shop"):
        fetch("a-1")
    rt.shutdown()
    spans = [s for s in exporter.get_finished_spans() if s.name == "execute_tool fetch"]
    assert [s.attributes["agent_relay.call.attempt"] for s in spans] == [1, 2]  # type: ignore[index]
    [event] = [e for e in spans[0].events if e.name == "agent_relay.retry"]
    assert event.attributes == {"agent_relay.call.attempt": 1, "agent_relay.retry.delay_s": 0.001}
    assert spans[0].status.status_code.name == "ERROR" and spans[1].status.status_code.name == "UNSET"


def test_only_the_named_exceptions_are_retried_and_the_last_failure_is_raised(runtime: AgentRuntime) -> None:
    calls: list[str] = []

    @tool(runtime, retry=Retry(attempts=3, initial_delay_s=0, retry_on=(ConnectionError,)))
    def charge(order: str) -> str:
        calls.append(order)
        raise ValueError("card declined") if order == "bad" else ConnectionError("reset")

    with runtime.agent_session(name="pay") as session:
        with pytest.raises(ValueError, match="card declined"):
            charge("bad")
        with pytest.raises(ConnectionError):
            charge("o-1")
    assert calls == ["bad", "o-1", "o-1", "o-1"]
    rows = {r["arguments"]["order"]: r for r in calls_of(runtime, session.run_id)}
    assert (rows["bad"]["attempts"], rows["o-1"]["attempts"]) == (1, 3)
    assert rows["o-1"]["status"] == "failed"


def test_retries_stop_when_the_budget_is_passed(runtime: AgentRuntime) -> None:
    calls = 0

    with runtime.agent_session(name="research", budget_limit=1.0) as session:

        @tool(runtime, retry=NOW)
        def search(q: str) -> str:
            nonlocal calls
            calls += 1
            session.record_usage("my-model", 10, 10, cost_usd=2.0)  # this try spent past the limit
            raise ConnectionError("reset")

        with pytest.raises(BudgetExceededError):
            search("q")
    assert calls == 1  # the retry was refused before the body ran again


def test_a_sync_call_that_times_out_is_in_doubt_until_settled(runtime: AgentRuntime) -> None:
    release = threading.Event()
    started: list[str] = []

    @tool(runtime, timeout_s=0.05)
    def wire(amount: int) -> str:
        started.append("wire")
        release.wait(30)  # (still under way when the wait for it ends)
        return "w-1"

    try:
        with (
            pytest.raises(CallInDoubtError, match=r"timed out after 0\.05 s") as caught,
            runtime.agent_session(name="pay") as session,
        ):
            wire(10)
        assert isinstance(caught.value.__cause__, ToolTimeoutError)
        assert run_row(runtime, session.run_id)["status"] == "in_doubt"  # stopped, not unwound
        [row] = calls_of(runtime, session.run_id)
        assert (row["status"], row["owner"], row["error_type"]) == (
            "pending",
            "in-doubt",
            "agent_relay.errors.ToolTimeoutError",
        )
        # resumed, it is still in doubt: nothing runs it again until a person says what happened
        with (
            pytest.raises(CallInDoubtError, match="timed out before its outcome was known"),
            runtime.agent_session(name="pay", resume_run_id=session.run_id),
        ):
            wire(10)
        assert started == ["wire"]
        runtime.settle_call(row["call_id"], "succeeded", output="w-1")
        with runtime.agent_session(name="pay", resume_run_id=session.run_id):
            assert wire(10) == "w-1"
        assert started == ["wire"]
    finally:
        release.set()


@pytest.mark.asyncio
async def test_an_async_call_that_times_out_is_cancelled_and_an_idempotent_one_is_retried(
    runtime: AgentRuntime,
) -> None:
    seen: list[str] = []

    @tool(runtime, idempotent=True, timeout_s=0.05, retry=NOW)
    async def lookup(sku: str) -> str:
        if not seen:
            seen.append("first try")
            try:
                await asyncio.Event().wait()  # never set: only the timeout ends it
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise
        return sku

    async with runtime.agent_session(name="shop") as session:
        assert await lookup("a-1") == "a-1"
    assert seen == ["first try", "cancelled"]
    [row] = calls_of(runtime, session.run_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)
    with LedgerReader(runtime.ledger) as reader:
        [first, _] = reader.attempts(session.run_id)
    assert (first.status, first.error_type) == ("failed", "agent_relay.errors.ToolTimeoutError")


@pytest.mark.asyncio
async def test_a_tools_own_timeout_error_is_an_ordinary_failure(runtime: AgentRuntime) -> None:
    @tool(runtime, timeout_s=30)
    async def fetch(url: str) -> str:
        raise TimeoutError("upstream said 504")

    async with runtime.agent_session(name="shop") as session:
        with pytest.raises(TimeoutError, match="upstream said 504"):
            await fetch("https://example.com")
    [row] = calls_of(runtime, session.run_id)
    assert (row["status"], row["error_type"]) == ("failed", "TimeoutError")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retry": "3"}, "retry=...) must be a Retry"),
        ({"retry": 0}, "attempts=...) must be an int >= 1"),
        ({"timeout_s": 0}, "timeout_s=...) must be a number > 0"),
        ({"timeout_s": "5"}, "timeout_s=...) must be a number > 0"),
    ],
)
def test_bad_retry_and_timeout_options_are_refused_when_decorating(
    runtime: AgentRuntime, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tool(runtime, **options)  # type: ignore[arg-type]


def test_bad_retry_policies_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="retry_on"):
        Retry(retry_on=("ConnectionError",))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="initial_delay_s"):
        Retry(initial_delay_s=-1)
