"""A call whose outcome is unknown (its process died mid-call) stops the run without unwinding, in a
status that says so; it is settled by hand and the run resumed. An unwind for good names it instead of
skipping it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from agent_relay import AgentRuntime, CallInDoubtError, tool
from agent_relay.keys import call_id, idempotency_key
from agent_relay.ledger.records import CallRecord
from tests.support import calls_of, dead_owner, run_row


def _tools(runtime: AgentRuntime, log: list[str]) -> dict[str, Callable[..., Any]]:
    @tool(runtime, compensation="cancel")
    def book(hotel: str) -> str:
        log.append(f"book {hotel}")
        return hotel

    @tool(runtime)
    def cancel(hotel: str) -> None:
        log.append(f"cancel {hotel}")

    @tool(runtime, compensation="unwire")
    def wire(amount: int) -> str:
        log.append(f"wire {amount}")
        return "w-1"

    @tool(runtime)
    def unwire(amount: int) -> None:
        log.append(f"unwire {amount}")

    return {"book": book, "wire": wire}


def _run_that_died_in_wire(runtime: AgentRuntime, tools: dict[str, Callable[..., Any]]) -> tuple[str, str]:
    """A run that booked, then died inside wire(10): no unwind ran, and wire's pending row is owned by a
    process that is gone. Returns (run id, wire's call id)."""
    with pytest.raises(KeyboardInterrupt), runtime.agent_session(name="trip") as session:
        tools["book"]("Adlon")
        raise KeyboardInterrupt  # (stands in for the process dying: nothing is unwound)
    key = idempotency_key("wire", "forward", {"amount": 10}, scheme=runtime.services.keys.current)
    wire_id = call_id(session.run_id, "forward", key)
    record = CallRecord(
        run_id=session.run_id,
        call_id=wire_id,
        seq=2,
        tool_name="wire",
        phase="forward",
        idempotency_key=key,
        arguments={"amount": 10},
        owner=dead_owner(),
        started_ns=time.time_ns(),
    )
    runtime.ledger.calls.claim(record)
    return session.run_id, wire_id


def test_an_in_doubt_call_stops_the_run_without_unwinding_and_it_resumes_once_settled(
    runtime: AgentRuntime,
) -> None:
    log: list[str] = []
    tools = _tools(runtime, log)
    run_id, wire_id = _run_that_died_in_wire(runtime, tools)
    log.clear()

    def agent() -> str:
        tools["book"]("Adlon")
        return str(tools["wire"](10))

    with (
        pytest.raises(CallInDoubtError) as caught,
        runtime.agent_session(name="trip", resume_run_id=run_id) as stopped,
    ):
        agent()
    assert caught.value.call_id == wire_id and "settle_call" in str(caught.value)
    assert log == []  # nothing ran again, and nothing was compensated
    assert stopped.status == "in_doubt" and run_row(runtime, run_id)["status"] == "in_doubt"
    assert not stopped.compensation_errors

    runtime.settle_call(wire_id, "succeeded", output="w-1")  # it happened, as the bank says
    with runtime.agent_session(name="trip", resume_run_id=run_id) as resumed:
        assert agent() == "w-1"
    assert log == [] and resumed.status == "succeeded"
    assert [(r["tool_name"], r["status"]) for r in calls_of(runtime, run_id)] == [
        ("book", "succeeded"),
        ("wire", "succeeded"),
    ]


def test_compensating_a_run_names_its_in_doubt_call_and_finishes_once_it_is_settled(
    runtime: AgentRuntime,
) -> None:
    log: list[str] = []
    tools = _tools(runtime, log)
    run_id, wire_id = _run_that_died_in_wire(runtime, tools)
    log.clear()

    first = runtime.compensate(run_id)
    assert first.status == "compensation_failed"
    (failure,) = first.compensation_errors
    assert isinstance(failure.error, CallInDoubtError) and failure.error.call_id == wire_id
    assert failure.forward_tool == "wire" and "settle_call" in str(failure)
    assert log == ["cancel Adlon"]  # what is known is undone; the unknown is named, not skipped

    runtime.settle_call(wire_id, "succeeded", output="w-1")
    second = runtime.compensate(run_id)
    assert second.status == "compensated" and not second.compensation_errors
    assert log == ["cancel Adlon", "unwire 10"]  # the cancel was not run twice
