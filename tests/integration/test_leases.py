"""Leases on claims: a running body's process renews the lease on its call's pending row; a worker that
finds a claim whose lease ran out (its owner, on any host, gone or frozen) treats the call as in doubt —
it runs again only for an ``idempotent=True`` tool, else ``CallInDoubtError`` says how to settle it —
instead of waiting on it; a live owner renewing its lease is waited for, never taken over.

The owners here are real worker processes on the same ledger (SQLite file or PostgreSQL database),
frozen with SIGSTOP: alive to ``kill(pid, 0)``, so only the lease can tell that they stopped."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, CallInDoubtError, ConfigurationError, LedgerOptions, current_call, tool
from agent_relay.ledger.schema import tool_call_attempts
from tests.support import calls_of, run_row

LEASE = LedgerOptions(lease_s=1)

WORKER = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from agent_relay import AgentRuntime, LedgerOptions, tool

    url, here, idempotent, hold_s = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "1", float(sys.argv[4])
    runtime = AgentRuntime(url, ledger_options=LedgerOptions(lease_s=1))

    def log(line):
        with (here / "bodies").open("a") as f:
            f.write(f"{line}\\n")

    @tool(runtime, idempotent=idempotent, compensation="refund")
    def charge(order: str) -> str:
        log(f"worker {order}")  # the claim is committed: the body runs
        deadline = time.monotonic() + hold_s
        while time.monotonic() < deadline and not (here / "release").exists():
            time.sleep(0.02)
        return f"charged {order} by the worker"

    @tool(runtime)
    def refund(order: str) -> None:
        log(f"worker refund {order}")

    try:
        with runtime.agent_session(name="pay") as session:
            print(session.run_id, flush=True)
            print("result:", charge("o-1"), flush=True)
    except Exception as exc:
        print("error:", type(exc).__name__, exc, flush=True)
    runtime.shutdown()
    """
)


class Worker:
    """A worker process running ``charge("o-1")`` in a new run of the ledger at ``url``; its body holds
    until ``release()`` (or ``hold_s``)."""

    def __init__(self, tmp: Path, url: str, *, idempotent: bool, hold_s: float = 600.0) -> None:
        self.dir = tmp
        script = tmp / "worker.py"
        script.write_text(WORKER)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        args = [sys.executable, str(script), url, str(tmp), "1" if idempotent else "0", str(hold_s)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp)
        assert self.proc.stdout is not None
        self.run_id = self.proc.stdout.readline().strip()
        assert self.run_id, "the worker did not start its run"
        self._wait_for(lambda: self.bodies() == ["worker o-1"])  # its claim is committed, its body runs

    def bodies(self) -> list[str]:
        path = self.dir / "bodies"
        return path.read_text().splitlines() if path.exists() else []

    def _wait_for(self, done: Any) -> None:
        deadline = time.monotonic() + 60
        while not done():
            assert self.proc.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, "the worker's body never started"
            time.sleep(0.02)

    def freeze(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def release(self) -> str:
        """Let its body end (thawed, if frozen); what it printed after its run id."""
        (self.dir / "release").touch()
        os.kill(self.proc.pid, signal.SIGCONT)
        out, _ = self.proc.communicate(timeout=60)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
        self.proc.wait(timeout=60)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(url: str, **options: Any) -> Worker:
        worker = Worker(tmp_path, url, **options)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()  # (thawed and killed, whatever the test did)


def _resumer(url: str, ran: list[str], *, idempotent: bool) -> tuple[AgentRuntime, Any]:
    runtime = AgentRuntime(url, ledger_options=LEASE, wait_timeout_s=120)

    @tool(runtime, idempotent=idempotent, compensation="refund")
    def charge(order: str) -> str:
        ran.append(order)
        return f"charged {order} by the resumer"

    @tool(runtime)
    def refund(order: str) -> None:
        ran.append(f"refund {order}")

    return runtime, charge


def _attempts(runtime: AgentRuntime, call_id: str) -> list[tuple[int, str, str | None]]:
    a = tool_call_attempts.c
    query = sa.select(a.attempt, a.status, a.owner).where(a.call_id == call_id).order_by(a.attempt)
    with runtime.ledger.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(query)]  # type: ignore[misc]


