"""Budgets: exact USD, priced usage (genai-prices, or your own prices), enforcement, LLM-shaped results."""

from __future__ import annotations

import warnings
from decimal import Decimal

import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion
from openai.types.responses import Response
from opentelemetry.trace import StatusCode

from agent_relay import (
    AgentRuntime,
    BudgetExceededError,
    ModelPrice,
    UnpricedUsageError,
    UnpricedUsageWarning,
    tool,
)
from agent_relay import semconv as sc
from agent_relay.testing import SpanCapture
from tests.support import calls_of, run_row


def test_usage_priced_from_the_table_passes_the_budget(runtime: AgentRuntime, spans: SpanCapture) -> None:
    with pytest.raises(BudgetExceededError) as caught, runtime.agent_session(name="llm", budget_limit=1) as s:
        s.record_usage(model="gpt-4o", input_tokens=2_000_000, output_tokens=0)
    err = caught.value
    # gpt-4o lists $2.50 per million input tokens: 2M tokens cost $5.00
    assert err.spent == Decimal("5.00") and err.limit == Decimal(1) and err.run_id == s.run_id
    run = run_row(runtime, s.run_id)
    assert run["status"] == "failed" and run["error_type"] == "agent_relay.errors.BudgetExceededError"
    assert run["cost_usd"] == Decimal("5.00") and run["input_tokens"] == 2_000_000
    assert run["budget_limit_usd"] == Decimal(1)
    (span,) = spans.session_spans()
    assert span.attributes[sc.BUDGET_LIMIT_USD] == 1.0 and span.attributes[sc.BUDGET_SPENT_USD] == 5.0
    assert span.attributes[sc.BUDGET_EXCEEDED] is True


def test_a_cost_known_only_afterwards_lets_exactly_three_calls_run(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    ran: list[int] = []

    @tool(runtime, cost=lambda result: 0.4)  # (a function of the result: not known before the call runs)
    def search(q: int) -> int:
        ran.append(q)
        return q

    with runtime.agent_session(name="search", budget_limit=1.00) as session:
        assert search(1) == 1 and search(2) == 2
        with pytest.raises(BudgetExceededError) as caught:
            search(3)  # runs, is recorded, and passes the limit: 1.2 > 1
        with pytest.raises(BudgetExceededError):
            search(4)  # refused before it runs
    assert ran == [1, 2, 3]
    assert caught.value.spent == Decimal("1.2") and caught.value.tool_name == "search"
    rows = calls_of(runtime, session.run_id)
    assert [(r["status"], r["cost_usd"]) for r in rows] == [("succeeded", Decimal("0.4"))] * 3
    refused = spans.tool_spans()[-1]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes[sc.ERROR_TYPE] == "agent_relay.errors.BudgetExceededError"


def test_spending_exactly_the_limit_is_allowed(runtime: AgentRuntime) -> None:
    @tool(runtime, cost=lambda result: result["cost"])
    def work(cost: str) -> dict:
        return {"cost": Decimal(cost)}

    with runtime.agent_session(name="exact", budget_limit="0.3") as session:
        work("0.1")
        work("0.2")  # 0.1 + 0.2 is exactly 0.3 in decimal arithmetic, not 0.30000000000000004
    assert session.cost_usd == Decimal("0.3")
    assert run_row(runtime, session.run_id)["status"] == "succeeded"


def test_unpriced_model_under_a_budget_is_an_error(runtime: AgentRuntime) -> None:
    with (
        pytest.raises(UnpricedUsageError, match="'acme-llm-7'") as caught,
        runtime.agent_session(name="u", budget_limit=5) as session,
    ):
        session.record_usage(model="acme-llm-7", input_tokens=10, output_tokens=10)
    assert isinstance(caught.value, ValueError) and "prices=" in str(caught.value)


def test_unpriced_model_without_a_budget_is_recorded_unknown_and_warned(runtime: AgentRuntime) -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with runtime.agent_session(name="u") as session:
            assert session.record_usage(model="acme-llm-7", input_tokens=10, output_tokens=5) is None
    assert [w.category for w in seen] == [UnpricedUsageWarning]
    run = run_row(runtime, session.run_id)
    assert run["cost_unknown"] is True and run["cost_usd"] == 0 and run["output_tokens"] == 5


def test_your_own_prices_come_first(database_url: str) -> None:
    rt = AgentRuntime(
        database_url,
        prices={
            "acme-llm-7": ModelPrice(input_per_mtok=1, output_per_mtok="2.5"),
            "gpt-4o": ModelPrice(input_per_mtok=0, output_per_mtok=0),
        },
    )
    with rt.agent_session(name="own", budget_limit=2) as session:
        assert session.record_usage("acme-llm-7", 1_000_000, 100_000) == Decimal("1.25")
        assert session.record_usage("gpt-4o", 5_000_000, 0) == 0
    rt.shutdown()


@pytest.mark.parametrize("limit", [-1, 0, float("nan"), float("inf"), "abc", True, [1]])
def test_bad_budget_limits_are_refused_before_anything_runs(runtime: AgentRuntime, limit: object) -> None:
    with pytest.raises(ValueError, match="budget_limit"):
        runtime.agent_session(name="bad", budget_limit=limit)
    with runtime.ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM agent_runs").scalar() == 0


CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500},
}
RESPONSE = {
    "id": "resp-1",
    "object": "response",
    "created_at": 0,
    "model": "gpt-4o",
    "output": [],
    "parallel_tool_calls": False,
    "tool_choice": "auto",
    "tools": [],
    "usage": {
        "input_tokens": 1000,
        "output_tokens": 500,
        "total_tokens": 1500,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    },
}
MESSAGE = {
    "id": "msg-1",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-20241022",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    },
}
# List prices: gpt-4o $2.50 in / $10 out per MTok; Claude 3.5 Sonnet $3 in / $15 out / $0.30 cache read.
GPT4O = Decimal("0.0075")  # 1000 * 2.5e-6 + 500 * 10e-6
SONNET = Decimal("0.01053")  # 1000 * 3e-6 + 100 * 0.3e-6 + 500 * 15e-6


