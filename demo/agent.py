"""AgentRelay demo: the seed's email flow, end to end, on the default SQLite ledger.

    python demo/agent.py

What it shows:
  1. a tool call recorded as a durable ledger row and an OpenTelemetry span;
  2. the agent issuing the same call again (as LLM agents do after a retry): served from the ledger,
     the email is sent once;
  3. a flaky call retried by its policy (@tool(retry=...)): the failed try is kept, the next one works;
  4. the ledger rows of the run, read back with plain SQL, and the trace id to look up in Jaeger;
  5. a trip booking that fails at payment: its flight and hotel are compensated, latest first (saga);
  6. a research agent capped at $0.05: the model call that passes the budget is recorded, the run stops
     and nothing after it runs;
  7. a replay of the email run: every call served from the ledger, no tool body runs, same output;
  8. a newsletter run that fails at its last step, resumed: done steps are served, the failed one reruns;
  9. an agent loop driven by a model through the official openai client, auto-instrumented: each model
     call is a priced ledger row, and a replay of the loop sends no request. Without OPENAI_API_KEY the
     client talks to a small local server that speaks the OpenAI wire format (agent_relay.testing);
 10. a refund over $100 that waits for a person: the run stops awaiting approval, `agent-relay approve`
     records the decision (run here by the demo, standing in for you), and the resumed run pays it.

Configuration is the runtime's: AGENT_RELAY_DATABASE_URL (default sqlite:///agent_relay.db in the working
directory) and the standard OTEL_* variables (set OTEL_EXPORTER_OTLP_ENDPOINT to export the trace).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import sqlalchemy as sa

from agent_relay import ApprovalRequiredError, BudgetExceededError, Retry, current_call
from agent_relay.runtime import AgentRuntime
from agent_relay.tooling import tool

runtime = AgentRuntime.from_env()
outbox: list[str] = []  # the "real world": what the tools actually did
flaky_failures = {"remaining": 1}


@tool(runtime, name="send_email", compensation="cancel_email")
def send_email(to: str, subject: str, body: str) -> str:
    call = current_call()
    outbox.append(f"email to {to}: {subject}")
    # a real mail API would take the key as its own idempotency header
    return f"msg-{call.idempotency_key[:8]}" if call else "msg-123"


@tool(runtime, name="cancel_email")
def cancel_email(to: str, subject: str, body: str) -> None:
    outbox.append(f"cancelled email to {to}")


@tool(runtime, name="open_ticket", cost=0.002, retry=Retry(attempts=3, initial_delay_s=0.01))
def open_ticket(customer: str, summary: str) -> dict:
    if flaky_failures["remaining"]:
        flaky_failures["remaining"] -= 1
        raise ConnectionError("ticket API timed out")
    outbox.append(f"ticket for {customer}")
    return {"ticket_id": "T-1001", "customer": customer}


def agent_flow(event: dict) -> dict:
    msg_id = send_email(to=event["to"], subject=event["subject"], body=event["body"])
    # The model, unsure whether its first call went through, asks for the very same email again.
    again = send_email(event["to"], event["subject"], event["body"])
    assert again == msg_id
    ticket = open_ticket(customer=event["to"], summary=event["subject"])  # fails once, retried
    return {"message_id": msg_id, "ticket": ticket}


# --- a saga: book, book, pay — and undo the bookings when payment fails --------------------------------


class PaymentDeclined(Exception):
    pass


@tool(runtime, name="book_flight", compensation="cancel_flight")
def book_flight(passenger: str, flight: str) -> str:
    outbox.append(f"flight {flight} booked for {passenger}")
    return f"PNR-{flight}"


@tool(runtime, name="cancel_flight")
def cancel_flight(passenger: str, flight: str, forward_result: str) -> None:
    outbox.append(f"flight booking {forward_result} cancelled")


@tool(runtime, name="book_hotel", compensation="cancel_hotel")
def book_hotel(passenger: str, hotel: str, nights: int) -> str:
    outbox.append(f"{nights} nights at {hotel} booked")
    return f"H-{hotel}"


@tool(runtime, name="cancel_hotel")
def cancel_hotel(hotel: str, forward_result: str) -> None:
    outbox.append(f"hotel booking {forward_result} cancelled")


@tool(runtime, name="charge_card")
def charge_card(passenger: str, amount_cents: int) -> str:
    raise PaymentDeclined(f"card of {passenger} declined for {amount_cents / 100:.2f} USD")


def trip_flow() -> str:
    try:
        with runtime.agent_session(name="trip_booking", input_payload={"passenger": "ada"}) as session:
            book_flight("ada", "LH400")
            book_hotel("ada", "Adlon", nights=2)
            charge_card("ada", 84_000)
    except PaymentDeclined as exc:
        print(f"trip_booking failed as the agent saw it: {type(exc).__name__}: {exc}")
    return session.run_id


# --- a budget: a research agent capped at $0.05 ----------------------------------------------------------


@tool(runtime, name="web_search", cost=0.01)
def web_search(query: str) -> list[str]:
    outbox.append(f"searched {query!r}")
    return [f"result for {query}"]


def research_flow() -> str:
    try:
        with runtime.agent_session(name="research", budget_limit=0.05) as session:
            for step in range(10):
                web_search(f"agent durability, part {step}")
                # the agent's own model call, priced from the genai-prices table ($2.50 / $10 per MTok)
                session.record_usage(model="gpt-4o", input_tokens=3_000, output_tokens=800)
    except BudgetExceededError as exc:
        print(f"research stopped: {exc}")
    return session.run_id


# --- resume: a run that failed at its last step continues where it stopped ------------------------------

smtp = {"down": True}


@tool(runtime, name="fetch_subscribers")
def fetch_subscribers(list_id: str) -> list[str]:
    outbox.append(f"fetched subscribers of {list_id}")
    return ["ada@example.com", "bo@example.com"]


@tool(runtime, name="render_issue")
def render_issue(issue: int) -> str:
    outbox.append(f"rendered issue {issue}")
    return f"<h1>Issue {issue}</h1>"


@tool(runtime, name="send_batch")
def send_batch(recipients: list[str], html: str) -> int:
    if smtp["down"]:
        raise ConnectionError("SMTP 421: service not available, try later")
    outbox.append(f"sent issue to {len(recipients)} subscribers")
    return len(recipients)


def newsletter_agent() -> int:
    return send_batch(fetch_subscribers("weekly"), render_issue(42))


# --- a model-driven agent loop: the openai client, auto-instrumented -----------------------------------


def model_agent(client: Any, model: str) -> str:
    """The classic tool-calling loop: ask, run the tools the model asks for, answer."""
    tools = [{"type": "function", "function": {
        "name": "send_email", "description": "Send an email.",
        "parameters": {"type": "object", "properties": {"to": {"type": "string"},
                       "subject": {"type": "string"}, "body": {"type": "string"}}},
    }}]  # fmt: skip
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Tell ops@example.com the build is green."}]
    for _ in range(5):
        reply = client.chat.completions.create(model=model, messages=messages, tools=tools)
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return str(message.content)
        for call in message.tool_calls:
            result = send_email(**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return "gave up"


def model_flow() -> tuple[str, str] | None:
    try:
        import openai
    except ImportError:
        print("  (skipped: pip install 'agent-relay[llm]' for the model-driven agent)")
        return None
    from agent_relay import instrument, uninstrument
    from agent_relay.testing import FakeLLMServer

    instrument(runtime)
    local = (
        None
        if os.environ.get("OPENAI_API_KEY")
        else FakeLLMServer(
            tool_arguments={"to": "ops@example.com", "subject": "Build", "body": "green"}
        ).start()
    )
    client = openai.OpenAI(base_url=local.openai_url, api_key="local") if local else openai.OpenAI()
    model = os.environ.get("AGENT_RELAY_DEMO_MODEL", "gpt-4o-mini")
    try:
        with runtime.agent_session(name="model_agent") as session:
            session.set_output(model_agent(client, model))
        sent = len(local.requests) if local else None
        with runtime.agent_session(name="model_agent", replay=True, replay_run_id=session.run_id) as replay:
            replay.set_output(model_agent(client, model))
        if local:
            print(f"  model requests: {sent} while recording, {len(local.requests) - sent} during the replay")
    finally:
        uninstrument()
        if local:
            local.stop()
    return session.run_id, replay.run_id


# --- approval: a refund over $100 waits for a person -----------------------------------------------


@tool(runtime, name="issue_refund", requires_approval=lambda args: args["amount_usd"] > 100)
def issue_refund(customer: str, amount_usd: int) -> str:
    outbox.append(f"refunded ${amount_usd} to {customer}")
    return f"R-{amount_usd}"


def support_agent() -> list[str]:
    return [issue_refund("ada", 40), issue_refund("grace", 250)]


def approval_flow() -> str:
    try:
        with runtime.agent_session(name="refunds") as first:
            support_agent()
    except ApprovalRequiredError as waiting:
        print(f"  the run stopped: {waiting.tool_name} awaits approval (call {waiting.call_id[:12]}...)")
        url = runtime.ledger.db.url.render_as_string(hide_password=False)
        command = ["agent-relay", "--db", url, "approve", waiting.call_id, "--by", "demo-operator"]
        print(f"  a person approves it: {' '.join(command[:3])} ... approve <call_id> --by demo-operator")
        argv = [sys.executable, "-m", "agent_relay.cli", *command[1:]]
        decided = subprocess.run(argv, capture_output=True, text=True, check=True)
        print(f"  {decided.stdout.strip()}")
    with runtime.agent_session(name="refunds", resume_run_id=first.run_id) as resumed:
        resumed.set_output(support_agent())
    return resumed.run_id


def _cell(value: Any, width: int = 60) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def print_ledger(run_id: str) -> None:
    query = sa.text(
        "SELECT seq, tool_name, phase, status, attempts, error_type, output, "
        "substr(idempotency_key, 1, 12) AS key "
        "FROM tool_calls WHERE run_id = :run_id ORDER BY seq"
    )
    with runtime.ledger.engine.connect() as conn:
        rows = conn.execute(query, {"run_id": run_id}).all()
        run = conn.execute(
            sa.text("SELECT status, output, cost_usd, trace_id FROM agent_runs WHERE run_id = :r"),
            {"r": run_id},
        ).one()
    header = ("seq", "tool", "phase", "status", "attempts", "error", "output", "key")
    table = [header, *[tuple(_cell(v) for v in row) for row in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
    print(f"\nrun {run_id}: {run.status}, cost ${float(run.cost_usd or 0):.6f}, output {_cell(run.output)}")
    print(f"trace id: {run.trace_id}  (look it up in Jaeger / Tempo when exporting over OTLP)")


def main() -> None:
    event = {"to": "user@example.com", "subject": "Hello", "body": "Hi"}
    with runtime.agent_session(name="email_flow", input_payload={"to": event["to"]}) as session:
        result = agent_flow(event)
        session.set_output(result)
    print(f"AgentRelay demo — ledger: {runtime.database}\n")
    print("what the tools did in the world:")
    for line in outbox:
        print(f"  - {line}")
    sends = sum(1 for line in outbox if line.startswith("email"))
    print(f"\nsend_email was called twice with the same arguments and ran {sends} time(s): deduplicated.\n")
    print("ledger rows of this run (SELECT ... FROM tool_calls WHERE run_id = ...):")
    print_ledger(session.run_id)

    print("\n--- saga: a trip whose payment fails ---")
    outbox.clear()
    trip = trip_flow()
    for line in outbox:
        print(f"  - {line}")
    print_ledger(trip)

    print("\n--- budget: research capped at $0.05 ---")
    outbox.clear()
    research = research_flow()
    print(f"  web_search ran {len(outbox)} times before the budget stopped the run")
    print_ledger(research)

    print("\n--- replay: the email run again, served from the ledger ---")
    outbox.clear()
    with runtime.agent_session(name="email_flow", replay=True, replay_run_id=session.run_id) as replay:
        replayed = agent_flow(event)
        replay.set_output(replayed)
    print(f"  tool bodies run during the replay: {len(outbox)}; output identical: {replayed == result}")
    print_ledger(replay.run_id)

    print("\n--- resume: a newsletter run that failed at its last step ---")
    outbox.clear()
    try:
        with runtime.agent_session(name="newsletter") as first:
            newsletter_agent()
    except ConnectionError as exc:
        print(f"  first attempt failed: {exc}")
    smtp["down"] = False
    with runtime.agent_session(name="newsletter", resume_run_id=first.run_id) as resumed:
        resumed.set_output({"sent": newsletter_agent()})
    for line in outbox:
        print(f"  - {line}")
    print_ledger(resumed.run_id)

    print("\n--- a model-driven agent loop (openai client, auto-instrumented) ---")
    runs = model_flow()
    if runs:
        print_ledger(runs[0])

    print("\n--- approval: a refund over $100 waits for a person ---")
    outbox.clear()
    refunds = approval_flow()
    for line in outbox:
        print(f"  - {line}")
    print_ledger(refunds)
    runtime.shutdown()


if __name__ == "__main__":
    main()
