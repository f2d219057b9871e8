"""Saga compensations: reverse order, forward arguments, recorded, never masking the original error."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.trace import StatusCode

from agent_relay import AgentRuntime, BudgetExceededError, UnknownToolError, tool
from agent_relay import semconv as sc
from agent_relay.testing import SpanCapture
from tests.support import calls_of, run_row


class PaymentDeclined(Exception):
    pass


def booking_tools(
    runtime: AgentRuntime, log: list[tuple[str, object]], *, failing: str | None = None
) -> dict:
    @tool(runtime, compensation="cancel_flight")
    def book_flight(passenger: str, flight: str) -> str:
        log.append(("book_flight", flight))
        return f"PNR-{flight}"

    @tool(runtime, compensation="cancel_hotel")
    def book_hotel(passenger: str, hotel: str, nights: int = 2) -> str:
        log.append(("book_hotel", hotel))
        return f"H-{hotel}"

    @tool(runtime, compensation="release_car")
    def rent_car(passenger: str, city: str) -> dict:
        log.append(("rent_car", city))
        return {"car_id": f"C-{city}"}

    @tool(runtime)
    def cancel_flight(passenger: str, flight: str, forward_result: str) -> None:
        log.append(("cancel_flight", forward_result))

    @tool(runtime)
    def cancel_hotel(hotel: str, nights: int) -> None:
        if failing == "cancel_hotel":
            raise RuntimeError("hotel API is down")
        log.append(("cancel_hotel", (hotel, nights)))

    @tool(runtime)
    def release_car(city: str, forward_result: dict) -> None:
        log.append(("release_car", forward_result["car_id"]))

    return {"flight": book_flight, "hotel": book_hotel, "car": rent_car}


def test_three_compensable_calls_unwind_in_reverse_with_forward_arguments(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    log: list[tuple[str, object]] = []
    tools = booking_tools(runtime, log)
    declined = PaymentDeclined("card declined: insufficient funds")

    with pytest.raises(PaymentDeclined) as caught, runtime.agent_session(name="trip") as session:
        tools["flight"]("ada", "LH400")
        tools["hotel"]("ada", hotel="Adlon")
        tools["car"]("ada", city="Berlin")
        raise declined

    assert caught.value is declined and str(caught.value) == "card declined: insufficient funds"
    assert not getattr(caught.value, "__notes__", [])
    assert log[3:] == [
        ("release_car", "C-Berlin"),
        ("cancel_hotel", ("Adlon", 2)),
        ("cancel_flight", "PNR-LH400"),
    ]
    rows = calls_of(runtime, session.run_id)
    comp = [r for r in rows if r["phase"] == "compensation"]
    assert [r["tool_name"] for r in comp] == ["release_car", "cancel_hotel", "cancel_flight"]
    assert {r["status"] for r in comp} == {"succeeded"}
    assert comp[1]["arguments"] == {"passenger": "ada", "hotel": "Adlon", "nights": 2}
    assert min(r["seq"] for r in comp) > max(r["seq"] for r in rows if r["phase"] == "forward")
    run = run_row(runtime, session.run_id)
    assert run["status"] == "compensated" and session.status == "compensated"
    assert run["error_type"].endswith("PaymentDeclined")
    (session_span,) = spans.session_spans()
    comp_spans = [s for s in spans.tool_spans() if s.attributes[sc.TOOL_PHASE] == "compensation"]
    assert len(comp_spans) == 3
    assert {s.parent.span_id for s in comp_spans} == {session_span.context.span_id}


def test_a_failing_compensation_is_recorded_and_the_rest_still_run(runtime: AgentRuntime) -> None:
    log: list[tuple[str, object]] = []
    tools = booking_tools(runtime, log, failing="cancel_hotel")

    with (
        pytest.raises(PaymentDeclined, match="declined") as caught,
        runtime.agent_session(name="t") as session,
    ):
        tools["flight"]("bo", "BA1")
        tools["hotel"]("bo", hotel="Savoy")
        tools["car"]("bo", city="London")
        raise PaymentDeclined("declined")

    assert [name for name, _ in log[3:]] == ["release_car", "cancel_flight"]
    notes = caught.value.__notes__
    assert len(notes) == 1 and "cancel_hotel" in notes[0] and "hotel API is down" in notes[0]
    (failure,) = session.compensation_errors
    assert failure.tool_name == "cancel_hotel" and failure.forward_tool == "book_hotel"
    assert isinstance(failure.error, RuntimeError)
    comp = {r["tool_name"]: r for r in calls_of(runtime, session.run_id) if r["phase"] == "compensation"}
    assert comp["cancel_hotel"]["status"] == "failed"
    assert comp["cancel_hotel"]["error_message"] == "hotel API is down"
    assert comp["release_car"]["status"] == comp["cancel_flight"]["status"] == "succeeded"
    assert run_row(runtime, session.run_id)["status"] == "compensation_failed"


def test_only_succeeded_calls_of_compensable_tools_are_undone(runtime: AgentRuntime) -> None:
    undone: list[str] = []

    @tool(runtime, compensation="undo")
    def act(name: str) -> str:
        if name == "bad":
            raise ValueError("no")
        return name

    @tool(runtime)
    def lookup(name: str) -> str:
        return name

    @tool(runtime)
    def undo(name: str) -> None:
        undone.append(name)

    with pytest.raises(KeyError), runtime.agent_session(name="partial") as session:
        act("a")
        lookup("b")
        with pytest.raises(ValueError):
            act("bad")
        act("a")  # deduplicated: compensated once
        raise KeyError("stop")
    assert undone == ["a"]
    assert [r["tool_name"] for r in calls_of(runtime, session.run_id) if r["phase"] == "compensation"] == [
        "undo"
    ]


def test_a_session_that_succeeds_compensates_nothing(runtime: AgentRuntime) -> None:
    log: list[tuple[str, object]] = []
    tools = booking_tools(runtime, log)
    with runtime.agent_session(name="ok") as session:
        tools["flight"]("cy", "AF1")
    assert log == [("book_flight", "AF1")]
    assert run_row(runtime, session.run_id)["status"] == "succeeded"


def test_an_unknown_compensation_name_fails_at_session_start(runtime: AgentRuntime) -> None:
    ran = []

    @tool(runtime, name="send_email", compensation="cancel_emial")
    def send_email(to: str) -> None:
        ran.append(to)

    with pytest.raises(UnknownToolError, match="'cancel_emial'") as caught, runtime.agent_session(name="x"):
        send_email("a@b.c")
    assert isinstance(caught.value, ValueError) and ran == []
    with runtime.ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM agent_runs").scalar() == 0


def test_a_compensation_that_cannot_take_the_forward_arguments_fails_at_session_start(
    runtime: AgentRuntime,
) -> None:
    @tool(runtime, compensation="refund")
    def charge(card: str, amount: int) -> str:
        return "ch_1"

    @tool(runtime)
    def refund(charge_id: str) -> None: ...

    with pytest.raises(UnknownToolError, match="requires 'charge_id'"), runtime.agent_session(name="x"):
        pass


def test_budget_exceeded_unwinds_the_saga(runtime: AgentRuntime) -> None:
    released = []

    @tool(runtime, compensation="release", cost=0.6)
    def reserve(seat: str) -> str:
        return seat

    @tool(runtime)
    def release(seat: str) -> None:
        released.append(seat)

    with pytest.raises(BudgetExceededError), runtime.agent_session(name="b", budget_limit=1) as session:
        reserve("1A")
        reserve("1B")  # refused before it runs: 0.6 + 0.6 could pass the limit
    assert released == ["1A"]
    assert run_row(runtime, session.run_id)["status"] == "compensated"


@pytest.mark.asyncio
async def test_async_session_awaits_async_compensations(runtime: AgentRuntime, spans: SpanCapture) -> None:
    log: list[str] = []

    @tool(runtime, compensation="unsubscribe")
    async def subscribe(user: str) -> str:
        await asyncio.sleep(0)
        log.append(f"sub {user}")
        return f"sub-{user}"

    @tool(runtime)
    async def unsubscribe(user: str, forward_result: str) -> None:
        await asyncio.sleep(0.01)
        log.append(f"unsub {forward_result}")

    with pytest.raises(TimeoutError):
        async with runtime.agent_session(name="async-saga"):
            await asyncio.gather(subscribe("u1"), subscribe("u2"))
            raise TimeoutError("model took too long")
    assert sorted(log[2:]) == ["unsub sub-u1", "unsub sub-u2"]
    comp_spans = [s for s in spans.tool_spans() if s.attributes[sc.TOOL_PHASE] == "compensation"]
    assert all(s.end_time - s.start_time >= 10_000_000 for s in comp_spans)
    assert all(s.status.status_code is not StatusCode.ERROR for s in comp_spans)


def test_sync_session_runs_async_compensations_on_a_loop_of_their_own(runtime: AgentRuntime) -> None:
    log: list[str] = []

    @tool(runtime, compensation="undo_async")
    def do(x: int) -> int:
        return x

    @tool(runtime)
    async def undo_async(x: int) -> None:
        await asyncio.sleep(0)
        log.append(f"undo {x}")

    with pytest.raises(ZeroDivisionError), runtime.agent_session(name="mixed"):
        do(1)
        1 / 0  # noqa: B018
    assert log == ["undo 1"]
