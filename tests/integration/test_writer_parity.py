"""The two writer backends write the same rows: ``SqliteCalls`` (plain ``sqlite3``) and ``SqlCalls``
(SQLAlchemy) each write one scenario of calls -- strict and outcome calls, failures and retries, a batch,
served rows, a look-up and a take-over -- into its own run of one SQLite ledger, and the two runs' rows are
compared column by column, as SQLAlchemy reads them and as SQLite stores them, with the earlier attempts the
database kept. ``SqlCalls`` on PostgreSQL
writes the same scenario, and its rows hold the same values; ``PgCalls`` (psycopg directly) writes rows
identical to ``SqlCalls``'s on PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent_relay.encoding import canonical_dumps
from agent_relay.errors import LedgerError
from agent_relay.keys import call_id, idempotency_key
from agent_relay.ledger.connection import utc
from agent_relay.ledger.pg_calls import PgCalls
from agent_relay.ledger.records import CallRecord, Found, Held, Reserved
from agent_relay.ledger.schema import tool_call_attempts
from agent_relay.ledger.sql_calls import SqlCalls
from agent_relay.ledger.sqlite_calls import SqliteCalls
from agent_relay.ledger.statements import CallStatements
from agent_relay.ledger.store import LedgerStore
from agent_relay.ledger.writer import CallWriter
from agent_relay.states import CallStatus, Durability, Origin, Phase, RunMode, RunStatus

OWNER = "worker-host:4242"
GONE = "gone-host:99999"  # the owner of a pending row a worker takes over
# Instants as time.time_ns() gives them: nanoseconds, not whole microseconds.
T0 = 1_722_000_000_123_456_789
ELSEWHERE = "other-host:4242"  # a live owner on another host: only its lease says whether it is gone
LEASE_S = 30
LEASE_NS = LEASE_S * 1_000_000_000
# the columns that name the run (call_id is derived from run_id); every other column must match
RUN_SPECIFIC = ("run_id", "call_id")

ARGS_BOOK = {"city": "Zürich — 東京", "nights": 2, "guests": [{"name": "Zoë", "age": 31}]}
OUTPUT_BOOK = {
    "confirmation": "ZRH-🚀-001",
    "price": {"amount": 412.5, "currency": "CHF", "fx": 1.0731, "tiny": 1.25e-05},
    "nights": [{"date": "2024-08-01", "rate": 206.25}, {"date": "2024-08-02", "rate": 206.25}],
    "flags": {"refundable": False, "breakfast": True, "note": None},
    "tags": ["café", "naïve", "日本語"],
}


def _new_run(store: LedgerStore) -> str:
    """An ``agent_runs`` row, as a session opens one."""
    run_id = str(uuid.uuid4())
    store.insert_run(
        run_id=run_id, name="parity", status=RunStatus.RUNNING, mode=RunMode.LIVE, replay_of=None,
        fork_after=None, parent_run_id=None, input_payload={"q": "parity"}, budget_limit_usd=None,
        trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331", owner=OWNER,
        started_at=dt.datetime.now(dt.UTC),
    )  # fmt: skip
    return run_id


def _record(
    run_id: str, seq: int, tool_name: str, arguments: dict[str, Any], *, started: int, **fields: Any
) -> CallRecord:
    """A call's record as the wrapper makes it: key and call id from the arguments, the arguments' canonical
    text at hand, where and when it started."""
    text = canonical_dumps(arguments)
    key = idempotency_key(tool_name, Phase.FORWARD, arguments, arguments_text=text)
    values: dict[str, Any] = {
        "owner": OWNER,
        "trace_id": f"{seq:032x}",
        "span_id": f"{seq + 0xA000:016x}",
        "started_ns": started,
    } | fields
    return CallRecord(
        run_id=run_id, call_id=call_id(run_id, Phase.FORWARD, key), seq=seq, tool_name=tool_name,
        phase=Phase.FORWARD, idempotency_key=key, arguments=arguments, arguments_text=text, **values,
    )  # fmt: skip


def _retry(record: CallRecord, seq: int, started: int, **fields: Any) -> CallRecord:
    """A new try of ``record``'s call: same key and call id, a new attempt."""
    return dataclasses.replace(
        record, seq=seq, trace_id=f"{seq:032x}", span_id=f"{seq + 0xA000:016x}", started_ns=started,
        ended_ns=None, status=CallStatus.PENDING, output=None, error_type=None, error_message=None,
        cost_usd=None, cost_unknown=False, input_tokens=None, output_tokens=None, model=None, **fields,
    )  # fmt: skip


