"""Smaller truths of a call's record: the key a tool forwards is scoped to its run, unpriced usage is
unknown (not free), the ledger file is private, generators are refused, OpenInference usage is charged."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agent_relay import (
    AgentRuntime,
    ConfigurationError,
    IdempotencyKeyReuseError,
    LedgerError,
    UnpricedUsageWarning,
    UnrecordedCallWarning,
    current_call,
    tool,
)
from tests.support import calls_of


def test_the_key_a_tool_forwards_is_scoped_to_its_run(runtime: AgentRuntime) -> None:
    forwarded: list[tuple[str, str]] = []

    @tool(runtime)
    def charge(order: str) -> str:
        call = current_call()
        assert call is not None
        forwarded.append((call.idempotency_key, call.external_key))
        if len(forwarded) == 3:  # the third run's first try
            raise ConnectionError("card network down")
        return "charged"

    for _ in range(2):  # two runs charging the same order
        with runtime.agent_session(name="shop"):
            charge("o-1")
    with pytest.raises(ConnectionError), runtime.agent_session(name="shop") as third:
        charge("o-1")
    with runtime.agent_session(name="shop", resume_run_id=third.run_id):
        charge("o-1")  # the retry of the third run's call
    keys = [key for key, _ in forwarded]
    external = [ext for _, ext in forwarded]
    assert len(set(keys)) == 1  # the idempotency key names the call within a run: the same in each run
    assert external[0] != external[1]  # two runs never forward the same key
    assert external[2] == external[3] and len(external[0]) == 64  # a retried call keeps its run's key


def test_unpriced_usage_is_stored_as_unknown_not_zero(runtime: AgentRuntime) -> None:
    @tool(runtime, kind="llm")
    def ask(model: str) -> dict[str, Any]:
        return {"model": model, "usage": {"prompt_tokens": 10, "completion_tokens": 5}}

    with pytest.warns(UnpricedUsageWarning), runtime.agent_session(name="ask") as session:
        ask("my-own-unpriced-model")
    (row,) = calls_of(runtime, session.run_id)
    assert (row["cost_usd"], row["cost_unknown"], row["input_tokens"]) == (None, True, 10)


def test_a_new_sqlite_ledger_is_private(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    runtime = AgentRuntime(f"sqlite:///{path}")
    try:

        @tool(runtime)
        def note(text: str) -> None:
            return None

        with runtime.agent_session(name="notes"):
            note("x")
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    finally:
        runtime.shutdown()
    assert modes["ledger.db"] == 0o600
    assert modes.get("ledger.db-wal", 0o600) == 0o600 and modes.get("ledger.db-shm", 0o600) == 0o600
    assert "ledger.db-wal" in modes  # (WAL mode: the files the ledger's rows pass through exist)


def test_generator_tools_are_refused_when_decorated(runtime: AgentRuntime) -> None:
    def numbers(n: int) -> Any:
        yield from range(n)

    async def anumbers(n: int) -> Any:
        for i in range(n):
            yield i

    for func in (numbers, anumbers):
        with pytest.raises(ConfigurationError, match="generator"):
            tool(runtime)(func)
    assert "numbers" not in runtime.tools and "anumbers" not in runtime.tools


def test_openinference_usage_is_charged_once(database_url: str) -> None:
    provider = TracerProvider()
    runtime = AgentRuntime(database_url, tracer_provider=provider)
    try:
        other = provider.get_tracer("openinference.instrumentation.openai")
        with runtime.agent_session(name="oi", budget_limit=1) as session:
            with other.start_as_current_span("ChatCompletion") as span:
                span.set_attribute("llm.model_name", "gpt-4o-mini")
                span.set_attribute("llm.token_count.prompt", 1000)
                span.set_attribute("llm.token_count.completion", 500)
            assert (session.input_tokens, session.output_tokens) == (1000, 500)
            assert session.cost_usd > 0
    finally:
        runtime.shutdown()


def test_a_caller_key_reused_with_other_arguments_after_a_failure_is_refused(runtime: AgentRuntime) -> None:
    ran: list[int] = []

    @tool(runtime, key=lambda args: args["order"])
    def charge(order: str, amount: int) -> str:
        ran.append(amount)
        if len(ran) == 1:
            raise ConnectionError("card network down")
        return "charged"

    with runtime.agent_session(name="shop") as session:
        with pytest.raises(ConnectionError):
            charge("o-1", 10)
        with pytest.raises(IdempotencyKeyReuseError, match="amount: 10 -> 99"):
            charge("o-1", 99)  # the same order id, another amount: not this call's retry
        assert charge("o-1", 10) == "charged"  # the retry of the same request runs
    assert ran == [10, 10]
    (row,) = calls_of(runtime, session.run_id)
    assert (row["arguments"], row["output"], row["attempts"]) == (
        {"order": "o-1", "amount": 10},
        "charged",
        2,
    )


def test_a_deleted_ledger_file_fails_the_next_call(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    runtime = AgentRuntime(f"sqlite:///{path}")
    ran: list[str] = []
    try:

        @tool(runtime)
        def send(to: str) -> str:
            ran.append(to)
            return "sent"

        with pytest.raises(LedgerError, match="deleted or replaced"), runtime.agent_session(name="mail"):
            send("a@example.com")
            for leftover in tmp_path.iterdir():
                leftover.unlink()  # the ledger is gone: a call must not report success into the void
            send("b@example.com")
    finally:
        runtime.shutdown()
    assert ran == ["a@example.com"]  # the second call's claim failed: its body never ran


class Mailer:
    def __init__(self, runtime: AgentRuntime, sent: list[str]) -> None:
        self.sent = sent
        self.connection = object()  # what a real client holds: nothing JSON can record

    def deliver(self, to: str) -> str:
        self.sent.append(to)
        return f"sent to {to}"


def test_methods_and_classmethods_can_be_tools(runtime: AgentRuntime) -> None:
    sent: list[str] = []

    class Client(Mailer):
        @tool(runtime, name="client.send")
        def send(self, to: str) -> str:
            return self.deliver(to)

        @classmethod
        @tool(runtime, name="client.ping")
        def ping(cls, host: str) -> str:
            return f"{cls.__name__} pinged {host}"

    a, b = Client(runtime, sent), Client(runtime, sent)
    with runtime.agent_session(name="mail") as session:
        assert a.send("x@example.com") == "sent to x@example.com"
        assert b.send(to="x@example.com") == "sent to x@example.com"  # the same call: served
        assert Client.ping("h") == "Client pinged h"
    assert sent == ["x@example.com"]
    rows = calls_of(runtime, session.run_id)
    assert [(r["tool_name"], r["arguments"]) for r in rows] == [
        ("client.send", {"to": "x@example.com"}),
        ("client.ping", {"host": "h"}),
    ]
    with pytest.raises(ConfigurationError, match="below @staticmethod"):
        tool(runtime)(staticmethod(lambda x: x))


def test_a_tool_called_from_a_thread_without_the_sessions_context_warns_once(runtime: AgentRuntime) -> None:
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    @tool(runtime)
    def fetch(n: int) -> int:
        return n

    with runtime.agent_session(name="pool") as session, ThreadPoolExecutor(2) as pool:
        with pytest.warns(UnrecordedCallWarning, match="copy_context") as warned:
            assert list(pool.map(fetch, [1, 2, 3])) == [1, 2, 3]  # no context: unrecorded
        assert len(warned) == 1  # once per tool, not once per call
        ctx = contextvars.copy_context()
        assert pool.submit(ctx.run, fetch, 4).result() == 4  # the session's context: recorded
    assert [r["arguments"] for r in calls_of(runtime, session.run_id)] == [{"n": 4}]
    fetch(5)  # no session open anywhere: a plain call, no warning (warnings are errors in this suite)


def test_excluded_parameters_stay_out_of_the_record_and_the_key(runtime: AgentRuntime) -> None:
    class RunContext:  # what a framework hands a tool: nothing JSON can record, and not part of the call
        def __init__(self, user: str) -> None:
            self.user = user

    seen: list[str] = []

    @tool(runtime, exclude=("ctx",))
    def lookup(ctx: RunContext, city: str) -> str:
        seen.append(ctx.user)
        return f"sunny in {city}"

    with runtime.agent_session(name="weather") as source:
        assert lookup(RunContext("ada"), "Rome") == "sunny in Rome"
        assert lookup(RunContext("bob"), city="Rome") == "sunny in Rome"  # the same call: served
    with runtime.agent_session(name="weather", replay=True, replay_run_id=source.run_id):
        assert lookup(RunContext("eve"), "Rome") == "sunny in Rome"  # replayed, no body ran
    assert seen == ["ada"]
    (row,) = calls_of(runtime, source.run_id)
    assert row["arguments"] == {"city": "Rome"}
    with pytest.raises(ConfigurationError, match="'context'"):
        tool(runtime, name="other", exclude=("context",))(lambda ctx, city: city)
