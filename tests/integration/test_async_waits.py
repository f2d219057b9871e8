"""An async call that waits never blocks its event loop: while it waits on a row another worker holds, or
on an identical call in flight in its own session, the loop's other tasks keep running.

A heartbeat task ticks every 10 ms while the call waits (about a second). A loop blocked by the wait
(``time.sleep`` between polls, a lock taken without awaiting) ticks once or not at all in that time. We
assert at least 20 ticks and no gap over 0.5 s: an idle machine gives about 90 ticks and gaps near 10 ms,
and a busy CI machine stays well inside both.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from agent_relay import AgentRuntime, tool
from tests.support import calls_of, run_row

HOLD_S = 1.0  # how long the call that is waited on runs, from the moment the wait begins
MIN_TICKS = 20
MAX_GAP_S = 0.5

_T = TypeVar("_T")


@dataclasses.dataclass
class Heartbeat:
    """Ticks of a task that sleeps 10 ms at a time on the loop, and the window the wait lasted."""

    ticks: list[float] = dataclasses.field(default_factory=list)
    start: float = 0.0
    end: float = 0.0

    def during_wait(self) -> list[float]:
        return [t for t in self.ticks if self.start <= t <= self.end]

    def largest_gap(self) -> float:
        moments = [self.start, *self.during_wait(), self.end]
        return max(b - a for a, b in itertools.pairwise(moments))

    def check(self) -> None:
        ticks, gap = len(self.during_wait()), self.largest_gap()
        summary = f"{ticks} ticks in a {self.end - self.start:.3f} s wait, largest gap {gap:.3f} s"
        assert ticks >= MIN_TICKS, f"the event loop was blocked while the call waited: {summary}"
        assert gap < MAX_GAP_S, f"the event loop stalled while the call waited: {summary}"


async def while_ticking(wait: Callable[[], Awaitable[_T]], heartbeat: Heartbeat) -> _T:
    """Await ``wait()`` while a heartbeat task ticks on the same loop."""
    stop = asyncio.Event()

    async def beat() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.01)
            heartbeat.ticks.append(time.monotonic())

    beating = asyncio.create_task(beat())
    await asyncio.sleep(0.05)  # the heartbeat is going before the wait begins
    heartbeat.start = time.monotonic()
    try:
        return await wait()
    finally:
        heartbeat.end = time.monotonic()
        stop.set()
        await beating


def release_later(release: threading.Event, released_at: list[float]) -> threading.Timer:
    """Set ``release`` after HOLD_S, from a thread of its own (not from the loop being tested: a blocked
    loop must not also hold up the release, or a failure would be a hang until the wait timeout)."""

    def go() -> None:
        released_at.append(time.monotonic())
        release.set()

    timer = threading.Timer(HOLD_S, go)
    timer.daemon = True
    timer.start()
    return timer


def _wait_for_pending(runtime: AgentRuntime, run_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = calls_of(runtime, run_id)
        if rows and rows[0]["status"] == "pending":
            return rows[0]
        time.sleep(0.01)
    raise AssertionError(f"the holder's call never showed a pending row in run {run_id}")


def test_waiting_on_a_row_another_worker_holds_lets_the_loop_run(database_url: str) -> None:
    runtime = AgentRuntime(database_url, wait_timeout_s=10)
    release = threading.Event()
    released_at: list[float] = []
    bodies: list[int] = []

    @tool(runtime)
    async def slow(x: int) -> str:
        bodies.append(x)
        await asyncio.to_thread(release.wait, 10)  # the holder's own loop stays free too
        return f"slow-{x}"

    # The holder: its own thread, its own loop, its own session; it runs slow(1) and holds its row.
    run_ids: queue.Queue[str] = queue.Queue()
    held: dict[str, Any] = {}

    async def holder() -> None:
        async with runtime.agent_session(name="r") as session:
            run_ids.put(session.run_id)
            held["result"] = await slow(1)

    def hold() -> None:
        try:
            asyncio.run(holder())
        except BaseException as exc:  # re-raised by the test, not lost in the thread
            held["error"] = exc

    # The resumer: the same run, on this thread's loop; its slow(1) finds the row pending (held by a live
    # worker: this very process) and polls until the holder's outcome serves it.
    heartbeat = Heartbeat()

    async def resumer(run_id: str) -> str:
        async with runtime.agent_session(name="r", resume_run_id=run_id):
            release_later(release, released_at)
            return await while_ticking(lambda: slow(1), heartbeat)

    worker = threading.Thread(target=hold, name="holder")
    try:
        worker.start()
        try:
            run_id = run_ids.get(timeout=10)
        except queue.Empty:
            raise AssertionError(f"the holder's session did not start: {held.get('error')!r}") from None
        pending = _wait_for_pending(runtime, run_id)
        served = asyncio.run(resumer(run_id))
        worker.join(10)
        rows = calls_of(runtime, run_id)
    finally:
        release.set()
        worker.join(10)
        runtime.shutdown()

    assert "error" not in held, held.get("error")
    assert not worker.is_alive()
    assert held["result"] == "slow-1"
    assert served == held["result"]  # served from the holder's row
    assert bodies == [1]  # the body ran once, in the holder
    assert pending["owner"] == rows[0]["owner"]  # held by this process: a live worker, so it was waited on
    assert [(r["status"], r["output"], r["attempts"]) for r in rows] == [("succeeded", "slow-1", 1)]
    assert released_at and heartbeat.end >= released_at[0]  # it waited until the holder was released
    heartbeat.check()


def test_waiting_on_an_identical_call_in_the_same_session_lets_the_loop_run(database_url: str) -> None:
    runtime = AgentRuntime(database_url, wait_timeout_s=10)
    release = threading.Event()
    released_at: list[float] = []
    bodies: list[int] = []

    @tool(runtime)
    async def slow(x: int) -> str:
        bodies.append(x)
        await asyncio.to_thread(release.wait, 10)
        return f"slow-{x}"

    heartbeat = Heartbeat()

    async def agent() -> tuple[str, list[str]]:
        async with runtime.agent_session(name="r") as session:
            release_later(release, released_at)
            # the second call waits on the first's in-flight marker, then is served its result
            results = await while_ticking(lambda: asyncio.gather(slow(1), slow(1)), heartbeat)
        return session.run_id, list(results)

    try:
        run_id, results = asyncio.run(agent())
        rows = calls_of(runtime, run_id)
    finally:
        release.set()
        runtime.shutdown()

    assert results == ["slow-1", "slow-1"]
    assert bodies == [1]
    assert [(r["status"], r["output"], r["attempts"]) for r in rows] == [("succeeded", "slow-1", 1)]
    assert released_at and heartbeat.end >= released_at[0]
    heartbeat.check()


class RunRowLock:
    """Another client holding the write lock on a run's row (SQLite: the database's write lock) until
    ``release``; on PostgreSQL the row lock a reservation's ``UPDATE`` waits for."""

    def __init__(self, runtime: AgentRuntime, run_id: str) -> None:
        engine = runtime.ledger.engine
        self._conn: Any
        if engine.dialect.name == "sqlite":
            self._conn = sqlite3.connect(
                engine.url.database or "", isolation_level=None, check_same_thread=False
            )
            self._conn.execute("BEGIN IMMEDIATE")
        else:
            self._conn = engine.connect()
            self._conn.exec_driver_sql(f"SELECT 1 FROM agent_runs WHERE run_id = '{run_id}' FOR UPDATE")
        self.released_at: list[float] = []

    def release_later(self) -> threading.Timer:
        def go() -> None:
            self.released_at.append(time.monotonic())
            self._conn.rollback()

        timer = threading.Timer(HOLD_S, go)
        timer.daemon = True
        timer.start()
        return timer

    def close(self) -> None:
        self._conn.close()


