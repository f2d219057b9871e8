"""Async tool calls in flight together share their ledger commits, and each is still durable: its claim
is committed before its body runs and its outcome before it returns."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, current_call, tool
from agent_relay.batching import batcher_for
from agent_relay.errors import LedgerError
from agent_relay.ledger import tool_calls
from agent_relay.ledger.records import CallRecord, Held
from agent_relay.ledger.sqlite_calls import SqliteCalls
from tests.support import calls_of


class Commits:
    """The ledger's commits of ``tool_calls`` writes from now on: on SQLite, the COMMITs of its hot-path
    connection; on a server, the transactions a statement trigger saw write the table (its own row rolls
    back with a transaction that does, so only commits count), whichever connections made them."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self._engine = runtime.ledger.engine
        self._seen: list[str] | None = None
        backend = runtime.ledger.calls.backend
        if isinstance(backend, SqliteCalls):
            seen: list[str] = []
            # (the writes go on the connection that never waits, or on the other when the lock is taken)
            for conn in (backend.connection(), backend.no_wait_connection()):
                conn.set_trace_callback(lambda sql: seen.append(sql) if sql == "COMMIT" else None)
            self._seen = seen
            return
        with self._engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE test_commits (xid bigint PRIMARY KEY)")
            conn.exec_driver_sql(
                "CREATE FUNCTION test_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "INSERT INTO test_commits VALUES (pg_current_xact_id()::text::bigint) "
                "ON CONFLICT DO NOTHING; RETURN NULL; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER test_commit AFTER INSERT OR UPDATE ON tool_calls "
                "FOR EACH STATEMENT EXECUTE FUNCTION test_commit()"
            )

    def __len__(self) -> int:
        if self._seen is not None:
            return len(self._seen)
        with self._engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM test_commits").scalar_one())


@pytest.mark.parametrize("durability", ["strict", "outcome"])
def test_gathered_calls_share_commits_and_each_is_durable(database_url: str, durability: str) -> None:
    runtime = AgentRuntime(database_url, durability=durability)
    seen_by_body: dict[int, list[str]] = {}

    @tool(runtime)
    async def fetch(n: int) -> int:
        call = current_call()
        assert call is not None
        with runtime.ledger.engine.connect() as other:  # another connection, as another process reads
            rows = other.execute(
                sa.select(tool_calls.c.status).where(tool_calls.c.call_id == call.call_id)
            ).all()
        seen_by_body[n] = [status for (status,) in rows]
        await asyncio.sleep(0)
        return n * 10

    async def agent() -> tuple[list[int], str, int]:
        async with runtime.agent_session(name="fan-out") as session:
            commits = Commits(runtime)
            results = await asyncio.gather(*(fetch(n) for n in range(50)))
            committed = len(commits)
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
    # one call per commit would be 100 (strict) or 50 (outcome) commits (the reads above commit nothing)
    assert 1 <= committed <= 10, committed


def test_one_call_at_a_time_writes_at_once(database_url: str) -> None:
    runtime = AgentRuntime(database_url)

    @tool(runtime)
    async def fetch(n: int) -> int:
        return n

    async def agent() -> None:
        async with runtime.agent_session(name="sequential"):
            commits = Commits(runtime)
            for n in range(5):
                assert await fetch(n) == n
                assert len(commits) == 2 * (n + 1)  # claim and outcome, each committed, no waiting

    try:
        asyncio.run(agent())
    finally:
        runtime.shutdown()


def test_a_call_cancelled_while_its_claim_is_written_is_recorded_as_failed(database_url: str) -> None:
    runtime = AgentRuntime(database_url)
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


def test_a_failing_write_in_a_batch_fails_only_its_own_call(database_url: str) -> None:
    runtime = AgentRuntime(database_url)

    def record(run_id: str, n: int) -> CallRecord:
        return CallRecord(
            run_id=run_id,
            call_id=uuid.uuid4().hex,
            seq=n,
            tool_name="fetch",
            phase="forward",
            idempotency_key=f"{n:064x}",
            arguments={"n": n},
            owner="test:1",
            started_ns=time.time_ns(),
        )

    try:
        with runtime.agent_session(name="batch") as session:
            first, second = record(session.run_id, 1), record(session.run_id, 2)
            orphan = record("no-such-run", 3)  # no such run: the foreign key refuses its row
            claims, _ = runtime.ledger.calls.write_batch([first, orphan, second], [])
            rows = calls_of(runtime, session.run_id)
    finally:
        runtime.shutdown()
    assert claims[0] == Held(1) and claims[2] == Held(1)
    assert isinstance(claims[1], LedgerError)
    assert "could not claim a call of tool 'fetch'" in str(claims[1])
    assert [(r["seq"], r["status"]) for r in rows] == [(1, "pending"), (2, "pending")]


class WriteLock:
    """Another connection holding the ledger's writes: SQLite's write lock (``BEGIN IMMEDIATE``), or on a
    server a lock on ``tool_calls`` every insert waits for."""

    def __init__(self, runtime: AgentRuntime) -> None:
        engine = runtime.ledger.engine
        self._sqlite: sqlite3.Connection | None = None
        self._server: sa.Connection | None = None
        if engine.dialect.name == "sqlite":
            self._sqlite = sqlite3.connect(str(engine.url.database), isolation_level=None)
            self._sqlite.execute("BEGIN IMMEDIATE")
        else:
            self._server = engine.connect()
            self._server.exec_driver_sql("LOCK TABLE tool_calls IN SHARE MODE")

    def release(self) -> None:
        if self._sqlite is not None:
            self._sqlite.execute("ROLLBACK")
            self._sqlite.close()
        if self._server is not None:
            self._server.rollback()
            self._server.close()


def test_the_loop_runs_other_tasks_while_a_call_waits_for_its_write(database_url: str) -> None:
    runtime = AgentRuntime(database_url)

    @tool(runtime)
    async def fetch(n: int) -> int:
        return n

    async def agent() -> tuple[str, int, bool]:
        async with runtime.agent_session(name="heartbeat") as session:
            batcher = batcher_for(runtime.ledger.calls)
            assert batcher is not None
            beats = [0]

            async def heartbeat() -> None:
                while True:
                    beats[0] += 1
                    await asyncio.sleep(0.001)

            ticking = asyncio.create_task(heartbeat())
            lock = WriteLock(runtime)
            try:
                call = asyncio.create_task(fetch(1))
                while batcher.batches < 1:  # its claim is with the writer's thread, held by the lock
                    await asyncio.sleep(0.001)
                before = beats[0]
                while beats[0] < before + 20:  # the heartbeat goes on meanwhile (a blocked loop: never)
                    await asyncio.sleep(0.001)
                waited = not call.done()  # (the claim is still held up: the loop ran without it)
            finally:
                lock.release()
            assert await call == 1
            ticking.cancel()
        return session.run_id, beats[0] - before, waited

    try:
        run_id, beats, waited = asyncio.run(agent())
        rows = calls_of(runtime, run_id)
    finally:
        runtime.shutdown()
    assert waited and beats >= 20
    assert [(r["arguments"], r["status"], r["output"]) for r in rows] == [({"n": 1}, "succeeded", 1)]
