"""Budget reservation, fail closed: a call whose cost is known before it runs reserves it on the run's row
(``agent_runs.reserved_usd``) and is refused before it runs when it could pass the limit; when it ends,
its actual cost replaces the reservation."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal

import anthropic
import openai
import pytest
from opentelemetry.trace import StatusCode

import agent_relay
from agent_relay import (
    AgentRuntime,
    BudgetExceededError,
    BudgetReservationError,
    CallInDoubtError,
    ConfigurationError,
    ModelPrice,
    UnpricedUsageError,
    tool,
)
from agent_relay import semconv as sc
from agent_relay.encoding import canonical_dumps
from agent_relay.testing import FakeLLMServer, SpanCapture
from agent_relay.usage import TokenUsage
from tests.support import calls_of, run_row

ASK = [{"role": "user", "content": "Email ada that the build is green."}]


def money(runtime: AgentRuntime, run_id: str) -> tuple[Decimal, Decimal]:
    """(cost_usd, reserved_usd) of the run's row, read with plain SQL."""
    row = run_row(runtime, run_id)
    return row["cost_usd"], row["reserved_usd"]


def test_a_constant_cost_tool_is_refused_before_its_body_runs(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    ran: list[int] = []

    @tool(runtime, cost=0.4)
    def search(q: int) -> int:
        ran.append(q)
        return q

    with (
        pytest.raises(BudgetReservationError) as caught,
        runtime.agent_session(name="search", budget_limit=1) as session,
    ):
        assert search(1) == 1 and search(2) == 2
        search(3)  # 0.8 spent + 0.4 could pass 1: refused before it runs
    assert ran == [1, 2]
    rows = calls_of(runtime, session.run_id)
    assert [(r["arguments"], r["status"]) for r in rows] == [({"q": 1}, "succeeded"), ({"q": 2}, "succeeded")]
    err = caught.value
    assert isinstance(err, BudgetExceededError)
    assert (err.limit, err.spent, err.reserved, err.reservation) == (1, Decimal("0.8"), 0, Decimal("0.4"))
    assert (err.tool_name, err.run_id) == ("search", session.run_id)
    for named in ("$0.8", "$0.4", "$1 budget", "budget_limit", "cost_estimate="):
        assert named in str(err), named
    assert money(runtime, session.run_id) == (Decimal("0.8"), 0)
    assert run_row(runtime, session.run_id)["error_type"] == "agent_relay.errors.BudgetReservationError"
    refused = spans.tool_spans()[-1]
    assert refused.status.status_code is StatusCode.ERROR
    assert refused.attributes[sc.ERROR_TYPE] == "agent_relay.errors.BudgetReservationError"


def test_the_reservation_is_held_while_the_call_runs_then_replaced_by_its_cost(runtime: AgentRuntime) -> None:
    seen: list[tuple[Decimal, Decimal]] = []

    @tool(runtime, cost_estimate=1, cost=lambda result: result)
    def book(price: str) -> Decimal:
        seen.append(money(runtime, session.run_id))  # the run's row, read while the call runs
        return Decimal(price)

    with runtime.agent_session(name="book", budget_limit="1.5") as session:
        book("0.25")
        book("0.5")
        with pytest.raises(BudgetReservationError) as caught:
            book("0.1")  # 0.75 spent + 1 reserved could pass 1.5, whatever it would have cost
    assert seen == [(0, 1), (Decimal("0.25"), 1)]
    assert caught.value.spent == Decimal("0.75") and caught.value.reservation == 1
    assert money(runtime, session.run_id) == (Decimal("0.75"), 0)
    assert [r["cost_usd"] for r in calls_of(runtime, session.run_id)] == [Decimal("0.25"), Decimal("0.5")]
    assert run_row(runtime, session.run_id)["status"] == "succeeded"


def test_an_estimate_from_the_arguments_reserves_and_a_bad_one_refuses(runtime: AgentRuntime) -> None:
    ran: list[int] = []
    per_page = Decimal("0.01")

    @tool(runtime, cost_estimate=lambda args: per_page * args["pages"], cost=lambda result: result["cost"])
    def print_pages(pages: int) -> dict:
        ran.append(pages)
        return {"cost": per_page * pages}

    @tool(runtime, cost_estimate=lambda args: "a lot")
    def vague(x: int) -> None:
        ran.append(-1)

    @tool(runtime, cost_estimate=lambda args: args["missing"])
    def broken(x: int) -> None:
        ran.append(-3)

    @tool(runtime, cost_estimate=lambda args: None, cost=lambda result: 0.25)
    def unknowable(x: int) -> None:
        ran.append(-2)

    with runtime.agent_session(name="print", budget_limit="1") as session:
        print_pages(60)
        with pytest.raises(BudgetReservationError) as caught:
            print_pages(50)  # 0.6 + 0.5 could pass 1
        print_pages(40)  # exactly the limit: allowed
        with pytest.raises(ConfigurationError, match=r"cost_estimate.*the tool was not run"):
            vague(1)
        for _ in range(2):  # (the first refusal left nothing in flight: the same call is refused again)
            with pytest.raises(
                ConfigurationError, match=r"'broken': its cost_estimate function raised KeyError"
            ):
                broken(1)
    assert ran == [60, 40]
    assert caught.value.reservation == Decimal("0.50")
    assert money(runtime, session.run_id) == (Decimal("1.00"), 0) and session.cost_usd == 1
    with (
        pytest.raises(BudgetExceededError) as after,
        runtime.agent_session(name="u", budget_limit="0.2") as s,
    ):
        unknowable(1)  # its estimate says "not known": it runs, and is counted when it ends
    assert ran[-1] == -2 and not isinstance(after.value, BudgetReservationError)
    assert money(runtime, s.run_id) == (Decimal("0.25"), 0)


@pytest.mark.parametrize("bad", [-1, True, "abc", float("nan"), [1]])
def test_bad_cost_estimates_are_refused_when_decorating(runtime: AgentRuntime, bad: object) -> None:
    with pytest.raises(ConfigurationError, match="cost_estimate"):

        @tool(runtime, cost_estimate=bad)  # type: ignore[arg-type]
        def nothing() -> None: ...


def test_failed_and_served_calls_leave_nothing_reserved(runtime: AgentRuntime) -> None:
    tries: list[str] = []

    @tool(runtime, cost=0.5)
    def flaky(x: int) -> None:
        tries.append("flaky")
        raise RuntimeError("down")

    @tool(runtime, cost=0.5)
    def lookup(x: int) -> int:
        tries.append("lookup")
        return x

    with runtime.agent_session(name="f", budget_limit=1) as session:
        for _ in range(3):  # each try reserves 0.5 and releases it: a failed call costs nothing here
            with pytest.raises(RuntimeError):
                flaky(1)
        assert lookup(1) == 1 and lookup(1) == 1  # the second is served: it reserves nothing
        assert money(runtime, session.run_id) == (Decimal("0.5"), 0)
    assert tries == ["flaky"] * 3 + ["lookup"]
    flaky_row, _ = calls_of(runtime, session.run_id)
    assert flaky_row["attempts"] == 3 and flaky_row["status"] == "failed"


def test_without_a_budget_nothing_is_reserved_or_refused(runtime: AgentRuntime) -> None:
    @tool(runtime, cost=5, cost_estimate=lambda args: 1 / 0)  # (never asked without a budget)
    def pricey(x: int) -> int:
        return x

    with runtime.agent_session(name="free") as session:
        assert [pricey(i) for i in range(3)] == [0, 1, 2]
    assert money(runtime, session.run_id) == (15, 0)


@pytest.mark.asyncio
async def test_parallel_async_calls_share_the_budget_exactly(runtime: AgentRuntime) -> None:
    ran: list[int] = []

    @tool(runtime, cost=0.1)
    async def fetch(i: int) -> int:
        await asyncio.sleep(0.01)
        ran.append(i)
        return i

    async with runtime.agent_session(name="fan-out", budget_limit="0.55") as session:
        results = await asyncio.gather(*(fetch(i) for i in range(10)), return_exceptions=True)
    done = [r for r in results if isinstance(r, int)]
    assert len(done) == 5 and sorted(ran) == sorted(done)
    assert all(isinstance(r, BudgetReservationError) for r in results if not isinstance(r, int))
    assert money(runtime, session.run_id) == (Decimal("0.5"), 0)
    assert len(calls_of(runtime, session.run_id)) == 5


def test_calls_recorded_only_when_they_end_settle_with_their_row(database_url: str) -> None:
    rt = AgentRuntime(database_url, durability="outcome")
    sent: list[int] = []

    @tool(rt, cost=0.3)
    def send(i: int) -> int:
        sent.append(i)
        return i

    with pytest.raises(BudgetReservationError), rt.agent_session(name="o", budget_limit=1) as session:
        for i in range(4):
            send(i)
    assert sent == [0, 1, 2]
    assert money(rt, session.run_id) == (Decimal("0.9"), 0)
    rt.shutdown()


def test_a_resumed_run_reserves_against_what_it_spent_before(runtime: AgentRuntime) -> None:
    ran: list[int] = []

    @tool(runtime, cost=0.4)
    def charge(i: int) -> int:
        ran.append(i)
        return i

    def agent() -> None:
        for i in range(3):
            charge(i)

    with pytest.raises(KeyboardInterrupt), runtime.agent_session(name="r", budget_limit=1) as first:
        charge(0)
        charge(1)
        raise KeyboardInterrupt  # the process stops: failed, nothing unwound
    with (
        pytest.raises(BudgetReservationError) as caught,
        runtime.agent_session("r", resume_run_id=first.run_id),
    ):
        agent()  # 0 and 1 are served (reserving nothing), 2 is refused
    assert ran == [0, 1] and caught.value.spent == Decimal("0.8")
    assert money(runtime, first.run_id) == (Decimal("0.8"), 0)


# --- model calls recorded by instrument() ------------------------------------------------------------------
@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


def test_a_model_call_whose_max_tokens_could_pass_the_budget_is_refused_before_the_request(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = anthropic.Anthropic(base_url=llm.anthropic_url, api_key="test")
    request = {"model": "claude-3-5-sonnet-20241022", "max_tokens": 1000, "messages": ASK}
    # 1000 output tokens at $15 per million, and the input bounded by one token per byte of the request
    input_bound = len(canonical_dumps(request).encode())
    reservation = instrumented.prices.cost(TokenUsage(request["model"], "anthropic", input_bound, 1000))
    assert reservation is not None and reservation > Decimal("0.015")
    with (
        pytest.raises(BudgetReservationError) as caught,
        instrumented.agent_session(name="ask", budget_limit="0.015") as refused,
    ):
        client.messages.create(**request)
    assert llm.requests == [] and calls_of(instrumented, refused.run_id) == []
    assert caught.value.reservation == reservation and caught.value.tool_name == "anthropic.messages.create"
    assert "max_tokens" in str(caught.value)

    with instrumented.agent_session(name="ask", budget_limit="0.05") as session:
        reply = client.messages.create(**request)
    assert len(llm.requests) == 1 and reply.usage.output_tokens == 20
    (row,) = calls_of(instrumented, session.run_id)
    assert 0 < row["cost_usd"] < reservation  # the reservation was replaced by what the call cost
    assert money(instrumented, session.run_id) == (row["cost_usd"], 0)


def test_an_openai_call_reserves_by_max_completion_tokens(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    with instrumented.agent_session(name="chat", budget_limit="0.01") as session:
        client.chat.completions.create(model="gpt-4o", messages=ASK, max_completion_tokens=100)
        with pytest.raises(BudgetReservationError):  # 100,000 output tokens at $10 per million: $1
            client.chat.completions.create(model="gpt-4o", messages=ASK, max_completion_tokens=100_000)
        client.chat.completions.create(model="gpt-4o", messages=[*ASK, *ASK])  # no cap: counted after
    assert len(llm.requests) == 2
    rows = calls_of(instrumented, session.run_id)
    assert money(instrumented, session.run_id) == (sum(r["cost_usd"] for r in rows), 0)


def test_an_unpriced_model_under_a_budget_is_refused_before_the_request(
    instrumented: AgentRuntime, llm: FakeLLMServer, database_url: str
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    with (
        pytest.raises(UnpricedUsageError) as caught,
        instrumented.agent_session(name="u", budget_limit=5) as session,
    ):
        client.chat.completions.create(model="acme-llm-7", messages=ASK)
    assert llm.requests == [] and calls_of(instrumented, session.run_id) == []
    message = str(caught.value)
    assert "'acme-llm-7'" in message and "not sent" in message
    assert "prices={'acme-llm-7': ModelPrice(input_per_mtok=..., output_per_mtok=...)}" in message
    assert isinstance(caught.value, ValueError) and caught.value.run_id == session.run_id

    agent_relay.uninstrument()  # priced as the message says, the same call runs
    priced = AgentRuntime(
        database_url, prices={"acme-llm-7": ModelPrice(input_per_mtok=1, output_per_mtok=2)}
    )
    agent_relay.instrument(priced)
    try:
        with priced.agent_session(name="u", budget_limit=5) as again:
            client.chat.completions.create(model="acme-llm-7", messages=ASK, max_tokens=50)
        assert len(llm.requests) == 1 and run_row(priced, again.run_id)["cost_usd"] > 0
    finally:
        agent_relay.uninstrument()
        priced.shutdown()


def test_a_call_left_in_doubt_by_its_timeout_keeps_its_reservation(runtime: AgentRuntime) -> None:
    @tool(runtime, cost=0.4, timeout_s=0.05)
    def slow(x: int) -> int:
        time.sleep(0.5)  # still under way when the wrapper gives up on it
        return x

    with pytest.raises(CallInDoubtError), runtime.agent_session(name="d", budget_limit=1) as session:
        slow(1)
    assert run_row(runtime, session.run_id)["status"] == "in_doubt"
    assert money(runtime, session.run_id) == (0, Decimal("0.4"))  # its cost is unknown: fail closed