@pytest.mark.parametrize(
    ("result", "model", "inp", "cost"),
    [
        (ChatCompletion.model_validate(CHAT), "gpt-4o-2024-08-06", 1000, GPT4O),
        (CHAT, "gpt-4o-2024-08-06", 1000, GPT4O),
        (Response.model_validate(RESPONSE), "gpt-4o", 1000, GPT4O),
        (RESPONSE, "gpt-4o", 1000, GPT4O),
        (Message.model_validate(MESSAGE), "claude-3-5-sonnet-20241022", 1100, SONNET),
        (MESSAGE, "claude-3-5-sonnet-20241022", 1100, SONNET),
    ],
    ids=["openai-chat", "chat-dict", "openai-responses", "responses-dict", "anthropic", "anthropic-dict"],
)
def test_llm_results_are_priced(
    runtime: AgentRuntime, spans: SpanCapture, result: object, model: str, inp: int, cost: Decimal
) -> None:
    @tool(runtime, kind="llm")
    def complete(prompt: str) -> object:
        return result

    with runtime.agent_session(name="llm", budget_limit=1) as session:
        assert complete("hi") is result
    (row,) = calls_of(runtime, session.run_id)
    assert (row["model"], row["input_tokens"], row["output_tokens"]) == (model, inp, 500)
    assert row["cost_usd"] == cost and row["cost_unknown"] is False
    run = run_row(runtime, session.run_id)
    assert run["cost_usd"] == cost and run["input_tokens"] == inp and run["output_tokens"] == 500
    span = spans.tool_spans()[0]
    assert span.attributes[sc.GEN_AI_USAGE_INPUT_TOKENS] == inp
    assert span.attributes[sc.GEN_AI_REQUEST_MODEL] == model
    assert span.attributes[sc.COST_USD] == float(cost)


def test_usage_recorded_inside_a_tool_lands_on_its_row(runtime: AgentRuntime) -> None:
    @tool(runtime, cost=0.01)
    def summarise(text: str) -> str:
        session.record_usage("gpt-4o", input_tokens=4000, output_tokens=1000)
        return text[:10]

    with runtime.agent_session(name="inner") as session:
        summarise("a long document")
        session.record_usage("gpt-4o", input_tokens=0, output_tokens=100)  # the agent's own model call
    (row,) = calls_of(runtime, session.run_id)
    # 4000 * 2.5e-6 + 1000 * 10e-6 = 0.02, plus the tool's own 0.01
    assert row["cost_usd"] == Decimal("0.03") and row["input_tokens"] == 4000 and row["model"] == "gpt-4o"
    run = run_row(runtime, session.run_id)
    assert run["cost_usd"] == Decimal("0.031") and run["output_tokens"] == 1100
