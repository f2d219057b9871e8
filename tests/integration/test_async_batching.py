"""Async tool calls in flight together share their ledger commits, and each is still durable: its claim
is committed before its body runs and its outcome before it returns."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agent_relay import AgentRuntime, current_call, tool
from tests.support import calls_of


def _commits(runtime: AgentRuntime) -> list[str]:
    """Record the COMMITs the ledger's hot-path connection makes from now on."""
    seen: list[str] = []
    conn = runtime.ledger._hot._connection()  # type: ignore[union-attr]
    conn.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
    return seen


@pytest.mark.parametrize("durability", ["strict", "outcome"])
def test_gathered_calls_share_commits_and_each_is_durable(tmp_path: Path, durability: str) -> None:
    path = tmp_path / "ledger.db"
    runtime = AgentRuntime(f"sqlite:///{path}", durability=durability)
    seen_by_body: dict[int, list[str]] = {}

    @tool(runtime)
    async def fetch(n: int) -> int:
        call = current_call()
        assert call is not None
        with sqlite3.connect(path) as other:  # another connection, as another process would read
            rows = other.execute(
                "SELECT status FROM tool_calls WHERE call_id = ?", (call.call_id,)
            ).fetchall()
        seen_by_body[n] = [status for (status,) in rows]
        await asyncio.sleep(0)
        return n * 10

    async def agent() -> tuple[list[int], str, list[str]]:
        async with runtime.agent_session(name="fan-out") as session:
            commits = _commits(runtime)
            results = await asyncio.gather(*(fetch(n) for n in range(50)))
            committed = list(commits)
            rows = calls_of(runtime, session.run_id)  # read before the session's own end is written
            assert [r["status"] for r in rows] == ["succeeded"] * 50  # every outcome committed
        return list(results), session.run_id, committed

    try:
        results, run_id, committed = asyncio.run(agent())
        rows = calls_of(runtime, run_id)
    finally:
        runtime.shutdown()
    assert results == [n * 10 for n in range(50)]
    assert sorted(r["output"] for r in rows) == [n * 10 for n in range(50)]
    # each body saw its own pending row committed (strict), or no row yet (outcome: written at the end)
    assert seen_by_body == {n: (["pending"] if durability == "strict" else []) for n in range(50)}
    # one call per commit would be 100 (strict) or 50 (outcome) commits
    assert len(committed) <= 10, committed


def test_one_call_at_a_time_writes_at_once(tmp_path: Path) -> None:
    runtime = AgentRuntime(f"sqlite:///{tmp_path / 'ledger.db'}")

    @tool(runtime)
    async def fetch(n: int) -> int:
        return n

    async def agent() -> list[str]:
        async with runtime.agent_session(name="sequential"):
            commits = _commits(runtime)
            for n in range(5):
                assert await fetch(n) == n
                assert len(commits) == 2 * (n + 1)  # claim and outcome, each committed, no waiting
            return commits

    try:
        asyncio.run(agent())
    finally:
        runtime.shutdown()


def test_a_call_cancelled_while_its_claim_is_written_is_recorded_as_failed(tmp_path: Path) -> None:
    runtime = AgentRuntime(f"sqlite:///{tmp_path / 'ledger.db'}")
    ran: list[int] = []

    @tool(runtime)
    async def fetch(n: int) -> int:
        ran.append(n)
        await asyncio.sleep(0.01)
        return n

    async def agent() -> tuple[str, list[BaseException | int]]:
        async with runtime.agent_session(name="cancelled") as session:
            tasks = [asyncio.create_task(fetch(n)) for n in range(5)]
            await asyncio.sleep(0)  # every task has started; 1-4 wait for their shared claim
            tasks[3].cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
            assert await fetch(3) == 3  # the key is free again: the call runs now
        return session.run_id, outcomes

    try:
        run_id, outcomes = asyncio.run(agent())
        rows = {r["arguments"]["n"]: r for r in calls_of(runtime, run_id)}
    finally:
        runtime.shutdown()
    assert isinstance(outcomes[3], asyncio.CancelledError)
    assert [o for i, o in enumerate(outcomes) if i != 3] == [0, 1, 2, 4]
    assert sorted(ran) == [0, 1, 2, 3, 4] and ran.count(3) == 1  # its body ran once: when called again
    assert {n: r["status"] for n, r in rows.items()} == dict.fromkeys(range(5), "succeeded")
    assert rows[3]["attempts"] == 2  # the cancelled try was recorded (failed), then run again
