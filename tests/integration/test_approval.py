"""Approval before a tool runs (issue 16): the call is recorded ``awaiting_approval``, the run stops without
unwinding and without holding a worker, a person decides (in Python or with the CLI, from another
process), and the resumed run serves what was done and then runs — or refuses — the decided call."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_relay import (
    AgentRuntime,
    ApprovalRejectedError,
    ApprovalRequiredError,
    ConfigurationError,
    SessionStateError,
    tool,
)
from tests.support import calls_of, run_row

Tools = dict[str, Callable[..., Any]]


def _tools(runtime: AgentRuntime, log: list[str]) -> Tools:
    @tool(runtime, compensation="release_seat")
    def hold_seat(flight: str) -> str:
        log.append(f"hold {flight}")
        return "seat-12A"

    @tool(runtime)
    def release_seat(flight: str) -> None:
        log.append(f"release {flight}")

    @tool(runtime, requires_approval=lambda args: args["amount"] > 100)
    def pay(amount: int) -> str:
        log.append(f"pay {amount}")
        return f"paid {amount}"

    return {"hold": hold_seat, "pay": pay}


def _trip(tools: Tools) -> str:
    tools["hold"]("LH400")
    tools["pay"](20)  # under the threshold: runs at once
    return str(tools["pay"](900))  # over it: a person decides


@pytest.fixture
def runtime(database_url: str) -> Iterator[AgentRuntime]:
    rt = AgentRuntime(database_url)
    yield rt
    rt.shutdown()


def _stopped_for_approval(runtime: AgentRuntime, tools: Tools) -> tuple[str, str]:
    """Run the trip until it stops at the payment over the threshold; (run id, that call's id)."""
    with (
        pytest.raises(ApprovalRequiredError) as caught,
        runtime.agent_session(name="trip") as session,
    ):
        _trip(tools)
    return session.run_id, caught.value.call_id


def test_a_call_over_the_threshold_stops_the_run_until_approved_then_runs_once(database_url: str) -> None:
    log: list[str] = []
    first = AgentRuntime(database_url)
    run_id, call_id = _stopped_for_approval(first, _tools(first, log))
    assert log == ["hold LH400", "pay 20"]  # nothing unwound, the big payment not made
    assert run_row(first, run_id)["status"] == "awaiting_approval"
    waiting = [c for c in calls_of(first, run_id) if c["call_id"] == call_id]
    assert [(c["status"], c["arguments"]) for c in waiting] == [("awaiting_approval", {"amount": 900})]
    first.shutdown()  # (the process may exit: no worker is held)

    exporter = InMemorySpanExporter()
    second = AgentRuntime(database_url, span_exporters=[exporter])
    tools = _tools(second, log)
    second.approve(call_id, by="alice@example.com", note="known customer")
    with second.agent_session(name="trip", resume_run_id=run_id) as session:
        assert _trip(tools) == "paid 900"
    assert session.status == "succeeded"
    assert log == ["hold LH400", "pay 20", "pay 900"]  # earlier calls served, the approved one ran once
    [row] = [c for c in calls_of(second, run_id) if c["call_id"] == call_id]
    assert (row["status"], row["decided_by"], row["decision_note"]) == (
        "succeeded",
        "alice@example.com",
        "known customer",
    )
    assert row["decided_at"] is not None and row["output"] == "paid 900"
    second.shutdown()
    [span] = [
        s
        for s in exporter.get_finished_spans()
        if s.name == "execute_tool pay" and (s.attributes or {}).get("agent_relay.approval.decision")
    ]
    attributes = span.attributes or {}
    assert attributes["agent_relay.approval.decision"] == "approved"
    assert attributes["agent_relay.approval.decided_by"] == "alice@example.com"


def test_a_rejected_call_raises_in_the_resumed_agent_which_may_handle_it(runtime: AgentRuntime) -> None:
    log: list[str] = []
    tools = _tools(runtime, log)
    run_id, call_id = _stopped_for_approval(runtime, tools)
    runtime.reject(call_id, by="bob", note="over the card's limit")

    with runtime.agent_session(name="trip", resume_run_id=run_id) as session:
        with pytest.raises(ApprovalRejectedError, match="rejected by bob: over the card's limit"):
            _trip(tools)
        tools["pay"](90)  # the agent goes on with a smaller payment
    assert session.status == "succeeded"
    assert log == ["hold LH400", "pay 20", "pay 90"]  # the rejected payment never ran
    [row] = [c for c in calls_of(runtime, run_id) if c["call_id"] == call_id]
    assert (row["status"], row["decided_by"]) == ("rejected", "bob")


def test_an_unhandled_rejection_unwinds_the_run(runtime: AgentRuntime) -> None:
    log: list[str] = []
    tools = _tools(runtime, log)
    run_id, call_id = _stopped_for_approval(runtime, tools)
    runtime.reject(call_id, by="bob")
    with (
        pytest.raises(ApprovalRejectedError),
        runtime.agent_session(name="trip", resume_run_id=run_id) as session,
    ):
        _trip(tools)
    assert session.status == "compensated"
    assert log == ["hold LH400", "pay 20", "release LH400"]


def test_an_undecided_call_stops_the_resumed_run_again_and_decisions_are_checked(
    runtime: AgentRuntime,
) -> None:
    log: list[str] = []
    tools = _tools(runtime, log)
    run_id, call_id = _stopped_for_approval(runtime, tools)
    with (
        pytest.raises(ApprovalRequiredError),
        runtime.agent_session(name="trip", resume_run_id=run_id),
    ):
        _trip(tools)
    assert log == ["hold LH400", "pay 20"]
    with pytest.raises(ConfigurationError, match=r"approve\(by=\.\.\.\) must name who decides"):
        runtime.approve(call_id, by="")
    runtime.approve(call_id, by="carol")
    with pytest.raises(SessionStateError, match="is approved, not awaiting_approval"):
        runtime.reject(call_id, by="dave")
    with pytest.raises(SessionStateError, match="does not exist"):
        runtime.approve("no-such-call", by="carol")


def test_requires_approval_must_be_a_flag_or_a_predicate(runtime: AgentRuntime) -> None:
    with pytest.raises(
        ConfigurationError, match=r"requires_approval=\.\.\.\) must be True, False or a function"
    ):
        tool(runtime, requires_approval="yes")  # type: ignore[arg-type]


def test_approve_with_the_cli_from_another_process_then_resume(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    log: list[str] = []
    runtime = AgentRuntime(url)
    tools = _tools(runtime, log)
    run_id, call_id = _stopped_for_approval(runtime, tools)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "agent_relay.cli", "--db", url, *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)

    waiting = cli("runs", "--status", "awaiting_approval", "--json")
    assert waiting.returncode == 0, waiting.stderr
    assert run_id in waiting.stdout
    nobody = cli("approve", call_id, "--by", " ")  # the CLI checks who decides as the runtime does
    assert nobody.returncode == 1 and "must name who decides" in nobody.stderr
    done = cli("approve", call_id, "--by", "ops-oncall")
    assert done.returncode == 0 and "approved by ops-oncall" in done.stdout
    again = cli("reject", call_id, "--by", "ops-oncall")
    assert again.returncode == 1 and "is approved, not awaiting_approval" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    with runtime.agent_session(name="trip", resume_run_id=run_id):
        assert _trip(tools) == "paid 900"
    assert log == ["hold LH400", "pay 20", "pay 900"]
    runtime.shutdown()
