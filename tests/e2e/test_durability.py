"""A process that dies right after a tool call returned leaves that call's row committed, in either
durability mode; one that dies in the middle of a call leaves it in doubt (``strict``: resume refuses to
run a non-idempotent tool again) or not recorded at all (``outcome``: resume runs it again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from agent_relay.ledger import agent_runs, tool_calls

pytestmark = pytest.mark.e2e

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from agent_relay import AgentRuntime, tool

    runtime = AgentRuntime(sys.argv[1], durability=sys.argv[3])

    @tool(runtime, name="charge_card")
    def charge_card(card: str, amount: int) -> dict:
        with open(sys.argv[4], "a") as world:
            world.write("charged\\n")  # the side effect
        if sys.argv[2] == "mid-call":
            os._exit(17)
        return {"charge_id": "ch_1", "amount": amount}

    with runtime.agent_session(name="checkout") as session:
        print(session.run_id, flush=True)
        charge_card("4242", 1999)
        if sys.argv[2] == "exit":
            os._exit(17)  # no finally blocks, no atexit, no flush: the process is simply gone
        print("returned", flush=True)
        time.sleep(60)  # wait to be SIGKILLed
    """
)


def _ledger_after(url: str, run_id: str) -> tuple[list[dict], dict]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        calls = [
            dict(r)
            for r in conn.execute(sa.select(tool_calls).where(tool_calls.c.run_id == run_id)).mappings()
        ]
        run = dict(conn.execute(sa.select(agent_runs).where(agent_runs.c.run_id == run_id)).mappings().one())
    engine.dispose()
    return calls, run


def _assert_committed(url: str, run_id: str) -> None:
    calls, run = _ledger_after(url, run_id)
    (row,) = calls
    assert row["status"] == "succeeded"
    assert row["output"] == {"charge_id": "ch_1", "amount": 1999}
    assert row["arguments"] == {"card": "4242", "amount": 1999}
    assert run["status"] == "running"  # the session never got to record its end


def _child(tmp_path: Path, how: str, durability: str) -> list[str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    return [sys.executable, "-c", CHILD, url, how, durability, str(tmp_path / "world.txt")]


@pytest.mark.parametrize("durability", ["strict", "outcome"])
def test_os_exit_right_after_a_call_keeps_its_row(tmp_path: Path, durability: str) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    proc = subprocess.run(_child(tmp_path, "exit", durability), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 17, proc.stderr
    _assert_committed(url, proc.stdout.split()[0])


@pytest.mark.parametrize("durability", ["strict", "outcome"])
def test_sigkill_right_after_a_call_keeps_its_row(tmp_path: Path, durability: str) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    proc = subprocess.Popen(_child(tmp_path, "kill", durability), stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "returned"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    _assert_committed(url, run_id)


RESUME = textwrap.dedent(
    """
    import sys
    from agent_relay import AgentRuntime, CallInDoubtError, tool

    runtime = AgentRuntime(sys.argv[1], durability=sys.argv[3])

    @tool(runtime, name="charge_card")
    def charge_card(card: str, amount: int) -> dict:
        with open(sys.argv[4], "a") as world:
            world.write("charged\\n")
        return {"charge_id": "ch_2", "amount": amount}

    try:
        with runtime.agent_session(name="checkout", resume_run_id=sys.argv[2]):
            print(charge_card("4242", 1999)["charge_id"])
    except CallInDoubtError:
        print("in doubt")
    """
)


@pytest.mark.parametrize(
    ("durability", "row_left", "on_resume", "charges"),
    [
        ("strict", "pending", "in doubt", 1),  # known to be in doubt: not run blindly again
        ("outcome", None, "ch_2", 2),  # nothing recorded: resume runs it again (at-least-once)
    ],
)
def test_a_crash_in_the_middle_of_a_call(
    tmp_path: Path, durability: str, row_left: str | None, on_resume: str, charges: int
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    world = tmp_path / "world.txt"
    proc = subprocess.run(
        _child(tmp_path, "mid-call", durability), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 17, proc.stderr
    run_id = proc.stdout.split()[0]
    calls, _ = _ledger_after(url, run_id)
    assert [c["status"] for c in calls] == ([row_left] if row_left else [])
    resumed = subprocess.run(
        [sys.executable, "-c", RESUME, url, run_id, durability, str(world)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == on_resume
    assert world.read_text().splitlines() == ["charged"] * charges
