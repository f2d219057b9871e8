"""Multi-agent sagas (issue 16): a failing or cancelled parent unwinds the child runs it opened, each where
it came among the parent's calls, latest first; the children end ``compensated``; a child may opt out; a
cancelled parent's children refuse their calls — in this process and in another."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_relay import AgentRuntime, RunCancelledError, tool
from agent_relay import semconv as sc
from agent_relay.testing import SpanCapture
from tests.support import calls_of, run_row


class Declined(Exception):
    pass


def booking(runtime: AgentRuntime, log: list[str]) -> Callable[[str], str]:
    @tool(runtime, compensation="unbook")
    def book(item: str) -> str:
        log.append(f"book {item}")
        return f"b-{item}"

    @tool(runtime)
    def unbook(item: str) -> None:
        log.append(f"unbook {item}")

    return book


def test_a_failing_parent_unwinds_its_children_where_they_came_latest_first(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    log: list[str] = []
    book = booking(runtime, log)
    with pytest.raises(Declined), runtime.agent_session("trip") as parent:
        book("flight")
        with runtime.agent_session("hotels") as first:
            book("hotel-1")
            book("hotel-2")
        book("car")
        with runtime.agent_session("tours") as second:
            book("tour")
        raise Declined("card declined")

    undone = [line for line in log if line.startswith("unbook")]
    assert undone == ["unbook tour", "unbook car", "unbook hotel-2", "unbook hotel-1", "unbook flight"]
    assert parent.status == "compensated" and not parent.compensation_errors
    for child in (first, second):
        row = run_row(runtime, child.run_id)
        assert (row["status"], row["parent_run_id"]) == ("compensated", parent.run_id)
        comp = [c for c in calls_of(runtime, child.run_id) if c["phase"] == "compensation"]
        assert comp and {c["status"] for c in comp} == {"succeeded"}  # recorded in the child's own run
    assert [c["tool_name"] for c in calls_of(runtime, parent.run_id)] == ["book", "book", "unbook", "unbook"]
    # each child's compensations sit under a span of the child's own run, inside the parent's
    unwound = [s for s in spans.session_spans() if s.attributes[sc.RUN_STATUS] == "compensated"]
    child_unwinds = [s for s in unwound if s.attributes.get(sc.PARENT_RUN_ID) == parent.run_id and s.parent]
    assert {s.attributes[sc.RUN_ID] for s in child_unwinds} >= {first.run_id, second.run_id}


def test_a_child_that_opted_out_keeps_its_effects(runtime: AgentRuntime) -> None:
    log: list[str] = []
    book = booking(runtime, log)
    with pytest.raises(Declined), runtime.agent_session("trip") as parent:
        book("flight")
        with runtime.agent_session("newsletter", unwind_with_parent=False) as kept:
            book("subscription")
        with runtime.agent_session("hotels") as undone:
            book("hotel")
        raise Declined("card declined")

    assert [line for line in log if line.startswith("unbook")] == ["unbook hotel", "unbook flight"]
    assert run_row(runtime, kept.run_id)["status"] == "succeeded"
    assert run_row(runtime, kept.run_id)["unwind_with_parent"] in (False, 0)
    assert run_row(runtime, undone.run_id)["status"] == "compensated"
    assert parent.status == "compensated"
    with pytest.raises(ValueError, match="unwind_with_parent"):
        runtime.agent_session("x", unwind_with_parent="no")  # type: ignore[arg-type]


def test_a_child_compensated_by_its_own_failure_is_not_unwound_twice(runtime: AgentRuntime) -> None:
    log: list[str] = []
    book = booking(runtime, log)
    with pytest.raises(Declined), runtime.agent_session("trip") as parent:
        book("flight")
        try:
            with runtime.agent_session("hotels") as child:
                book("hotel")
                raise Declined("no rooms")
        except Declined:
            pass  # the parent carries on without a hotel
        raise Declined("card declined")

    assert log == ["book flight", "book hotel", "unbook hotel", "unbook flight"]
    assert run_row(runtime, child.run_id)["status"] == "compensated"
    assert parent.status == "compensated"


def test_grandchildren_unwind_and_async_sessions_too(runtime: AgentRuntime) -> None:
    log: list[str] = []
    book = booking(runtime, log)

    async def agent() -> None:
        async with runtime.agent_session("trip"):
            book("flight")
            async with runtime.agent_session("city"):
                book("hotel")
                async with runtime.agent_session("museum"):
                    book("ticket")
                book("dinner")
            raise Declined("card declined")

    with pytest.raises(Declined):
        asyncio.run(agent())
    assert [line for line in log if line.startswith("unbook")] == [
        "unbook dinner",
        "unbook ticket",
        "unbook hotel",
        "unbook flight",
    ]
    runs = {row["name"]: row["status"] for row in _runs(runtime)}
    assert runs == {"trip": "compensated", "city": "compensated", "museum": "compensated"}


def test_a_cancelled_parent_refuses_its_childrens_calls_and_unwinds_them(runtime: AgentRuntime) -> None:
    log: list[str] = []
    book = booking(runtime, log)
    with runtime.agent_session("trip") as parent:
        book("flight")
        with runtime.agent_session("cars") as done_before:
            book("car")
        with pytest.raises(RunCancelledError), runtime.agent_session("hotels") as open_child:
            book("hotel")
            runtime.cancel(parent.run_id, reason="user stop")
            book("spa")  # refused at once: its parent, open in this process, was cancelled
        with pytest.raises(RunCancelledError) as refused, runtime.agent_session("tours") as opened_after:
            book("tour")
    assert refused.value.run_id == opened_after.run_id
    assert f"parent run {parent.run_id} was cancelled" in str(refused.value) and "user stop" in str(
        refused.value
    )
    assert log == ["book flight", "book car", "book hotel", "unbook hotel", "unbook car", "unbook flight"]
    assert parent.status == "cancelled"
    assert run_row(runtime, done_before.run_id)["status"] == "compensated"
    assert run_row(runtime, open_child.run_id)["status"] == "cancelled"  # its own saga: not unwound twice
    assert run_row(runtime, opened_after.run_id)["status"] == "cancelled"


CHILD = textwrap.dedent(
    """
    import sys
    from agent_relay import AgentRuntime, RunCancelledError, tool

    url, parent_run_id = sys.argv[1], sys.argv[2]
    runtime = AgentRuntime(url)

    @tool(runtime, compensation="unbook")
    def book(item: str) -> str:
        return "b-" + item

    @tool(runtime)
    def unbook(item: str) -> None:
        raise AssertionError("a compensation ran in the child's process")

    try:
        with runtime.agent_session("remote", parent_run_id=parent_run_id, child_key="req-1") as s:
            print(s.run_id, flush=True)
            book("remote-room")
        print("booked", flush=True)
    except RunCancelledError as exc:
        print("refused:", exc, flush=True)
    runtime.shutdown()
    """
)


def _child_process(tmp_path: Path, url: str, parent_run_id: str) -> tuple[str, str]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, str(script), url, parent_run_id],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    run_id, outcome = done.stdout.strip().splitlines()
    return run_id, outcome


def test_a_child_recorded_by_another_process_is_unwound_from_the_parents(
    runtime: AgentRuntime, database_url: str, tmp_path: Path
) -> None:
    log: list[str] = []
    book = booking(runtime, log)  # the same tools, registered here: their compensations run here
    with pytest.raises(Declined), runtime.agent_session("trip") as parent:
        book("flight")
        remote, outcome = _child_process(tmp_path, database_url, parent.run_id)
        assert outcome == "booked"
        raise Declined("card declined")

    assert log[-2:] == ["unbook remote-room", "unbook flight"]
    assert run_row(runtime, remote)["status"] == "compensated"
    assert [c["tool_name"] for c in calls_of(runtime, remote)] == ["book", "unbook"]


def test_a_remote_child_whose_tools_are_unknown_here_is_named_not_skipped(
    runtime: AgentRuntime, database_url: str, tmp_path: Path
) -> None:
    @tool(runtime, compensation="refund")
    def pay(amount: int) -> str:
        return "p"

    @tool(runtime)
    def refund(amount: int) -> None:
        pass

    with pytest.raises(Declined) as caught, runtime.agent_session("trip") as parent:
        pay(5)
        remote, _ = _child_process(tmp_path, database_url, parent.run_id)
        raise Declined("card declined")

    assert parent.status == "compensation_failed"
    (failure,) = parent.compensation_errors
    assert failure.run_id == remote and "'book'" in str(failure.error)
    assert f"child run {remote}" in caught.value.__notes__[0]
    assert run_row(runtime, remote)["status"] == "compensation_failed"
    assert [c["tool_name"] for c in calls_of(runtime, parent.run_id)] == ["pay", "refund"]


def test_a_child_in_another_process_refuses_its_calls_once_the_parent_is_cancelled(
    runtime: AgentRuntime, database_url: str, tmp_path: Path
) -> None:
    log: list[str] = []
    book = booking(runtime, log)
    with runtime.agent_session("trip") as parent:
        book("flight")
        runtime.cancel(parent.run_id, reason="drain")
        remote, outcome = _child_process(tmp_path, database_url, parent.run_id)
    assert outcome.startswith("refused:") and f"parent run {parent.run_id} was cancelled: drain" in outcome
    assert calls_of(runtime, remote) == []
    assert run_row(runtime, remote)["status"] == "cancelled"
    assert parent.status == "cancelled" and log == ["book flight", "unbook flight"]


def test_compensating_a_crashed_parent_unwinds_its_children(runtime: AgentRuntime) -> None:
    log: list[str] = []
    book = booking(runtime, log)
    with runtime.agent_session("trip") as parent:
        book("flight")
        with runtime.agent_session("hotels") as child:
            book("hotel")
    runtime.ledger.finish_run(parent.run_id, status="failed")  # (as a process that died mid-run leaves it)
    recovered = runtime.compensate(parent.run_id)
    assert recovered.status == "compensated"
    assert log[-2:] == ["unbook hotel", "unbook flight"]
    assert run_row(runtime, child.run_id)["status"] == "compensated"
    again = runtime.compensate(parent.run_id)  # twice is safe: nothing runs again
    assert log.count("unbook hotel") == 1 and again.compensation_errors == []


def _runs(runtime: AgentRuntime) -> list[dict[str, object]]:
    import sqlalchemy as sa

    from agent_relay.ledger.schema import agent_runs

    with runtime.ledger.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(agent_runs))]
