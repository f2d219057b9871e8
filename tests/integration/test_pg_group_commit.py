"""Sync calls from several threads share PostgreSQL commits (group commit): the writes queued behind a
commit in flight go together in the next one, each record still gets its own result (a claim another row
holds is ``Found`` for that call only, a row the server refuses fails that call only), and a thread on
its own writes at once."""

from __future__ import annotations

import contextvars
import datetime as dt
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, tool
from agent_relay.errors import LedgerError
from agent_relay.keys import call_id
from agent_relay.ledger import LedgerStore
from agent_relay.ledger.connection import utc
from agent_relay.ledger.group import GroupCommit
from agent_relay.ledger.records import CallRecord, Claim, Found, Held
from agent_relay.states import CallStatus
from tests.support import calls_of, run_row

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _new_run(store: LedgerStore) -> str:
    run_id = str(uuid.uuid4())
    store.insert_run(
        run_id=run_id, name="group", status="running", mode="live", started_at=dt.datetime.now(dt.UTC)
    )
    return run_id


def _record(run_id: str, n: int, owner: str = "test-host:1") -> CallRecord:
    key = f"{n:064x}"
    return CallRecord(
        run_id=run_id, call_id=call_id(run_id, "forward", key), seq=n, tool_name="charge", phase="forward",
        idempotency_key=key, arguments={"n": n}, owner=owner, started_ns=time.time_ns(),
    )  # fmt: skip


def _until(condition: object, what: str) -> None:
    """Poll ``condition()`` (threads get there in their own time; a minute without it fails)."""
    deadline = time.monotonic() + 60
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _waiting_inserts(engine: sa.Engine) -> int:
    query = sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE '%INSERT INTO tool_calls%'"
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _group(store: LedgerStore) -> GroupCommit:
    group = store.calls.group
    assert group is not None  # a server ledger groups its threads' writes
    return group


def test_writes_queued_behind_a_commit_share_the_next_and_each_gets_its_own_result(database_url: str) -> None:
    store = LedgerStore(database_url)
    store.open()
    run_id = _new_run(store)
    store.calls.claim(_record(run_id, 3, owner="other-host:1"))  # another worker holds call 3's key
    store.calls.claim(finished := _record(run_id, 9))
    finished.status, finished.output, finished.ended_ns = CallStatus.SUCCEEDED, "done", time.time_ns()
    group = _group(store)
    locker = sa.create_engine(database_url)
    results: dict[int, Claim | LedgerError | None] = {}
    records: dict[int, CallRecord] = {}

    def start(n: int) -> None:
        # (call 7 names no run: the foreign key refuses its row)
        records[n] = record = _record(run_id, n) if n != 7 else _record("no-such-run", n)
        try:
            results[n] = store.calls.start(record)
        except LedgerError as err:
            results[n] = err

    def finish() -> None:
        store.calls.finish(finished)
        results[9] = None

    threads = [threading.Thread(target=start, args=(n,)) for n in (1, 2, 3, 7)] + [
        threading.Thread(target=finish)
    ]
    try:
        with locker.connect() as conn:
            conn.exec_driver_sql("LOCK TABLE tool_calls IN SHARE MODE")  # every write waits for it
            # three writes go at once: a caller's own, alone, and a batch of one for each of the group's
            # two writer threads (each free when its record came)
            leaders = [threading.Thread(target=start, args=(n,)) for n in (0, 8, 5)]
            for n, leader in enumerate(leaders, start=1):
                leader.start()
                _until(lambda n=n: _waiting_inserts(locker) == n, f"claim {n} to wait at the server")
            for t in threads:
                t.start()
            _until(lambda: group.waiting == len(threads), "the other writes to queue behind them")
            conn.rollback()  # the lock goes: the first three claims commit, then the rest together
        for t in [*leaders, *threads]:
            t.join()
        rows = {r.seq: r for r in store.list_calls(run_id)}
    finally:
        locker.dispose()
        store.dispose()
    assert group.shared == len(threads)  # the five queued writes went in one transaction
    assert results[0] == results[8] == results[5] == results[1] == results[2] == Held(1)
    assert isinstance(results[3], Found) and results[3].owner == "other-host:1"  # that call only
    assert isinstance(results[7], LedgerError) and results[7].run_id == "no-such-run"  # refused: only it
    assert results[9] is None
    assert {seq: row.status for seq, row in rows.items()} == {
        0: "pending", 1: "pending", 2: "pending", 3: "pending", 5: "pending", 8: "pending", 9: "succeeded"
    }  # fmt: skip
    assert rows[3].owner == "other-host:1"
    # a queued claim's lease was stamped on its own thread and encoded with it: the row holds the lease
    # the record says (the one its renewals start from), and no encoding outlives the wait
    for n in (0, 1, 2, 5, 8):
        lease_ns = records[n].lease_until_ns
        assert lease_ns is not None and rows[n].lease_expires_at == utc(lease_ns)
    assert all(r.encoded is None for r in [*records.values(), finished])