def _succeed(record: CallRecord, output: Any, ended: int, **fields: Any) -> CallRecord:
    record.status, record.output, record.ended_ns = CallStatus.SUCCEEDED, output, ended
    for name, value in fields.items():
        setattr(record, name, value)
    return record


def _fail(record: CallRecord, error_type: str, message: str, ended: int) -> CallRecord:
    record.status, record.ended_ns = CallStatus.FAILED, ended
    record.error_type, record.error_message = error_type, message
    return record


def write_scenario(writer: CallWriter, store: LedgerStore, run_id: str) -> list[Any]:
    """Write the scenario's calls into run ``run_id``; what each writer call returned, in order."""
    seen: list[Any] = []
    ms = 1_000_000

    # 1. a strict call: its pending row, then its outcome (cost, tokens, model, nested JSON)
    book = _record(run_id, 1, "book_hotel", ARGS_BOOK, started=T0)
    seen.append(writer.start(book))
    seen.append([(r.seq, r.status) for r in store.list_calls(run_id)])  # the pending row is committed
    writer.finish(
        _succeed(book, OUTPUT_BOOK, T0 + 250 * ms + 611, cost_usd=Decimal("0.0123456789"),
                 input_tokens=1200, output_tokens=345, model="gpt-4o-mini")
    )  # fmt: skip
    with pytest.raises(LedgerError, match="no longer pending"):
        writer.finish(book)  # it is settled: no row takes a second outcome

    # 2. a strict call that fails, then is claimed again (attempt 2) and succeeds
    charge_args = {"amount_cents": 41250, "currency": "CHF"}
    charge = _record(run_id, 2, "charge_card", charge_args, started=T0 + 300 * ms)
    seen.append(writer.start(charge))
    writer.finish(_fail(charge, "TimeoutError", "gateway timed out after 30 s", T0 + 330 * ms + 999))
    again = _retry(charge, 3, T0 + 400 * ms + 501)
    seen.append(writer.claim(again))
    writer.finish(_succeed(again, {"charge_id": "ch_1", "captured": True}, T0 + 450 * ms + 499))

    # 3. an outcome-durability call: nothing at its start, the whole row at its end
    notify = _record(run_id, 4, "notify", {"to": "ops@example.com"}, started=T0 + 500 * ms + 250,
                     durability=Durability.OUTCOME)  # fmt: skip
    seen.append(writer.start(notify))
    seen.append([r.seq for r in store.list_calls(run_id)])  # no row for it yet
    writer.finish(_succeed(notify, "sent", T0 + 520 * ms + 750, cost_usd=Decimal(0), cost_unknown=True))
    with pytest.raises(LedgerError, match="already recorded"):
        writer.finish(notify)

    # 4. an outcome call that fails, then its next try (attempt 2) succeeds over the failed row
    fetch = _record(run_id, 5, "fetch_rates", {"base": "EUR"}, started=T0 + 600 * ms + 1,
                    durability=Durability.OUTCOME)  # fmt: skip
    seen.append(writer.start(fetch))
    writer.finish(_fail(fetch, "ConnectionError", "rates.example.com: connection reset", T0 + 610 * ms + 3))
    fetch_again = _retry(fetch, 6, T0 + 700 * ms + 999_999, attempts=2)
    seen.append(writer.start(fetch_again))
    writer.finish(_succeed(fetch_again, [1.0731, 0.8412, 157.25], T0 + 710 * ms + 999_600))

    # 5. a batch: two claims (and the claim of a call that already succeeded: found), then their outcomes
    # with an outcome call started and finished in the same batch
    lookup = _record(run_id, 7, "lookup", {"sku": "A-1"}, started=T0 + 800 * ms + 123)
    reserve = _record(run_id, 8, "reserve", {"sku": "A-1", "qty": 2}, started=T0 + 800 * ms + 789)
    book_twice = _record(run_id, 9, "book_hotel", ARGS_BOOK, started=T0 + 800 * ms + 900)
    seen.append(writer.write_batch([lookup, reserve, book_twice], []))
    _succeed(lookup, {"sku": "A-1", "stock": 3, "weight_kg": 0.35}, T0 + 850 * ms + 555, input_tokens=7,
             output_tokens=0, model="local")  # fmt: skip
    _fail(reserve, "ValueError", "only 1 left — réservation refusée", T0 + 860 * ms)
    audit = _record(run_id, 10, "audit", {"event": "reserve"}, started=T0 + 870 * ms + 42,
                    durability=Durability.OUTCOME)  # fmt: skip
    _succeed(audit, {"ok": True}, T0 + 880 * ms + 958)
    seen.append(writer.write_batch([audit], [lookup, reserve, audit]))

    # 6. rows a replay served (origin replayed), each complete, written together
    served_ok = _record(run_id, 11, "book_hotel", {"city": "Oslo", "nights": 1}, started=T0 + 900 * ms + 777,
                        ended_ns=T0 + 900 * ms + 777, origin=Origin.REPLAYED, status=CallStatus.SUCCEEDED,
                        output={"confirmation": "OSL-002", "price": 99.99}, cost_usd=Decimal("0.5"),
                        input_tokens=10, output_tokens=20, model="gpt-4o")  # fmt: skip
    served_failed = _record(run_id, 12, "charge_card", {"amount_cents": 9999, "currency": "NOK"},
                            started=T0 + 901 * ms + 333, ended_ns=T0 + 901 * ms + 333,
                            origin=Origin.REPLAYED, status=CallStatus.FAILED, error_type="CardDeclined",
                            error_message="declined")  # fmt: skip
    writer.insert_rows([served_ok, served_failed])

    # 7. look-ups: a succeeded row, a failed row, a key no row holds
    seen.append(writer.find(book_twice))
    seen.append(writer.find(reserve))
    seen.append(writer.find(_record(run_id, 99, "never_called", {}, started=T0)))

    # 8. a pending row whose owner is gone: another worker's claim finds it, then takes it over
    ship = _record(run_id, 13, "ship", {"order": 7, "express": True}, started=T0 + 950 * ms + 640, owner=GONE)
    seen.append(writer.start(ship))
    mine = _retry(ship, 14, T0 + 990 * ms + 360, owner=OWNER)
    seen.append(writer.claim(mine))  # pending, held by GONE
    seen.append(writer.take_over(mine, GONE))
    seen.append(writer.take_over(mine, GONE))  # taken already: the row's owner is no longer GONE
    writer.finish(_succeed(mine, {"tracking": "1Z999"}, T0 + 999 * ms + 999_999))

    # 9. a call still running: its pending row, its lease renewed (not a finished row's)
    running = _record(run_id, 15, "left_pending", {"n": 1}, started=T0 + 1_000 * ms + 500)
    seen.append(writer.start(running))
    renewed = writer.renew_leases(OWNER, [running.call_id, book.call_id])
    seen.append([r.seq for r in (running, book) if r.call_id in renewed])

    # 10. a pending row of an owner on another host: taken over only once its lease has run out
    late = _record(run_id, 16, "late", {"n": 2}, started=T0 + 1_001 * ms, owner=ELSEWHERE)
    seen.append(writer.start(late))  # its lease: until the writer's clock (T0) + LEASE_S
    taker = _retry(late, 17, T0 + 1_002 * ms, owner=OWNER)
    seen.append(writer.take_over(taker, ELSEWHERE, T0 + LEASE_NS))  # not yet: it ends at that instant
    seen.append(writer.take_over(taker, ELSEWHERE, T0 + LEASE_NS + 1_000))  # a microsecond after: taken
    writer.finish(_succeed(taker, "late", T0 + 1_003 * ms))
    return seen