def _owner(worker: Worker) -> str:
    return f"{socket.gethostname()}:{worker.proc.pid}"


def test_a_frozen_owners_idempotent_call_runs_again_exactly_once(
    database_url: str, worker_factory: Any
) -> None:
    worker = worker_factory(database_url, idempotent=True)
    worker.freeze()  # alive on this host, but its lease is no longer renewed
    ran: list[str] = []
    runtime, charge = _resumer(database_url, ran, idempotent=True)
    try:
        with runtime.agent_session(name="pay", resume_run_id=worker.run_id) as session:
            result = charge("o-1")
        assert result == "charged o-1 by the resumer" and ran == ["o-1"]
        assert session.status == "succeeded"
        [row] = calls_of(runtime, worker.run_id)
        assert (row["status"], row["attempts"], row["owner"], row["output"]) == (
            "succeeded", 2, runtime.owner, "charged o-1 by the resumer",
        )  # fmt: skip
        # the frozen worker's try is kept, in doubt: its side effect may have happened
        assert _attempts(runtime, row["call_id"]) == [(1, "in_doubt", _owner(worker))]
        assert runtime.ledger.calls.leases.held() == []  # the outcome is written: nothing to renew

        # thawed, the worker's body ends: its outcome cannot replace the new owner's, and its session
        # stops without unwinding the run (no refund) or writing the run's end over the new owner's
        out = worker.release()
        assert f"error: ClaimLostError tool call 'charge' (call_id {row['call_id']})" in out, out
        assert f"was taken over by {runtime.owner}" in out, out
        [after] = calls_of(runtime, worker.run_id)
        assert (after["status"], after["owner"], after["output"]) == (
            "succeeded", runtime.owner, "charged o-1 by the resumer",
        )  # fmt: skip
        assert worker.bodies() == ["worker o-1"] and ran == ["o-1"]  # each body ran once, none refunded
        assert run_row(runtime, worker.run_id)["status"] == "succeeded"
    finally:
        runtime.shutdown()


def test_a_frozen_owners_call_that_is_not_idempotent_is_in_doubt(
    database_url: str, worker_factory: Any
) -> None:
    worker = worker_factory(database_url, idempotent=False)
    worker.freeze()
    ran: list[str] = []
    runtime, charge = _resumer(database_url, ran, idempotent=False)
    try:
        with (
            pytest.raises(CallInDoubtError) as caught,
            runtime.agent_session(name="pay", resume_run_id=worker.run_id) as session,
        ):
            charge("o-1")
        [row] = calls_of(runtime, worker.run_id)
        error = caught.value
        assert (error.call_id, error.owner, error.run_id) == (row["call_id"], _owner(worker), worker.run_id)
        message = str(error)
        assert "lease" in message and f'runtime.settle_call("{row["call_id"]}", "succeeded"' in message
        assert f"agent-relay settle {row['call_id']} succeeded --output JSON" in message
        assert ran == [] and session.status == "in_doubt"
        assert run_row(runtime, worker.run_id)["status"] == "in_doubt"
        # nothing was taken over: the row is still the worker's, pending
        assert (row["status"], row["attempts"], row["owner"]) == ("pending", 1, _owner(worker))

        # settled from a shell as the message says (the payment provider says it happened), the run
        # resumes to its end
        settled = _cli(
            database_url, "settle", row["call_id"], "succeeded", "--output", '"charged o-1 by the worker"'
        )
        assert settled.returncode == 0 and "settled succeeded" in settled.stdout, settled.stderr
        again_cli = _cli(database_url, "settle", row["call_id"], "failed")
        assert again_cli.returncode == 1 and "is succeeded, not pending" in again_cli.stderr
        assert len(again_cli.stderr.strip().splitlines()) == 1  # one line, no traceback
        with runtime.agent_session(name="pay", resume_run_id=worker.run_id) as again:
            assert charge("o-1") == "charged o-1 by the worker"
        assert again.status == "succeeded" and ran == []
    finally:
        runtime.shutdown()


