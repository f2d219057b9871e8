"""A process that dies right after a tool call returned leaves that call's row committed."""

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

    runtime = AgentRuntime(sys.argv[1])

    @tool(runtime, name="charge_card")
    def charge_card(card: str, amount: int) -> dict:
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


def test_os_exit_right_after_a_call_keeps_its_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, url, "exit"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 17, proc.stderr
    _assert_committed(url, proc.stdout.split()[0])


def test_sigkill_right_after_a_call_keeps_its_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, url, "kill"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "returned"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    proc.stdout.close()
    _assert_committed(url, run_id)