def _expected_returns() -> list[Any]:
    """What the scenario's writer calls return, on any backend."""
    lease = utc(T0 + LEASE_NS)
    book = Found(CallStatus.SUCCEEDED, OUTPUT_BOOK, 1, OWNER, ARGS_BOOK, lease)
    return [
        Held(1), [(1, CallStatus.PENDING)],  # 1
        Held(1), Held(2),  # 2
        Held(1), [1, 3],  # 3
        Held(1), Held(2),  # 4
        ([Held(1), Held(1), book], []), ([Held(1)], [None, None, None]),  # 5
        book, Found(CallStatus.FAILED, None, 1, OWNER, {"sku": "A-1", "qty": 2}, lease), None,  # 7
        Held(1), Found(CallStatus.PENDING, None, 1, GONE, {"order": 7, "express": True}, lease),  # 8
        Held(2), None,
        Held(1), [15],  # 9
        Held(1), None, Held(2),  # 10
    ]  # fmt: skip


Backend = Callable[[LedgerStore], CallStatements]
BACKENDS: dict[str, Backend] = {
    "SqliteCalls": lambda store: SqliteCalls(store.db.engine),
    "SqlCalls": lambda store: SqlCalls(store.db.write_engine, store.db.engine),
}
SQLITE_BACKENDS = ("SqliteCalls", "SqlCalls")
BACKENDS["PgCalls"] = lambda store: PgCalls.for_engine(store.db.engine, store.db.options.engine_options)


