"""Four worker processes resuming one budgeted run share its budget: 200 tries in all, of calls whose cost
is known before they run, and together they never spend more than the limit plus one call's reservation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.e2e

LIMIT = Decimal("1.00")
LARGEST_RESERVATION = Decimal("0.05")
WORKERS, TRIES = 4, 50

WORKER = textwrap.dedent(
    """
    import os, random, sys, time
    from decimal import Decimal
    from agent_relay import AgentRuntime, BudgetReservationError, tool

    runtime = AgentRuntime(os.environ["LEDGER"])
    world = os.environ["WORLD"]

    def happen(line):
        # O_APPEND writes of one short line are atomic: every side effect leaves one line
        fd = os.open(world, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, (line + "\\n").encode())
        os.close(fd)
        time.sleep(0.005)  # (a call takes a moment: the workers' calls overlap)

    @tool(runtime, cost=Decimal("0.03"))  # a constant cost: reserved exactly
    def charge(worker: int, item: int) -> str:
        happen(f"charge {worker} {item} 0.03")
        return "ok"

    @tool(runtime, cost_estimate=Decimal("0.05"), cost=lambda result: Decimal(result))
    def lookup(worker: int, item: int) -> str:  # at most 0.05, known only when it ends
        cost = str(Decimal(random.randint(1, 5)) / 100)
        happen(f"lookup {worker} {item} {cost}")
        return cost

    if sys.argv[1] == "start":
        with runtime.agent_session(name="fleet", budget_limit=os.environ["LIMIT"]) as session:
            print(session.run_id, flush=True)
            os._exit(0)  # the run stays open for the workers to resume
    worker, run_id = int(sys.argv[2]), sys.argv[3]
    refused = 0
    with runtime.agent_session(name="fleet", resume_run_id=run_id) as session:
        # every worker has resumed the run before any calls (so none finds it ended), then all go at once
        open(f"{world}.ready.{worker}", "w").close()
        deadline = time.monotonic() + 120
        while len([p for p in os.listdir(os.path.dirname(world)) if ".ready." in p]) < int(os.environ["N"]):
            assert time.monotonic() < deadline, "the other workers did not start"
            time.sleep(0.01)
        for item in range(int(os.environ["TRIES"])):
            try:
                (charge if item % 2 else lookup)(worker, item)
            except BudgetReservationError:
                refused += 1
    runtime.shutdown()
    print(refused, flush=True)
    """
)


def test_four_workers_sharing_one_budget_overshoot_by_at_most_one_reservation(
    database_url: str, tmp_path: Path
) -> None:
    world = tmp_path / "world" / "effects.txt"
    world.parent.mkdir()
    env = {
        **os.environ,
        "LEDGER": database_url,
        "WORLD": str(world),
        "LIMIT": str(LIMIT),
        "N": str(WORKERS),
        "TRIES": str(TRIES),
    }
    start = subprocess.run(
        [sys.executable, "-c", WORKER, "start"], env=env, capture_output=True, text=True, timeout=120
    )
    assert start.returncode == 0, start.stderr
    run_id = start.stdout.strip()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, "work", str(n), run_id],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(WORKERS)
    ]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    refused = sum(int(out.split()[-1]) for out, _ in outputs)

    effects = world.read_text().splitlines()
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT tool_name, arguments, status, cost_usd FROM tool_calls WHERE run_id = :r"),
                {"r": run_id},
            ).all()
            run = conn.execute(
                sa.text("SELECT cost_usd, reserved_usd, budget_limit_usd FROM agent_runs WHERE run_id = :r"),
                {"r": run_id},
            ).one()
    finally:
        engine.dispose()
    # every try either ran (one side effect, one succeeded row) or was refused before it ran (neither)
    assert len(effects) == len(rows) and all(row.status == "succeeded" for row in rows)
    assert len(effects) + refused == WORKERS * TRIES
    workers_that_ran = {
        json.loads(r.arguments)["worker"] if isinstance(r.arguments, str) else r.arguments["worker"]
        for r in rows
    }
    assert refused > 0 and len(workers_that_ran) > 1  # the budget bound them all
    spent = sum(Decimal(str(row.cost_usd)) for row in rows)
    assert spent == sum(Decimal(line.split()[-1]) for line in effects)
    overshoot = spent - LIMIT
    print(f"fleet: {len(rows)} ran, {refused} refused, spent {spent} of {LIMIT}: overshoot {overshoot}")
    assert overshoot <= LARGEST_RESERVATION
    assert Decimal(str(run.cost_usd)) == spent and Decimal(str(run.reserved_usd)) == 0
    assert Decimal(str(run.budget_limit_usd)) == LIMIT
