"""A 10-call run killed at 20 random points (``os._exit`` and SIGKILL), resumed each time in a new
process, completes with every side effect exactly once."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.e2e

TOOLS = textwrap.dedent(
    """
    import os, time
    from pathlib import Path
    from agent_relay import AgentRuntime, current_call, tool

    WORLD = Path(os.environ["WORLD"])
    CRASH = os.environ.get("CRASH", "")
    runtime = AgentRuntime(os.environ["LEDGER"])

    def payment_provider(key, i):
        # The outside world, like Stripe: a request carrying an idempotency key it has seen is a no-op.
        seen = WORLD.read_text().split() if WORLD.exists() else []
        if key not in seen:
            with WORLD.open("a") as f:
                f.write(f"{i} {key}\\n")

    def crash(i, where):
        if CRASH == f"{i}:{where}":
            os._exit(3)

    @tool(runtime, idempotent=True)  # safe to re-run: the key goes to the provider
    def charge(i: int) -> str:
        crash(i, "before")
        payment_provider(current_call().idempotency_key, i)
        crash(i, "inside")
        time.sleep(float(os.environ.get("SLOW", "0")))
        return f"ch-{i}"

    def agent():
        out = []
        for i in range(10):
            out.append(charge(i))
            crash(i, "after")
        return out
    """
)

START = textwrap.dedent(
    """
    from ten_calls import agent, runtime
    with runtime.agent_session(name="ten") as session:
        print(session.run_id, flush=True)
        session.set_output(agent())
    """
)

RESUME = textwrap.dedent(
    """
    import sys
    from ten_calls import agent, runtime
    with runtime.agent_session(name="ten", resume_run_id=sys.argv[1]) as session:
        session.set_output(agent())
    """
)

RNG = random.Random(20261125)
EXIT_POINTS = RNG.sample([f"{i}:{w}" for i in range(10) for w in ("before", "inside", "after")], 10)
KILL_DELAYS = [round(RNG.uniform(0.0, 0.5), 3) for _ in range(10)]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(tmp),
        "WORLD": str(tmp / "world.txt"),
        "LEDGER": f"sqlite:///{tmp / 'ledger.db'}",
        **extra,
    }


def _finish_by_resuming(tmp: Path, run_id: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", RESUME, run_id],
        cwd=tmp,
        env=_env(tmp),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr


def _assert_exactly_once(tmp: Path, run_id: str) -> None:
    lines = (tmp / "world.txt").read_text().splitlines()
    assert sorted(int(line.split()[0]) for line in lines) == list(range(10)), lines
    engine = sa.create_engine(f"sqlite:///{tmp / 'ledger.db'}")
    with engine.connect() as conn:
        status, output = conn.exec_driver_sql(
            "SELECT status, output FROM agent_runs WHERE run_id = ?", (run_id,)
        ).one()
        rows = conn.exec_driver_sql(
            "SELECT count(*), min(status), max(status) FROM tool_calls WHERE run_id = ?", (run_id,)
        ).one()
    engine.dispose()
    assert status == "succeeded"
    assert output == '["ch-0","ch-1","ch-2","ch-3","ch-4","ch-5","ch-6","ch-7","ch-8","ch-9"]'
    assert tuple(rows) == (10, "succeeded", "succeeded")


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    (tmp_path / "ten_calls.py").write_text(TOOLS)
    return tmp_path


@pytest.mark.parametrize("point", EXIT_POINTS)
def test_os_exit_then_resume_charges_each_once(tmp: Path, point: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", START],
        cwd=tmp,
        env=_env(tmp, CRASH=point),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 3, proc.stderr
    run_id = proc.stdout.split()[0]
    _finish_by_resuming(tmp, run_id)
    _assert_exactly_once(tmp, run_id)


@pytest.mark.parametrize("delay", KILL_DELAYS)
def test_sigkill_then_resume_charges_each_once(tmp: Path, delay: float) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", START], cwd=tmp, env=_env(tmp, SLOW="0.08"), stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    _finish_by_resuming(tmp, run_id)
    _assert_exactly_once(tmp, run_id)