@dataclasses.dataclass
class Written:
    run_id: str
    returned: list[Any]


def write_with(store: LedgerStore, backend: str) -> Written:
    """The scenario written by ``backend`` into a new run of ``store``."""
    writer = CallWriter(store.db, BACKENDS[backend](store), lease_s=LEASE_S, clock=lambda: T0)
    try:
        run_id = _new_run(store)
        return Written(run_id, write_scenario(writer, store, run_id))
    finally:
        writer.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[LedgerStore]:
    store = LedgerStore(f"sqlite:///{tmp_path / 'ledger.db'}")
    store.open()
    yield store
    store.dispose()


def _rows(store: LedgerStore, run_id: str) -> list[dict[str, Any]]:
    """The run's rows as SQLAlchemy reads them, without the columns that name the run."""
    rows = [dict(row._mapping) for row in store.list_calls(run_id)]
    assert rows, f"run {run_id} has no rows"
    return [{k: v for k, v in row.items() if k not in RUN_SPECIFIC} for row in rows]


def _attempts(store: LedgerStore, run_id: str) -> list[dict[str, Any]]:
    """The run's earlier attempts (``tool_call_attempts``, kept by the database when a new attempt took a
    row over), in seq order, without the columns that name the run."""
    a = tool_call_attempts.c
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(tool_call_attempts).where(a.run_id == run_id).order_by(a.seq))
        return [{k: v for k, v in row.items() if k not in RUN_SPECIFIC} for row in rows.mappings()]


def _check_attempts(attempts: list[dict[str, Any]]) -> None:
    """The earlier attempts of the scenario: two failures a retry made good, one taken over in doubt."""
    assert [(a["seq"], a["attempt"], a["status"], a["error_type"], a["owner"]) for a in attempts] == [
        (2, 1, "failed", "TimeoutError", OWNER),
        (5, 1, "failed", "ConnectionError", OWNER),
        (13, 1, "in_doubt", None, GONE),
        (16, 1, "in_doubt", None, ELSEWHERE),
    ]
    assert attempts[0]["error_message"] == "gateway timed out after 30 s"
    assert attempts[0]["trace_id"] == f"{2:032x}" and attempts[0]["ended_at"] is not None
    assert attempts[2]["ended_at"] is None  # its worker died: when it ended is unknown


def _differences(a: list[dict[str, Any]], b: list[dict[str, Any]], show: Callable[[Any], Any]) -> list[str]:
    """Every column where two runs' rows (matched by position, in seq order) differ."""
    if [r["seq"] for r in a] != [r["seq"] for r in b]:
        return [f"different calls: seqs {[r['seq'] for r in a]} != {[r['seq'] for r in b]}"]
    found = []
    for left, right in zip(a, b, strict=True):
        assert left.keys() == right.keys()
        for column in left:
            x, y = show(left[column]), show(right[column])
            if x != y or type(x) is not type(y):
                found.append(f"seq {left['seq']} ({left.get('tool_name')}) {column}: {x!r} != {y!r}")
    return found