def _in_threads(share: Callable[[int], None], count: int) -> None:
    """``share(0)`` .. ``share(count - 1)``, each on a thread of its own in this context (the session's:
    a new thread starts without it), until all have ended."""
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(share, t)) for t in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_thread_on_its_own_writes_at_once_and_threads_record_every_call_once(database_url: str) -> None:
    runtime = AgentRuntime(database_url)
    ran: list[int] = []

    @tool(runtime)
    def charge(n: int) -> int:
        ran.append(n)
        return n * 10

    def share(first: int) -> None:
        for n in range(first, 200, 8):
            assert charge(n) == n * 10

    try:
        group = runtime.ledger.calls.group
        assert group is not None
        with runtime.agent_session(name="threads") as session:
            for n in range(5):
                charge(n)
            alone = group.shared  # one thread: every write alone, at once
            _in_threads(share, 8)
        rows = calls_of(runtime, session.run_id)
        writers = group.writer_threads
    finally:
        runtime.shutdown()
    assert alone == 0
    assert writers and not any(t.is_alive() for t in writers)  # shutdown ended the group's writer threads
    assert group.writer_threads == ()
    assert sorted(ran) == list(range(200))  # the first five were served again, not run again
    assert sorted(r["output"] for r in rows) == [n * 10 for n in range(200)]
    assert {r["status"] for r in rows} == {"succeeded"} and {r["attempts"] for r in rows} == {1}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX only")
def test_a_forked_child_groups_its_threads_writes_with_writer_threads_of_its_own(database_url: str) -> None:
    """A process forked after its threads shared commits (a pre-forking server): the parent's writer
    threads are not in the child, whose threads' calls are still each written once, sharing commits."""
    runtime = AgentRuntime(database_url)

    @tool(runtime)
    def charge(n: int) -> int:
        return n * 10

    def share_from(base: int) -> Callable[[int], None]:
        def share(first: int) -> None:
            for n in range(base + first, base + 80, 8):
                assert charge(n) == n * 10

        return share

    try:
        with runtime.agent_session(name="parent") as parent:
            _in_threads(share_from(0), 8)
        group = runtime.ledger.calls.group
        assert group is not None and group.writer_threads  # the parent's threads queued: writers run
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only if every call came back right and its writes were shared
            code = 1
            signal.alarm(120)  # (a child whose threads wait forever is killed: the parent sees SIGALRM)
            try:
                before = group.shared  # (the parent's count, inherited)
                with runtime.agent_session(name="child") as child:
                    _in_threads(share_from(1000), 8)
                rows = calls_of(runtime, child.run_id)
                ok = sorted(r["output"] for r in rows) == [n * 10 for n in range(1000, 1080)]
                ok = ok and {r["status"] for r in rows} == {"succeeded"}
                code = 0 if ok and group.shared > before and group.writer_threads else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        parent_rows = calls_of(runtime, parent.run_id)
    finally:
        runtime.shutdown()
    assert os.waitstatus_to_exitcode(status) == 0  # (-14: SIGALRM, the child's threads never returned)
    assert sorted(r["output"] for r in parent_rows) == [n * 10 for n in range(80)]


def test_budgeted_calls_from_threads_settle_their_run_once_each(database_url: str) -> None:
    """Outcomes that settle a budgeted run's totals share commits too (each as its own statement in the
    shared transaction): every call's row carries its cost, nothing stays reserved, and the run's
    ``cost_usd`` is their sum (a thread that saw the ledger's total while another's call was settled
    there but not yet counted in this process counted that call twice: 1.21-1.24)."""
    runtime = AgentRuntime(database_url)

    @tool(runtime, cost=Decimal("0.01"))
    def charge(n: int) -> int:
        return n

    def share(first: int) -> None:
        for n in range(first, 120, 6):
            assert charge(n) == n

    try:
        with runtime.agent_session(name="budgeted", budget_limit=100) as session:
            _in_threads(share, 6)
        rows = calls_of(runtime, session.run_id)
        run = run_row(runtime, session.run_id)
    finally:
        runtime.shutdown()
    assert sorted(r["output"] for r in rows) == list(range(120))
    assert {r["status"] for r in rows} == {"succeeded"}
    assert sum(Decimal(r["cost_usd"]) for r in rows) == Decimal("1.20")
    assert Decimal(run["reserved_usd"]) == 0
    assert Decimal(run["cost_usd"]) == Decimal("1.20")
