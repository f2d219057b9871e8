"""The psycopg writer backend on a real PostgreSQL server: threads' claims are in flight together (no lock
held across a round trip), and a statement whose connection was lost after the server committed it is not
mistaken, on its retry, for another worker's row (there is no ping before statements: a lost connection
is found by the statement that fails, and tried again)."""

from __future__ import annotations

import contextlib
import datetime as dt
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from agent_relay.keys import call_id
from agent_relay.ledger import LedgerOptions, LedgerStore
from agent_relay.ledger.pg_calls import PgCalls
from agent_relay.ledger.pg_pool import PgPool, connect_params
from agent_relay.ledger.records import CallRecord, Held
from agent_relay.states import CallStatus, Durability

pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)

OWNER = "test-host:1"


def _new_run(store: LedgerStore) -> str:
    run_id = str(uuid.uuid4())
    store.insert_run(
        run_id=run_id, name="pg", status="running", mode="live", started_at=dt.datetime.now(dt.UTC)
    )
    return run_id


def _record(run_id: str, n: int, **fields: object) -> CallRecord:
    key = f"{n:064x}"
    return CallRecord(
        run_id=run_id, call_id=call_id(run_id, "forward", key), seq=n, tool_name="charge", phase="forward",
        idempotency_key=key, arguments={"n": n}, owner=OWNER, started_ns=time.time_ns(), **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def _backend(store: LedgerStore) -> PgCalls:
    backend = store.calls.backend
    assert isinstance(backend, PgCalls)  # a postgresql+psycopg ledger writes its calls with psycopg
    return backend


def test_threads_claims_are_in_flight_together(database_url: str) -> None:
    """Four threads claim while the table is locked: all four claims wait at the server at once, each on
    its own connection, and all are held once the lock goes."""
    threads_n = 4
    store = LedgerStore(database_url)
    store.open()
    run_id = _new_run(store)
    locker = sa.create_engine(database_url)
    results: list[object] = []
    try:
        with locker.connect() as conn:
            conn.exec_driver_sql("LOCK TABLE tool_calls IN SHARE MODE")  # every INSERT waits for it
            threads = [
                threading.Thread(target=lambda n=n: results.append(store.calls.claim(_record(run_id, n))))
                for n in range(threads_n)
            ]
            for t in threads:
                t.start()
            waiting = _wait_for_waiting_claims(locker, threads_n)
            conn.rollback()  # the lock goes: the claims go through
        for t in threads:
            t.join()
        rows = store.list_calls(run_id)
        lent_at_most = _backend(store).pool.most_lent
    finally:
        locker.dispose()
        store.dispose()
    assert len(set(waiting)) == threads_n  # four server backends, each holding one waiting claim
    assert lent_at_most >= threads_n
    assert results == [Held(1)] * threads_n
    assert sorted(r.seq for r in rows) == list(range(threads_n))


def test_the_pool_reuses_its_connections_up_to_its_size_and_drops_lost_ones(database_url: str) -> None:
    engine = sa.create_engine(database_url)
    pool = PgPool(connect_params(engine, {}), size=1, timeout_s=0.05)
    try:
        first = pool.take()
        with pytest.raises(
            psycopg.OperationalError, match=r"all 1 ledger connections stayed busy.*pool_size"
        ):
            pool.take()  # all lent: waits, then says which option to raise
        pool.give(first)
        again = pool.take()
        assert again is first and pool.connects == 1  # kept and lent again, not made anew
        with pytest.raises(psycopg.OperationalError):
            again.cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")  # the server drops it
        pool.give(again)
        assert again.conn.closed
        fresh = pool.take()
        assert fresh is not first and pool.connects == 2
        assert fresh.cursor.execute("SELECT 1").fetchone() == (1,)
        pool.give(fresh)
    finally:
        pool.close()
        engine.dispose()


@pytest.mark.parametrize("threshold", [5, None], ids=["prepared", "unprepared"])
def test_a_calls_statements_are_prepared_once_per_connection_unless_told_not_to(
    database_url: str, threshold: int | None
) -> None:
    """A call's claim and outcome go through libpq (``pg_wire``): prepared on a connection the first time
    it runs them, and reused there; with ``prepare_threshold=None`` (behind a pooler that cannot keep
    prepared statements) never prepared. Either way the rows are written."""
    options = LedgerOptions(engine_options={"connect_args": {"prepare_threshold": threshold}, "pool_size": 1})
    store = LedgerStore(database_url, options)
    store.open()
    try:
        run_id = _new_run(store)
        for n in range(3):
            record = _record(run_id, n)
            assert store.calls.claim(record) == Held(1)
            record.status, record.output, record.ended_ns = CallStatus.SUCCEEDED, {"ok": n}, time.time_ns()
            store.calls.finish(record)
        lent = _backend(store).pool.take()
        try:
            prepared = lent.cursor.execute(
                "SELECT name, statement FROM pg_prepared_statements WHERE name LIKE 'agent_relay_%'"
            ).fetchall()
        finally:
            _backend(store).pool.give(lent)
        rows = store.list_calls(run_id)
    finally:
        store.dispose()
    assert [(r.status, r.output) for r in rows] == [("succeeded", {"ok": n}) for n in range(3)]
    if threshold is None:
        assert prepared == []
    else:  # one connection: the claim and the outcome, each prepared once
        assert sorted(statement.split()[0] for _, statement in prepared) == ["INSERT", "UPDATE"]


def _wait_for_waiting_claims(engine: sa.Engine, count: int) -> list[int]:
    """The backend pids of ``count`` claims waiting on a lock (polled, each look its own transaction: a
    transaction sees one snapshot of the activity; the threads get there in their own time, and a minute
    without them fails the test)."""
    query = sa.text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' "
        "AND query LIKE 'INSERT INTO tool_calls%'"
    )
    deadline = time.monotonic() + 60
    while True:
        with engine.connect() as conn:
            pids = list(conn.execute(query).scalars())
        if len(pids) >= count or time.monotonic() > deadline:
            return pids
        time.sleep(0.02)