def _micros(ns: int) -> dt.datetime:
    """A UTC instant to the microsecond, naive (as SQLite's DateTime reads back)."""
    return dt.datetime(1970, 1, 1) + dt.timedelta(microseconds=ns // 1000)


def _check_values(rows: list[dict[str, Any]]) -> None:
    """Concrete values of the scenario's rows (so the comparison cannot pass on two empty runs)."""
    by_seq = {row["seq"]: row for row in rows}
    assert sorted(by_seq) == [1, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 17]
    book = by_seq[1]
    assert (book["tool_name"], book["status"], book["attempts"], book["origin"]) == (
        "book_hotel", "succeeded", 1, "live",
    )  # fmt: skip
    assert book["output"] == OUTPUT_BOOK and book["arguments"] == ARGS_BOOK
    assert book["cost_usd"] == Decimal("0.0123456789") and book["cost_unknown"] is False
    assert (book["input_tokens"], book["output_tokens"], book["model"]) == (1200, 345, "gpt-4o-mini")
    assert (book["trace_id"], book["span_id"], book["owner"]) == (f"{1:032x}", f"{0xA001:016x}", OWNER)
    started = book["started_at"].replace(tzinfo=None)
    assert abs(started - _micros(T0)) <= dt.timedelta(microseconds=1), started
    charge = by_seq[3]  # its first try failed: the retry's attempt and outcome replaced it
    assert (charge["status"], charge["attempts"], charge["error_type"], charge["error_message"]) == (
        "succeeded", 2, None, None,
    )  # fmt: skip
    assert charge["output"] == {"charge_id": "ch_1", "captured": True}
    assert by_seq[4]["cost_unknown"] is True and by_seq[4]["cost_usd"] == 0 and by_seq[4]["output"] == "sent"
    assert (by_seq[6]["status"], by_seq[6]["attempts"], by_seq[6]["output"]) == (
        "succeeded", 2, [1.0731, 0.8412, 157.25],
    )  # fmt: skip
    assert (by_seq[8]["status"], by_seq[8]["error_type"]) == ("failed", "ValueError")
    assert by_seq[8]["error_message"] == "only 1 left — réservation refusée"
    assert [by_seq[s]["origin"] for s in (10, 11, 12)] == ["live", "replayed", "replayed"]
    assert by_seq[12]["status"] == "failed" and by_seq[11]["cost_usd"] == Decimal("0.5")
    ship = by_seq[14]  # taken over from a gone owner
    assert (ship["status"], ship["attempts"], ship["owner"]) == ("succeeded", 2, OWNER)
    pending = by_seq[15]
    assert (pending["status"], pending["ended_at"], pending["output"]) == ("pending", None, None)
    lease = pending["lease_expires_at"].replace(tzinfo=None)  # the claim's clock, plus the lease
    assert lease == _micros(T0 + LEASE_NS)
    assert by_seq[11]["lease_expires_at"] is None  # a served row: never claimed, no lease
    late = by_seq[17]  # taken over from a live owner on another host, once its lease ran out
    assert (late["status"], late["attempts"], late["owner"]) == ("succeeded", 2, OWNER)


def test_sqlite_and_sqlalchemy_backends_write_the_same_rows(sqlite_store: LedgerStore) -> None:
    written = {name: write_with(sqlite_store, name) for name in SQLITE_BACKENDS}
    for name, run in written.items():
        assert run.returned == _expected_returns(), name
    rows = {name: _rows(sqlite_store, run.run_id) for name, run in written.items()}
    for name, found in rows.items():
        _check_values(found)  # raises naming the first wrong value
        assert len(found) == 12, name
    differences = _differences(rows["SqliteCalls"], rows["SqlCalls"], show=lambda v: v)
    assert not differences, "SqliteCalls (left) and SqlCalls (right) rows differ:\n" + "\n".join(differences)
    attempts = {name: _attempts(sqlite_store, run.run_id) for name, run in written.items()}
    _check_attempts(attempts["SqliteCalls"])
    assert attempts["SqliteCalls"] == attempts["SqlCalls"]


def _stored(path: str, run_id: str) -> list[dict[str, Any]]:
    """The run's rows as SQLite stores them (``sqlite3``, no SQLAlchemy types): what user SQL sees."""
    conn = sqlite3.connect(path)
    try:
        cursor = conn.execute("SELECT * FROM tool_calls WHERE run_id = ? ORDER BY seq", (run_id,))
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()
    return [{k: v for k, v in row.items() if k not in RUN_SPECIFIC} for row in rows]


def test_both_backends_store_the_same_sqlite_values(sqlite_store: LedgerStore) -> None:
    """The same, one level down: the stored text, numbers and storage classes are identical too (JSON
    text, timestamp text, REAL money, 0/1 booleans), as ``sqlite_calls`` promises."""
    written = {name: write_with(sqlite_store, name) for name in SQLITE_BACKENDS}
    path = sqlite_store.db.url.database
    assert path is not None
    stored = {name: _stored(path, run.run_id) for name, run in written.items()}
    assert len(stored["SqliteCalls"]) == 12
    first = stored["SqliteCalls"][0]
    assert isinstance(first["output"], str) and first["cost_unknown"] == 0
    assert isinstance(first["started_at"], str)
    assert first["started_at"].startswith("2024-07-26 13:20:00.12345")  # the text SQLAlchemy's DateTime reads
    differences = _differences(stored["SqliteCalls"], stored["SqlCalls"], show=lambda v: v)
    assert not differences, "stored values differ, SqliteCalls (left) vs SqlCalls (right):\n" + "\n".join(
        differences
    )


def _comparable(value: Any) -> Any:
    """A value read back, in a form both databases give alike: instants as naive UTC (SQLite's DateTime
    reads back naive, PostgreSQL's timestamptz aware), money by value, JSON as canonical text (so a key
    order JSONB chose does not count, but 2 vs 2.0 does)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo is not None else value
    if isinstance(value, Decimal):
        return value.normalize()
    if isinstance(value, dict | list):
        return canonical_dumps(value)
    return value


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_sqlalchemy_backend_on_postgresql_writes_the_same_values(
    database_url: str, sqlite_store: LedgerStore
) -> None:
    on_sqlite = write_with(sqlite_store, "SqlCalls")
    postgres = LedgerStore(database_url)
    try:
        postgres.open()
        on_postgres = write_with(postgres, "SqlCalls")
        pg_rows = _rows(postgres, on_postgres.run_id)
        pg_attempts = _attempts(postgres, on_postgres.run_id)
    finally:
        postgres.dispose()
    assert on_postgres.returned == _expected_returns()
    assert on_postgres.returned == on_sqlite.returned
    _check_values(pg_rows)
    assert pg_rows[0]["started_at"].tzinfo is not None  # timestamptz: the normalisation is needed
    differences = _differences(_rows(sqlite_store, on_sqlite.run_id), pg_rows, show=_comparable)
    assert not differences, "SqlCalls rows on SQLite (left) and PostgreSQL (right) differ:\n" + "\n".join(
        differences
    )
    _check_attempts(pg_attempts)
    differences = _differences(_attempts(sqlite_store, on_sqlite.run_id), pg_attempts, show=_comparable)
    assert not differences, "earlier attempts on SQLite (left) and PostgreSQL (right) differ:\n" + "\n".join(
        differences
    )


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_psycopg_backend_writes_the_sqlalchemy_backends_rows_on_postgresql(database_url: str) -> None:
    """``PgCalls`` (the default for postgresql+psycopg ledgers) against ``SqlCalls`` on one PostgreSQL
    ledger: the same returns, and rows and earlier attempts identical value for value and type for type
    (no normalisation: both read back through SQLAlchemy from the same columns)."""
    store = LedgerStore(database_url)
    try:
        store.open()
        assert isinstance(store.calls.backend, PgCalls)  # what a runtime on this URL writes with
        written = {name: write_with(store, name) for name in ("SqlCalls", "PgCalls")}
        rows = {name: _rows(store, run.run_id) for name, run in written.items()}
        attempts = {name: _attempts(store, run.run_id) for name, run in written.items()}
    finally:
        store.dispose()
    assert written["PgCalls"].returned == written["SqlCalls"].returned == _expected_returns()
    _check_values(rows["PgCalls"])
    differences = _differences(rows["SqlCalls"], rows["PgCalls"], show=lambda v: v)
    assert not differences, "SqlCalls (left) and PgCalls (right) rows differ:\n" + "\n".join(differences)
    _check_attempts(attempts["PgCalls"])
    differences = _differences(attempts["SqlCalls"], attempts["PgCalls"], show=lambda v: v)
    assert not differences, "earlier attempts, SqlCalls (left) vs PgCalls (right):\n" + "\n".join(differences)


def _budgeted_run(store: LedgerStore, limit: str) -> str:
    run_id = _new_run(store)
    store.finish_run(run_id, budget_limit_usd=Decimal(limit))
    return run_id


def write_budget_scenario(writer: CallWriter, store: LedgerStore, run_id: str) -> list[Any]:
    """Reservations on a budgeted run, settled by each kind of outcome write; what the run's row said."""
    ms, seen = 1_000_000, []
    holds = {"a": "0.5", "b": "0.2", "c": "0.1", "d": "0.1", "e": "0.4"}
    for hold in holds.values():
        assert writer.reserve(run_id, "t", Decimal(hold)).granted
    seen.append(writer.reserve(run_id, "t", Decimal("8.8")))  # 1.3 reserved + 8.8 > 10: refused
    a, b, c, d, e = (
        _record(run_id, seq, name, {"n": seq}, started=T0 + seq * ms, budget_hold=Decimal(hold))
        for seq, (name, hold) in enumerate(holds.items(), start=1)
    )
    b.durability = d.durability = Durability.OUTCOME
    writer.start(a)  # strict: its pending row, then the outcome settles it
    writer.finish(_succeed(a, "ok", T0 + 10 * ms, cost_usd=Decimal("0.3")))
    writer.start(b)  # outcome: the whole row, and the settle
    writer.finish(_succeed(b, "ok", T0 + 11 * ms, cost_usd=Decimal("0.2")))
    writer.write_batch([c, d], [])  # a batch: each outcome settles in the batch's transaction
    writer.write_batch([], [_succeed(c, "ok", T0 + 12 * ms, cost_usd=Decimal("0.05")), _fail(d, "E", "x", 0)])
    writer.start(e)
    writer.finish(_succeed(e, "ok", T0 + 13 * ms, cost_usd=Decimal("0.4")))
    with pytest.raises(LedgerError, match="no longer pending"):
        writer.finish(e)  # no row took it: nothing is settled twice
    row = store.get_run(run_id)
    assert row is not None
    seen.append((row.cost_usd, row.reserved_usd))
    seen.append(writer.reserve(run_id, "t", Decimal("9.05")))  # exactly the limit: granted
    writer.release(run_id, Decimal("9.05"), Decimal("0.01"))
    row = store.get_run(run_id)
    assert row is not None
    seen.append((row.cost_usd, row.reserved_usd))
    return seen


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_every_backend_settles_a_budgeted_runs_reservations_with_the_outcome(database_url: str) -> None:
    store = LedgerStore(database_url)
    names = SQLITE_BACKENDS if store.is_sqlite else ("SqlCalls", "PgCalls")
    try:
        store.open()
        seen = {}
        for name in names:
            writer = CallWriter(store.db, BACKENDS[name](store))
            try:
                seen[name] = write_budget_scenario(writer, store, _budgeted_run(store, "10"))
            finally:
                writer.close()
    finally:
        store.dispose()
    expected = [
        Reserved(False, Decimal(0), Decimal("1.3"), Decimal(10)),
        (Decimal("0.95"), Decimal(0)),
        Reserved(True, Decimal("0.95"), Decimal(0), Decimal(10)),
        (Decimal("0.96"), Decimal(0)),
    ]
    for name in names:
        assert seen[name] == expected, name
