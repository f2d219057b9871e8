"""Cancelling a run from outside (issue 16): its next call is refused before it runs, its saga unwinds what
it did, and it ends ``cancelled`` — from another thread, or from another process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_relay import AgentRuntime, RunCancelledError, SessionStateError, UnknownRunError, tool
from tests.support import calls_of, run_row


@pytest.fixture
def runtime(database_url: str) -> Iterator[AgentRuntime]:
    rt = AgentRuntime(database_url)
    yield rt
    rt.shutdown()


def _trip_tools(runtime: AgentRuntime, log: list[str]) -> dict[str, object]:
    @tool(runtime, compensation="cancel_hotel")
    def book_hotel(city: str) -> str:
        log.append(f"book {city}")
        return "h-1"

    @tool(runtime)
    def cancel_hotel(city: str) -> None:
        log.append(f"unbook {city}")

    @tool(runtime)
    def pay(amount: int) -> str:
        log.append(f"pay {amount}")
        return "p-1"

    return {"book": book_hotel, "pay": pay}


def test_a_run_cancelled_from_another_thread_refuses_its_next_call_and_unwinds(runtime: AgentRuntime) -> None:
    log: list[str] = []
    tools = _trip_tools(runtime, log)
    booked, cancelled = threading.Event(), threading.Event()
    outcome: list[BaseException] = []

    def agent() -> None:
        try:
            with runtime.agent_session(name="trip") as session:
                runs.append(session.run_id)
                tools["book"]("Paris")  # type: ignore[operator]
                booked.set()
                cancelled.wait(30)
                tools["pay"](100)  # type: ignore[operator]
        except BaseException as exc:
            outcome.append(exc)

    runs: list[str] = []
    worker = threading.Thread(target=agent)
    worker.start()
    assert booked.wait(30)
    runtime.cancel(runs[0], reason="the user pressed stop")
    cancelled.set()
    worker.join(30)

    [error] = outcome
    assert isinstance(error, RunCancelledError) and "the user pressed stop" in str(error)
    assert error.tool_name == "pay"
    assert log == ["book Paris", "unbook Paris"]  # pay never ran; the booking was undone
    row = run_row(runtime, runs[0])
    assert (row["status"], row["cancel_reason"]) == ("cancelled", "the user pressed stop")
    assert row["cancel_requested_at"] is not None
    assert [c["tool_name"] for c in calls_of(runtime, runs[0])] == ["book_hotel", "cancel_hotel"]


def test_a_cancelled_run_is_unwound_even_when_the_agent_swallows_the_error(runtime: AgentRuntime) -> None:
    log: list[str] = []
    tools = _trip_tools(runtime, log)
    with runtime.agent_session(name="trip") as session:
        tools["book"]("Rome")  # type: ignore[operator]
        runtime.cancel(session.run_id)
        with pytest.raises(RunCancelledError):
            tools["pay"](5)  # type: ignore[operator]
    assert session.status == "cancelled"
    assert log == ["book Rome", "unbook Rome"]


def test_only_a_running_or_stopped_run_can_be_cancelled(runtime: AgentRuntime) -> None:
    with runtime.agent_session(name="done") as session:
        pass
    with pytest.raises(SessionStateError, match="is succeeded; only a running or stopped run"):
        runtime.cancel(session.run_id)
    with pytest.raises(UnknownRunError):
        runtime.cancel("no-such-run")
    assert run_row(runtime, session.run_id)["cancel_requested_at"] is None


AGENT = textwrap.dedent(
    """
    import sys, time
    from agent_relay import AgentRuntime, RunCancelledError, tool

    runtime = AgentRuntime(sys.argv[1])

    @tool(runtime, compensation="unreserve")
    def reserve(seat: str) -> str:
        return seat

    @tool(runtime)
    def unreserve(seat: str) -> None:
        pass

    @tool(runtime, deduplicate=False)
    def poll_queue() -> int:
        return 0

    try:
        with runtime.agent_session(name="worker") as session:
            print(session.run_id, flush=True)
            reserve("12A")
            while True:  # until the run is cancelled from outside
                poll_queue()
                time.sleep(0.01)
    except RunCancelledError as exc:
        print("refused:", exc.tool_name, flush=True)
    runtime.shutdown()
    """
)


def test_a_run_cancelled_with_the_cli_stops_in_the_process_running_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, str(script), url], stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    rt = AgentRuntime(url)
    try:
        while not any(c["tool_name"] == "poll_queue" for c in calls_of(rt, run_id)):
            time.sleep(0.01)  # (until the agent is in its loop)
        cli = [
            sys.executable,
            "-m",
            "agent_relay.cli",
            "--db",
            url,
            "cancel",
            run_id[:8],
            "--reason",
            "drain",
        ]
        done = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "cancel requested" in done.stdout
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "refused: poll_queue" in out
        row = run_row(rt, run_id)
        assert (row["status"], row["cancel_reason"]) == ("cancelled", "drain")
        calls = calls_of(rt, run_id)
        assert calls[-1]["tool_name"] == "unreserve" and calls[-1]["status"] == "succeeded"
        again = subprocess.run(cli, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
        assert again.returncode == 1 and "is cancelled; only a running or stopped run" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1  # one line, no traceback
    finally:
        proc.kill()
        rt.shutdown()