def test_a_live_owner_renewing_its_lease_is_waited_for(database_url: str, worker_factory: Any) -> None:
    # the body lasts several lease periods; the worker's process renews its lease all along
    worker = worker_factory(database_url, idempotent=True, hold_s=5)
    ran: list[str] = []
    runtime, charge = _resumer(database_url, ran, idempotent=True)
    try:
        with runtime.agent_session(name="pay", resume_run_id=worker.run_id):
            result = charge("o-1")  # waits on the worker's claim, then is served its outcome
        assert result == "charged o-1 by the worker" and ran == []
        [row] = calls_of(runtime, worker.run_id)
        assert (row["status"], row["attempts"], row["owner"]) == ("succeeded", 1, _owner(worker))
        assert _attempts(runtime, row["call_id"]) == []  # never taken over
        out = worker.release()
        assert "result: charged o-1 by the worker" in out, out
        assert worker.bodies() == ["worker o-1"]
    finally:
        runtime.shutdown()


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "agent_relay.cli", "--db", url, *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("succeeded", "--output", "w-1"), "--output must be JSON"),
        (("failed", "--output", "1"), "--output goes with succeeded"),
        (("succeeded",), "does not exist; only a pending call can be settled"),
    ],
)
def test_settle_from_a_shell_refuses_in_one_line(tmp_path: Path, args: tuple[str, ...], error: str) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    AgentRuntime(url).shutdown()  # (an empty ledger)
    done = _cli(url, "settle", "0" * 32, *args)
    assert done.returncode == 1 and error in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def _lease_of(runtime: AgentRuntime) -> tuple[Any, str]:
    info = current_call()
    assert info is not None
    row = runtime.ledger.get_call(info.call_id)
    assert row is not None
    return row.lease_expires_at, row.owner


def _renewed(runtime: AgentRuntime) -> list[Any]:
    """Inside a body: its row's lease, then the lease after it changed (a renewal)."""
    first, owner = _lease_of(runtime)
    assert first is not None and owner == runtime.owner
    deadline = time.monotonic() + 60
    while (now := _lease_of(runtime)[0]) == first:
        assert time.monotonic() < deadline, "the lease was never renewed"
        time.sleep(0.05)
    return [first, now]


def test_a_running_body_has_its_lease_renewed(database_url: str) -> None:
    runtime = AgentRuntime(database_url, ledger_options=LEASE)

    @tool(runtime)
    def long_sync() -> list[str]:
        return [str(t) for t in _renewed(runtime)]

    @tool(runtime)
    async def long_async() -> list[str]:
        return [str(t) for t in await asyncio.to_thread(_renewed, runtime)]

    async def agent() -> tuple[list[str], list[str]]:
        return long_sync(), await long_async()

    try:
        with runtime.agent_session(name="long") as session:
            sync_leases, async_leases = asyncio.run(agent())
        for first, renewed in (sync_leases, async_leases):
            assert renewed > first  # the same call's lease, moved on while its body ran
        rows = calls_of(runtime, session.run_id)
        assert [(r["tool_name"], r["status"], r["attempts"]) for r in rows] == [
            ("long_sync", "succeeded", 1),
            ("long_async", "succeeded", 1),
        ]
        assert runtime.ledger.calls.leases.held() == []
    finally:
        runtime.shutdown()


@pytest.mark.parametrize("bad", [0, -1.5, math.nan, math.inf, "30", True, None])
def test_a_lease_must_be_a_positive_number_of_seconds(tmp_path: Path, bad: Any) -> None:
    ledger = tmp_path / "ledger.db"
    with pytest.raises(ConfigurationError, match=r"lease_s must be a number of seconds > 0 .*lease_s=30"):
        AgentRuntime(f"sqlite:///{ledger}", ledger_options=LedgerOptions(lease_s=bad))
    assert not ledger.exists()  # refused before anything was made