def _budgeted_lookup(runtime: AgentRuntime) -> tuple[Callable[[int], Awaitable[str]], list[int]]:
    """An async tool that reserves 0.1 before it runs and costs 0.05, and the arguments its body ran with."""
    bodies: list[int] = []

    @tool(runtime, cost_estimate=Decimal("0.1"), cost=Decimal("0.05"))
    async def lookup(x: int) -> str:
        bodies.append(x)
        return f"found-{x}"

    return lookup, bodies


def _run_locked(
    runtime: AgentRuntime, agent: Callable[[], Awaitable[tuple[str, str]]], locks: list[RunRowLock]
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """Run ``agent`` (its result and run id); then its run's row and calls, the locks closed."""
    try:
        result, run_id = asyncio.run(agent())
        return result, run_row(runtime, run_id), calls_of(runtime, run_id)
    finally:
        for lock in locks:
            lock.close()
        runtime.shutdown()


def test_a_budgeted_call_whose_reservation_waits_on_the_ledger_lets_the_loop_run(database_url: str) -> None:
    """A budgeted run reserves each call's estimate on its row before the call runs: a round trip that
    waits while another client holds the row. It is taken off the loop: the heartbeat ticks meanwhile,
    and the call runs once the row is free."""
    runtime = AgentRuntime(database_url)
    lookup, bodies = _budgeted_lookup(runtime)

    heartbeat = Heartbeat()
    locks: list[RunRowLock] = []

    async def agent() -> tuple[str, str]:
        async with runtime.agent_session(name="budgeted", budget_limit="1") as session:
            assert await lookup(0) == "found-0"  # (the run's cancel poll is done: only the reservation waits)
            lock = RunRowLock(runtime, session.run_id)
            locks.append(lock)
            lock.release_later()
            return await while_ticking(lambda: lookup(1), heartbeat), session.run_id

    result, run, rows = _run_locked(runtime, agent, locks)
    assert result == "found-1" and bodies == [0, 1]
    assert [(r["status"], r["cost_usd"]) for r in rows] == [("succeeded", Decimal("0.05"))] * 2
    assert (run["status"], run["cost_usd"], run["reserved_usd"]) == ("succeeded", Decimal("0.1"), 0)
    assert locks[0].released_at and heartbeat.end >= locks[0].released_at[0]  # it waited for the row
    heartbeat.check()


def test_a_call_cancelled_while_its_reservation_waits_reserves_nothing_and_can_run_again(
    database_url: str,
) -> None:
    """Cancelled while its reservation waits off the loop: the reservation still ends (it was on its
    way), then is given back; nothing of the call is recorded, and the same call later runs."""
    runtime = AgentRuntime(database_url)
    lookup, bodies = _budgeted_lookup(runtime)

    locks: list[RunRowLock] = []

    async def agent() -> tuple[str, str]:
        async with runtime.agent_session(name="budgeted", budget_limit="1") as session:
            await lookup(0)
            lock = RunRowLock(runtime, session.run_id)
            locks.append(lock)
            waiting = asyncio.create_task(lookup(1))
            await asyncio.sleep(0.2)  # its reservation is waiting for the row
            waiting.cancel()
            lock.release_later()
            with contextlib.suppress(asyncio.CancelledError):
                await waiting
            assert waiting.cancelled()
            return await lookup(1), session.run_id

    result, run, rows = _run_locked(runtime, agent, locks)
    assert result == "found-1" and bodies == [0, 1]  # the cancelled try never ran its body
    assert [(r["status"], r["output"], r["attempts"]) for r in rows] == [
        ("succeeded", "found-0", 1),
        ("succeeded", "found-1", 1),  # the cancelled try left no row behind
    ]
    assert (run["cost_usd"], run["reserved_usd"]) == (Decimal("0.1"), 0)  # its reservation was given back
