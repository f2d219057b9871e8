"""Several worker processes resuming one run at once: each call runs exactly once, the run completes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.e2e

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from agent_relay import AgentRuntime, tool

    runtime = AgentRuntime(os.environ["LEDGER"])
    world = os.environ["WORLD"]

    @tool(runtime)
    def charge(item: int) -> str:
        # O_APPEND writes of one short line are atomic: every charge that happens leaves one line
        fd = os.open(world, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{item} {os.getpid()}\\n".encode())
        os.close(fd)
        time.sleep(0.005)
        return f"ch-{item}"

    if sys.argv[1] == "start":
        with runtime.agent_session(name="batch") as session:
            print(session.run_id, flush=True)
            os._exit(0)  # the first worker dies before charging anything
    with runtime.agent_session(name="batch", resume_run_id=sys.argv[2]) as session:
        session.set_output([charge(i) for i in range(60)])
    runtime.shutdown()
    """
)


def test_four_workers_resuming_one_60_call_run_charge_each_item_once(
    database_url: str, tmp_path: Path
) -> None:
    env = {**os.environ, "LEDGER": database_url, "WORLD": str(tmp_path / "charges.txt")}
    start = subprocess.run(
        [sys.executable, "-c", WORKER, "start"], env=env, capture_output=True, text=True, timeout=120
    )
    assert start.returncode == 0, start.stderr
    run_id = start.stdout.strip()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, "resume", run_id],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [(w.wait(timeout=300), w.communicate()[1]) for w in workers]

    charges = (tmp_path / "charges.txt").read_text().splitlines()
    items = sorted(int(line.split()[0]) for line in charges)
    assert items == list(range(60)), f"double or missing charges: {items}"
    assert any(code == 0 for code, _ in results), [err[-2000:] for _, err in results]
    # every worker took part or was served; none ran a call another had run
    engine = sa.create_engine(database_url)
    with engine.connect() as conn:
        count, done = conn.execute(
            sa.text(
                "SELECT count(*), sum(CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END) FROM tool_calls "
                "WHERE run_id = :r"
            ),
            {"r": run_id},
        ).one()
        status = conn.execute(
            sa.text("SELECT status FROM agent_runs WHERE run_id = :r"), {"r": run_id}
        ).scalar()
    engine.dispose()
    assert (count, done, status) == (60, 60, "succeeded")