class CutAfterCommit:
    """A TCP relay to the server that, the first time a client sends a statement containing ``marker``,
    relays it, waits for the server's reply (sent after the commit), and closes the client's connection
    instead of relaying it: the statement committed, and the client never heard."""

    def __init__(self, host: str, port: int, marker: bytes) -> None:
        self._target = (host, port)
        self._marker = marker
        self.armed = False
        self.cut = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self._target)
            threading.Thread(target=self._relay, args=(client, server), daemon=True).start()

    def _relay(self, client: socket.socket, server: socket.socket) -> None:
        with client, server:
            while True:
                ready, _, _ = select.select([client, server], [], [])
                if server in ready:
                    data = server.recv(65536)
                    if not data:
                        return
                    client.sendall(data)
                if client in ready:
                    data = client.recv(65536)
                    if not data:
                        return
                    server.sendall(data)
                    if self.armed and self._marker in data:
                        self.armed = False
                        server.recv(65536)  # the reply: the statement ran and committed
                        self.cut += 1
                        return  # both sockets close unrelayed

    def close(self) -> None:
        self._closing = True
        self._listener.close()


@contextlib.contextmanager
def _through_relay(database_url: str, marker: bytes) -> Iterator[tuple[LedgerStore, CutAfterCommit]]:
    url = sa.make_url(database_url)
    direct = LedgerStore(url)
    direct.open()  # the schema, made directly
    direct.dispose()
    relay = CutAfterCommit(url.host or "127.0.0.1", url.port or 5432, marker)
    store = LedgerStore(url.set(host="127.0.0.1", port=relay.port))
    try:
        yield store, relay
    finally:
        store.dispose()
        relay.close()


def test_a_claim_committed_before_its_connection_was_lost_is_held(database_url: str) -> None:
    with _through_relay(database_url, b"INSERT INTO tool_calls") as (store, relay):
        run_id = _new_run(store)
        record = _record(run_id, 1)
        relay.armed = True
        claim = store.calls.claim(record)  # committed, then the connection dropped: tried again
        rows = store.list_calls(run_id)
    assert relay.cut == 1
    assert claim == Held(1)  # its own row, not another worker's pending one to wait for
    assert [(r.seq, r.status, r.attempts, r.owner) for r in rows] == [(1, CallStatus.PENDING, 1, OWNER)]


def test_an_outcome_committed_before_its_connection_was_lost_is_recorded(database_url: str) -> None:
    with _through_relay(database_url, b"UPDATE tool_calls SET status") as (store, relay):
        run_id = _new_run(store)
        record = _record(run_id, 1)
        assert store.calls.claim(record) == Held(1)
        record.status, record.output, record.ended_ns = CallStatus.SUCCEEDED, {"ok": True}, time.time_ns()
        relay.armed = True
        store.calls.finish(record)  # no "no longer pending": the row holds this outcome already
        rows = store.list_calls(run_id)
    assert relay.cut == 1
    assert [(r.status, r.output) for r in rows] == [(CallStatus.SUCCEEDED, {"ok": True})]


def test_an_outcome_call_committed_before_its_connection_was_lost_is_recorded_once(database_url: str) -> None:
    with _through_relay(database_url, b"INSERT INTO tool_calls") as (store, relay):
        run_id = _new_run(store)
        record = _record(run_id, 1, durability=Durability.OUTCOME)
        record.status, record.error_type, record.ended_ns = CallStatus.FAILED, "ValueError", time.time_ns()
        relay.armed = True
        store.calls.finish(record)  # not written over again (as a second failed attempt) on the retry
        rows = store.list_calls(run_id)
    assert relay.cut == 1
    assert [(r.status, r.attempts, r.error_type) for r in rows] == [(CallStatus.FAILED, 1, "ValueError")]
