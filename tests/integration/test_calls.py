"""The seed's workflow, idempotency, failures and the shape of the ledger rows and spans."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pydantic
import pytest
from opentelemetry.trace import StatusCode, format_span_id, format_trace_id

import agent_relay
from agent_relay import (
    AgentRuntime,
    ArgumentEncodingError,
    OutputEncodingError,
    current_call,
    tool,
)
from agent_relay import semconv as sc
from agent_relay.testing import SpanCapture
from tests.support import calls_of, run_row


def test_seed_workflow_records_one_call_and_the_run(runtime: AgentRuntime, spans: SpanCapture) -> None:
    @tool(runtime, name="send_email", compensation="cancel_email")
    def send_email(to: str, subject: str, body: str) -> str:
        return "msg-123"

    @tool(runtime, name="cancel_email")
    def cancel_email(to: str, subject: str, body: str) -> None:
        return None

    def agent_flow(event: dict) -> dict:
        msg_id = send_email(to=event["to"], subject=event["subject"], body=event["body"])
        return {"message_id": msg_id}

    with runtime.agent_session(name="email_flow", input_payload={"to": "user@example.com"}) as session:
        result = agent_flow({"to": "user@example.com", "subject": "Hello", "body": "Hi"})
        session.set_output(result)

    (row,) = calls_of(runtime, session.run_id)
    assert row["tool_name"] == "send_email"
    assert row["phase"] == "forward"
    assert row["status"] == "succeeded"
    assert row["arguments"] == {"to": "user@example.com", "subject": "Hello", "body": "Hi"}
    assert row["output"] == "msg-123"
    assert row["attempts"] == 1 and row["seq"] == 1
    assert len(row["idempotency_key"]) == 64
    assert row["ended_at"] >= row["started_at"]

    (tool_span,) = spans.tool_spans()
    (session_span,) = spans.session_spans()
    assert row["trace_id"] == format_trace_id(tool_span.context.trace_id)
    assert row["span_id"] == format_span_id(tool_span.context.span_id)
    assert tool_span.parent is not None and tool_span.parent.span_id == session_span.context.span_id
    assert tool_span.name == "execute_tool send_email"
    attrs = tool_span.attributes
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "execute_tool"
    assert attrs[sc.GEN_AI_TOOL_NAME] == "send_email"
    assert attrs[sc.GEN_AI_TOOL_CALL_ID] == row["call_id"]
    assert attrs[sc.IDEMPOTENCY_KEY] == row["idempotency_key"]
    assert attrs[sc.RUN_ID] == session.run_id
    assert attrs[sc.TOOL_PHASE] == "forward"
    assert session_span.name == "invoke_agent email_flow"
    assert session_span.attributes[sc.GEN_AI_AGENT_NAME] == "email_flow"

    run = run_row(runtime, session.run_id)
    assert run["status"] == "succeeded"
    assert run["output"] == {"message_id": "msg-123"}
    assert run["input_payload"] == {"to": "user@example.com"}
    assert run["trace_id"] == format_trace_id(session_span.context.trace_id)
    assert run["ended_at"] is not None


def test_same_call_in_any_form_runs_once(runtime: AgentRuntime, spans: SpanCapture) -> None:
    runs = []

    @tool(runtime, name="charge")
    def charge(customer: str, amount: int, currency: str = "usd") -> dict:
        runs.append(customer)
        return {"charge_id": f"ch_{len(runs)}", "amount": amount}

    with runtime.agent_session(name="billing") as session:
        first = charge("alice", 100)
        results = [
            charge(customer="alice", amount=100),
            charge("alice", amount=100, currency="usd"),
            charge("alice", 100, "usd"),
        ]
        other = charge("alice", 100, "eur")

    assert runs == ["alice", "alice"]
    assert all(r == first for r in results)
    assert other["charge_id"] == "ch_2"
    rows = calls_of(runtime, session.run_id)
    assert [r["arguments"]["currency"] for r in rows] == ["usd", "eur"]
    assert [r["seq"] for r in rows] == [1, 2]
    deduplicated = [s for s in spans.tool_spans() if s.attributes.get(sc.DEDUPLICATED)]
    assert len(deduplicated) == 3
    assert {s.attributes[sc.IDEMPOTENCY_KEY] for s in deduplicated} == {rows[0]["idempotency_key"]}


def test_a_failed_call_is_recorded_and_runs_again(runtime: AgentRuntime, spans: SpanCapture) -> None:
    attempts: list[int] = []

    class GatewayDown(Exception):
        pass

    @tool(runtime, name="open_ticket")
    def open_ticket(title: str) -> str:
        info = current_call()
        assert info is not None
        attempts.append(info.attempt)
        if len(attempts) == 1:
            raise GatewayDown("503 from the ticket API")
        return "T-1"

    with runtime.agent_session(name="support") as session:
        with pytest.raises(GatewayDown):
            open_ticket("printer on fire")
        (row,) = calls_of(runtime, session.run_id)
        assert row["status"] == "failed"
        assert row["error_type"].endswith("GatewayDown")
        assert row["error_message"] == "503 from the ticket API"
        assert row["output"] is None

        assert open_ticket("printer on fire") == "T-1"

    assert attempts == [1, 2]
    (row,) = calls_of(runtime, session.run_id)
    assert row["status"] == "succeeded" and row["attempts"] == 2 and row["output"] == "T-1"
    assert row["error_type"] is None
    failed_span, ok_span = spans.tool_spans()
    assert failed_span.status.status_code is StatusCode.ERROR
    assert failed_span.attributes[sc.ERROR_TYPE].endswith("GatewayDown")
    assert [e.name for e in failed_span.events] == ["exception"]
    assert ok_span.status.status_code is not StatusCode.ERROR
    assert row["span_id"] == format_span_id(ok_span.context.span_id)


def test_session_failure_is_recorded_and_the_exception_propagates_unchanged(runtime: AgentRuntime) -> None:
    boom = KeyError("missing field")
    with pytest.raises(KeyError) as caught, runtime.agent_session(name="flaky") as session:
        raise boom
    assert caught.value is boom
    run = run_row(runtime, session.run_id)
    assert run["status"] == "failed"
    assert run["error_type"] == "KeyError"
    assert "missing field" in run["error_message"]


def test_current_call_names_the_call_and_is_none_outside(runtime: AgentRuntime) -> None:
    seen = []

    @tool(runtime)
    def pay(invoice: str) -> None:
        seen.append(current_call())

    with runtime.agent_session(name="pay") as session:
        pay("inv-1")
    assert current_call() is None
    (info,) = seen
    (row,) = calls_of(runtime, session.run_id)
    assert info.run_id == session.run_id
    assert info.idempotency_key == row["idempotency_key"]
    assert info.call_id == row["call_id"]
    assert (info.tool_name, info.phase, info.attempt, info.seq) == ("pay", "forward", 1, 1)


def test_unencodable_argument_is_refused_before_the_tool_runs(runtime: AgentRuntime) -> None:
    ran = []

    @tool(runtime, name="upload")
    def upload(path: str, meta: dict) -> None:
        ran.append(path)

    with runtime.agent_session(name="upload") as session, pytest.raises(ArgumentEncodingError) as caught:
        upload("a.txt", meta={"tags": ["x", object()]})
    assert ran == []
    assert calls_of(runtime, session.run_id) == []
    err = caught.value
    assert isinstance(err, ValueError)
    assert err.tool_name == "upload" and err.argument == "meta" and err.path == "meta.tags[1]"
    assert "'upload'" in str(err) and "meta.tags[1]" in str(err)


def test_nan_argument_is_refused(runtime: AgentRuntime) -> None:
    @tool(runtime)
    def quote(price: float) -> float:
        return price

    with runtime.agent_session(name="q"), pytest.raises(ArgumentEncodingError, match="price"):
        quote(float("nan"))


def test_unencodable_result_fails_the_call_instead_of_pretending(runtime: AgentRuntime) -> None:
    @tool(runtime)
    def connect(host: str) -> object:
        return object()

    with (
        runtime.agent_session(name="c") as session,
        pytest.raises(OutputEncodingError, match="'connect' ran"),
    ):
        connect("db")
    (row,) = calls_of(runtime, session.run_id)
    assert row["status"] == "failed"
    assert row["error_type"] == "agent_relay.errors.OutputEncodingError"


@dataclasses.dataclass
class Receipt:
    id: str
    amount: int
    at: dt.datetime


class Ticket(pydantic.BaseModel):
    id: str
    tags: list[str]


def test_served_outputs_come_back_as_the_annotated_type(runtime: AgentRuntime) -> None:
    counts = {"receipt": 0, "ticket": 0}

    @tool(runtime)
    def receipt(amount: int) -> Receipt:
        counts["receipt"] += 1
        return Receipt(id="r1", amount=amount, at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC))

    @tool(runtime)
    def tickets(n: int) -> list[Ticket]:
        counts["ticket"] += 1
        return [Ticket(id=f"t{i}", tags=["a"]) for i in range(n)]

    with runtime.agent_session(name="types"):
        live_r, served_r = receipt(5), receipt(5)
        live_t, served_t = tickets(2), tickets(2)
    assert counts == {"receipt": 1, "ticket": 1}
    assert type(served_r) is Receipt and served_r == live_r
    assert all(type(t) is Ticket for t in served_t) and served_t == live_t


def test_tool_outside_a_session_runs_plainly_with_a_span(runtime: AgentRuntime, spans: SpanCapture) -> None:
    @tool(runtime)
    def add(a: int, b: int) -> int:
        return a + b

    assert add(2, 3) == 5
    (span,) = spans.tool_spans()
    assert span.name == "execute_tool add"
    assert sc.RUN_ID not in span.attributes
    with runtime.ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM tool_calls").scalar() == 0


def test_nested_session_records_a_child_run(runtime: AgentRuntime, spans: SpanCapture) -> None:
    @tool(runtime)
    def step(name: str) -> str:
        return name

    with runtime.agent_session(name="outer") as outer:
        step("before")
        with runtime.agent_session(name="inner") as inner:
            step("inside")
        step("after")

    assert [r["arguments"]["name"] for r in calls_of(runtime, outer.run_id)] == ["before", "after"]
    assert [r["arguments"]["name"] for r in calls_of(runtime, inner.run_id)] == ["inside"]
    assert run_row(runtime, inner.run_id)["parent_run_id"] == outer.run_id
    outer_span, inner_span = sorted(spans.session_spans(), key=lambda s: s.name != "invoke_agent outer")
    assert inner_span.parent.span_id == outer_span.context.span_id


def test_public_names_are_the_seed_paths() -> None:
    from agent_relay.runtime import AgentRuntime as SeedRuntime
    from agent_relay.tooling import tool as seed_tool

    assert SeedRuntime is agent_relay.AgentRuntime and seed_tool is agent_relay.tool
