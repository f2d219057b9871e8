"""What reaches spans and metrics: opt-in redacted content, the story of a run as events, metrics."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from agent_relay import AgentRuntime, BudgetExceededError, tool
from agent_relay import semconv as sc
from agent_relay.content import ContentPolicy
from agent_relay.testing import SpanCapture, capture_spans
from tests.support import calls_of


@pytest.fixture
def content_runtime(database_url: str) -> Iterator[AgentRuntime]:
    rt = AgentRuntime(
        database_url,
        content=ContentPolicy(capture=True, redact=("password", "card.number"), attribute_limit=200),
    )
    yield rt
    rt.shutdown()


def test_content_is_off_by_default(runtime: AgentRuntime, spans: SpanCapture) -> None:
    @tool(runtime)
    def login(user: str, password: str) -> str:
        return "token"

    with runtime.agent_session(name="s"):
        login("ada", "hunter2")
    (span,) = spans.tool_spans()
    assert sc.GEN_AI_TOOL_CALL_ARGUMENTS not in span.attributes
    assert sc.GEN_AI_TOOL_CALL_RESULT not in span.attributes


def test_captured_content_is_redacted_and_truncated_but_the_ledger_keeps_it_whole(
    content_runtime: AgentRuntime,
) -> None:
    spans = capture_spans(content_runtime)

    @tool(content_runtime)
    def pay(user: str, password: str, card: dict, note: str = "") -> dict:
        return {"ok": True, "card": {"number": card["number"], "brand": "visa"}, "echo": note}

    with content_runtime.agent_session(name="s") as session:
        pay("ada", "hunter2", {"number": "4242424242424242", "cvc": "123"})
        pay("bo", "pw", {"number": "1"}, note="n" * 1000)
    first, second = spans.tool_spans()
    args = json.loads(first.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS])
    assert args == {
        "user": "ada",
        "password": "[REDACTED]",
        "card": {"number": "[REDACTED]", "cvc": "123"},
        "note": "",
    }
    result = json.loads(first.attributes[sc.GEN_AI_TOOL_CALL_RESULT])
    assert result["card"] == {"number": "[REDACTED]", "brand": "visa"}
    long_args = second.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS]
    assert len(long_args) <= 200 and json.loads(long_args).endswith("...[truncated]")
    assert "hunter2" not in "".join(str(v) for s in spans.spans() for v in s.attributes.values())
    row = calls_of(content_runtime, session.run_id)[0]
    assert row["arguments"]["password"] == "hunter2" and row["output"]["card"]["number"] == "4242424242424242"


def test_per_tool_capture_and_redaction_and_ledger_redaction(database_url: str) -> None:
    rt = AgentRuntime(database_url, content=ContentPolicy(redact_ledger=True, redact=("secret",)))
    spans = capture_spans(rt)

    @tool(rt, capture_content=True, redact=("api_key",))
    def call_api(api_key: str, secret: str, q: str) -> str:
        return q

    @tool(rt)
    def quiet(secret: str) -> None: ...

    with rt.agent_session(name="s") as session:
        call_api("k-123", "s-456", "hello")
        quiet("s-789")
    loud, silent = spans.tool_spans()
    assert json.loads(loud.attributes[sc.GEN_AI_TOOL_CALL_ARGUMENTS]) == {
        "api_key": "[REDACTED]",
        "secret": "[REDACTED]",
        "q": "hello",
    }
    assert sc.GEN_AI_TOOL_CALL_ARGUMENTS not in silent.attributes
    rows = calls_of(rt, session.run_id)
    assert rows[0]["arguments"] == {"api_key": "[REDACTED]", "secret": "[REDACTED]", "q": "hello"}
    assert rows[1]["arguments"] == {"secret": "[REDACTED]"}
    rt.shutdown()


def test_the_story_of_a_run_reads_in_span_events(runtime: AgentRuntime, spans: SpanCapture) -> None:
    @tool(runtime, compensation="undo", cost=lambda result: 0.6)  # (known after: act(2) passes the limit)
    def act(x: int) -> int:
        return x

    @tool(runtime)
    def undo(x: int) -> None: ...

    with pytest.raises(BudgetExceededError), runtime.agent_session(name="story", budget_limit=1) as source:
        act(1)
        act(1)
        act(2)
    events = {e.name for s in spans.spans() for e in s.events}
    assert {sc.EVENT_DEDUPLICATED, sc.EVENT_COMPENSATION, sc.EVENT_BUDGET_EXCEEDED} <= events
    comp = next(s for s in spans.tool_spans() if s.attributes[sc.TOOL_PHASE] == "compensation")
    assert comp.attributes[sc.FORWARD_TOOL] == "act" and comp.attributes[sc.FORWARD_SEQ] >= 1
    spans.clear()
    with (
        pytest.raises(BudgetExceededError),
        runtime.agent_session(name="story", budget_limit=1, replay=True, replay_run_id=source.run_id),
    ):
        act(1)
        act(2)
    replayed = [e for s in spans.tool_spans() for e in s.events if e.name == sc.EVENT_REPLAYED]
    assert len(replayed) == 2 and replayed[0].attributes[sc.REPLAY_OF] == source.run_id


def _points(reader: InMemoryMetricReader) -> dict[str, list]:
    data = reader.get_metrics_data()
    out: dict[str, list] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                out.setdefault(metric.name, []).extend(metric.data.data_points)
    return out


def test_metrics_count_calls_tokens_cost_and_runs(database_url: str) -> None:
    reader = InMemoryMetricReader()
    rt = AgentRuntime(database_url, metric_readers=[reader])

    @tool(rt, cost=0.25)
    def search(q: str) -> str:
        if q == "bad":
            raise ValueError("bad query")
        return q

    with rt.agent_session(name="metered") as session:
        search("a")
        search("a")
        with pytest.raises(ValueError):
            search("bad")
        session.record_usage("gpt-4o", input_tokens=1000, output_tokens=200)
    points = _points(reader)
    calls = {
        (p.attributes[sc.CALL_STATUS], p.attributes[sc.CALL_ORIGIN]): p.value
        for p in points["agent_relay.tool.calls"]
    }
    assert calls == {("succeeded", "live"): 1, ("succeeded", "deduplicated"): 1, ("failed", "live"): 1}
    assert sum(p.count for p in points["agent_relay.tool.duration"]) == 2
    tokens = {p.attributes[sc.GEN_AI_TOKEN_TYPE]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": 1000, "output": 200}
    # 0.25 for the one live search, 1000 * 2.5e-6 + 200 * 10e-6 = 0.0045 for the model call
    assert round(sum(p.value for p in points["agent_relay.cost.usd"]), 6) == 0.2545
    (run,) = points["agent_relay.runs"]
    assert (run.attributes[sc.RUN_STATUS], run.value) == ("succeeded", 1)
    every = [p for points_of_one in points.values() for p in points_of_one]
    assert {p.attributes[sc.GEN_AI_AGENT_NAME] for p in every} == {"metered"}  # the dashboard's $agent
    rt.shutdown()
