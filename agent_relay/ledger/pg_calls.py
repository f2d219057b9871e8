"""The PostgreSQL writer backend: a tool call's statements on psycopg 3 directly, as lean as the SQLite one.

One round trip per commit: connections are in autocommit mode, so the claim is one ``INSERT ... ON
CONFLICT ... RETURNING`` (a look-up follows only when another row holds the key), a strict call's end one
``UPDATE``, an outcome call's row one ``INSERT``; a batch is one statement (``pg_batch``). These go
through libpq itself (``pg_wire``), prepared on each connection (unless ``prepare_threshold=None``, a
connect argument, for a pooler that cannot keep prepared statements); the rarer statements go through a
psycopg cursor. Each thread takes its own connection from a small pool (``pg_pool``), so threads overlap
their round trips.

No liveness ping before a statement: a connection the server dropped (``pg_terminate_backend``, a
restart, a failover) shows itself by the statement failing, and the statement is tried once more on a new
connection. The first try may have committed before the connection was lost, so the retry first looks for
the row as that try left it (this attempt's ``seq``, start and owner): found, it is the result; otherwise
the statement runs again.

Values go to the server as SQLAlchemy's column types send them (``columns.postgres_params``), so the rows
are the SQLAlchemy backend's, which ``tests/integration/test_writer_parity.py`` checks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from sqlalchemy.engine import Engine

from ..states import CallStatus, Durability
from . import columns as col
from . import pg_batch, pg_wire
from .budget_rows import RESERVE_PG, SELECT_PG, SETTLE_PG, reserved, settle_params, settle_statement, settles
from .connection import utc
from .pg_batch import assign, retry
from .pg_pool import Lent, PgPool, pool_for
from .records import CallRecord, Claim, Found, Held, Reserved

_T = TypeVar("_T")
Cursor = psycopg.Cursor[Any]


def _insert(names: tuple[str, ...]) -> str:
    return f"INSERT INTO tool_calls ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))})"


_RETRY = retry("attempts")  # a new try over a failed row of the same key (see pg_batch.retry)
CLAIM = _insert(col.CLAIM) + _RETRY
INSERT_OUTCOME = _insert(col.ROW) + _RETRY
INSERT_ROW = _insert(col.ROW)
FIND = f"SELECT {', '.join(col.FOUND)} FROM tool_calls WHERE {' AND '.join(f'{k} = %s' for k in col.KEY)}"
FINISH = (
    f"UPDATE tool_calls SET {assign(col.OUTCOME, '%s')} "
    f"WHERE call_id = %s AND status = '{CallStatus.PENDING}' AND owner = %s"
)
TAKE_OVER = (
    f"UPDATE tool_calls SET {assign(col.ATTEMPT, '%s')}, attempts = attempts + 1 "
    f"WHERE call_id = %s AND status = '{CallStatus.PENDING}' AND owner = %s "
    f"AND (lease_expires_at IS NULL OR lease_expires_at < %s) RETURNING attempts"
)
RENEW = (
    f"UPDATE tool_calls SET lease_expires_at = %s WHERE status = '{CallStatus.PENDING}' AND owner = %s "
    f"AND call_id = ANY(%s) RETURNING call_id"
)
# the same, settling a budgeted run's totals in the same statement (a row comes back if it was written)
FINISH_SETTLE = settle_statement(f"{FINISH} RETURNING 1")
INSERT_OUTCOME_SETTLE = settle_statement(INSERT_OUTCOME)
# the row as this attempt left it, if it did: what a try cut off by a lost connection may have committed
MINE = (
    "SELECT status, attempts FROM tool_calls "
    "WHERE call_id = %s AND seq = %s AND started_at = %s AND owner IS NOT DISTINCT FROM %s"
)

_row_params = col.postgres_params(col.ROW)
_key_params = col.postgres_params(col.KEY)
_finish_params = col.postgres_params((*col.OUTCOME, "call_id", "owner"))
_attempt_params = col.postgres_params((*col.ATTEMPT, "call_id"))
_mine_params = col.postgres_params(("call_id", "seq", "started_at", "owner"))
# the statements of every call, through libpq itself (pg_wire)
_WIRE_CLAIM = pg_wire.Statement(CLAIM)
_WIRE_FINISH = pg_wire.Statement(FINISH)
_WIRE_INSERT_OUTCOME = pg_wire.Statement(INSERT_OUTCOME)

Work = Callable[[Lent], _T]


class PgCalls:
    """The writer backend for PostgreSQL through psycopg. Thread-safe: each method runs on a connection
    of its own from the pool, and no lock is held across a round trip."""

    def __init__(self, pool: PgPool) -> None:
        self.pool = pool
        self.wire = pg_wire.Wire(prepare=pool.prepares)
        # True until a connection shows plain psycopg classes (no DB-API instrumentation wraps them)
        self.instrumented = True

    @classmethod
    def for_engine(cls, engine: Engine, engine_options: Mapping[str, Any]) -> PgCalls:
        """The backend for a ledger's engine: its URL and ``connect_args``, a pool sized like its own."""
        return cls(pool_for(engine, engine_options))

    def close(self) -> None:
        self.pool.close()

    def _take(self, *, fresh: bool = False) -> Lent:
        lent = self.pool.take(fresh=fresh)
        if self.instrumented:
            self.instrumented = (
                type(lent.conn) is not psycopg.Connection or type(lent.cursor) is not psycopg.Cursor
            )
        return lent

    def _run(self, work: Work[_T], earlier: Callable[[Cursor], _T | None]) -> _T:
        """``work`` on a pooled connection. Lost meanwhile, on a new connection: what ``earlier`` finds
        the first try committed, or else ``work`` again."""
        lent = self._take()
        try:
            return work(lent)
        except psycopg.Error:
            if not lent.broken:
                raise
        finally:
            self.pool.give(lent)
        lent = self._take(fresh=True)
        try:
            found = earlier(lent.cursor)
            return found if found is not None else work(lent)
        finally:
            self.pool.give(lent)

    # --- the writer's methods -------------------------------------------------------------------------
    def claim(self, record: CallRecord) -> Claim:
        return self._run(lambda lent: self._claim_on(lent, record), lambda cur: _my_claim(cur, record))

    def finish(self, record: CallRecord) -> bool:
        return self._run(lambda lent: self._finish_on(lent, record), lambda cur: _my_outcome(cur, record))

    def find(self, record: CallRecord) -> Found | None:
        return self._run(lambda lent: _find_on(lent.cursor, record), lambda cur: None)  # (a read: again)

    def take_over(self, record: CallRecord, owner: str | None, before_ns: int) -> int | None:
        def take(lent: Lent) -> int | None:
            row = lent.cursor.execute(TAKE_OVER, (*_attempt_params(record), owner, utc(before_ns))).fetchone()
            return None if row is None else int(row[0])

        def mine(cur: Cursor) -> int | None:
            claim = _my_claim(cur, record)
            return None if claim is None else claim.attempts

        return self._run(take, mine)

    def renew(self, owner: str, call_ids: Sequence[str], until_ns: int) -> set[str]:
        """One autocommitted statement: a process frozen after sending it holds no row lock."""

        def renew(lent: Lent) -> set[str]:
            rows = lent.cursor.execute(RENEW, (utc(until_ns), owner, list(call_ids))).fetchall()
            return {row[0] for row in rows}

        return self._run(renew, lambda cur: None)  # (renewing again is harmless)

    def reserve(self, run_id: str, amount: Decimal) -> Reserved:
        def reserve(lent: Lent) -> Reserved:
            granted = lent.cursor.execute(RESERVE_PG, (amount, run_id, amount, amount)).fetchone()
            if granted is not None:
                return reserved(True, granted)
            return reserved(False, lent.cursor.execute(SELECT_PG, (run_id,)).fetchone())

        # (a connection lost after the first try committed reserves twice: more is held, never less)
        return self._run(reserve, lambda cur: None)

    def settle_run(self, run_id: str, cost: Decimal, hold: Decimal) -> None:
        def settle(lent: Lent) -> bool:
            lent.cursor.execute(SETTLE_PG, (cost, hold, run_id))
            return True

        # (lost after it committed, it is not done again: a reservation stays held, never one too few)
        self._run(settle, lambda cur: True)

    def insert_rows(self, records: Sequence[CallRecord]) -> None:
        def insert(lent: Lent) -> bool:
            with lent.conn.transaction():
                lent.cursor.executemany(INSERT_ROW, [_row_params(r) for r in records])
            return True

        # one transaction: its first row there, they all are
        self._run(insert, lambda cur: True if _mine(cur, records[0]) is not None else None)

    def batch_if_free(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]] | None:
        """Never: a server's write is a round trip, made on the writer's thread (``None``)."""
        return None

    def encode(self, record: CallRecord, finish: bool) -> tuple[bytes | None, ...] | None:
        """The record's part of ``pg_batch``'s one statement (``None`` for an outcome that settles its
        run's budget: a statement of its own)."""
        return pg_batch.encode(record, finish, _alone)

    def batch(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]]:
        """Every record in one transaction, one round trip (``pg_batch``: a statement per kind of write).
        If the transaction fails (rare: a row's error fails its whole statement on PostgreSQL, or the
        connection was lost), each record is written again on its own, so only the failing ones fail."""
        lost = False
        lent = self._take()
        try:
            claimed, finished = pg_batch.write(self.wire, lent, claims, finishes, _alone)
        except psycopg.Error:
            lost, claimed = lent.broken, None
        finally:
            self.pool.give(lent)
        if claimed is None:
            lent = self._take(fresh=lost)
            try:
                return self._one_by_one(lent, claims, finishes, lost=lost)
            finally:
                self.pool.give(lent)
        # a claim another row's key met: committed, so a claim after this commit finds that row
        return [held or self.claim(r) for r, held in zip(claims, claimed, strict=True)], finished

    # --- statements -------------------------------------------------------------------------------------
    def _claim_on(self, lent: Lent, record: CallRecord) -> Claim:
        params = pg_batch.wire_claim_params(record)
        try:
            attempts = pg_wire.returned(self.wire.run(lent, _WIRE_CLAIM, params))
        except psycopg.errors.UniqueViolation:
            # Another worker inserted the row between this insert's check and its own index entries: the
            # server arbitrates ON CONFLICT on one unique index only, and tool_calls has two (call_id, and
            # the key), both naming the call. That row is committed now, so claiming again meets it.
            attempts = pg_wire.returned(self.wire.run(lent, _WIRE_CLAIM, params))
        if attempts is not None:
            return Held(int(attempts))
        found = _find_on(lent.cursor, record)
        assert found is not None  # the conflicting row: committed, so this later statement sees it
        return found

    def _finish_on(self, lent: Lent, record: CallRecord) -> bool:
        if record.budget_hold is not None and settles(record):  # (settles its run too: on the cursor)
            lent.cursor.execute(*_settling(record))
            return lent.cursor.fetchone() is not None
        if record.durability is Durability.OUTCOME:
            result = self.wire.run(lent, _WIRE_INSERT_OUTCOME, pg_batch.wire_row_params(record))
            return pg_wire.returned(result) is not None
        return pg_wire.count(self.wire.run(lent, _WIRE_FINISH, pg_batch.wire_finish_params(record))) == 1

    def _one_by_one(
        self, lent: Lent, claims: Sequence[CallRecord], finishes: Sequence[CallRecord], *, lost: bool
    ) -> tuple[list[Claim | Exception], list[bool | Exception]]:
        """Each record in its own statement; after a lost connection, what the lost transaction
        committed (all of it or none) is found first."""
        cur = lent.cursor
        claimed: list[Claim | Exception] = []
        finished: list[bool | Exception] = []
        for record in claims:
            try:
                mine = _my_claim(cur, record) if lost else None
                claimed.append(mine if mine is not None else self._claim_on(lent, record))
            except psycopg.Error as exc:
                if lent.broken:
                    raise
                claimed.append(exc)
        for record in finishes:
            try:
                done = _my_outcome(cur, record) if lost else None
                finished.append(done if done is not None else self._finish_on(lent, record))
            except psycopg.Error as exc:
                if lent.broken:
                    raise
                finished.append(exc)
        return claimed, finished


def _find_on(cur: Cursor, record: CallRecord) -> Found | None:
    row = cur.execute(FIND, _key_params(record)).fetchone()
    return None if row is None else col.found(row)


def _settling(record: CallRecord) -> tuple[str, tuple[Any, ...]]:
    """The statement that writes a budgeted ``record``'s outcome and settles its run's budget (a row comes
    back when it wrote), and its parameters."""
    if record.durability is Durability.OUTCOME:
        return INSERT_OUTCOME_SETTLE, (*_row_params(record), *settle_params(record))
    return FINISH_SETTLE, (*_finish_params(record), *settle_params(record))


def _alone(record: CallRecord) -> tuple[str, tuple[Any, ...], bool] | None:
    """A budgeted outcome settles its run in the same statement: in a batch, that statement of its own."""
    if record.budget_hold is not None and settles(record):
        return (*_settling(record), True)
    return None


def _mine(cur: Cursor, record: CallRecord) -> tuple[str, int] | None:
    """(status, attempts) of the call's row if this attempt of it (its seq, start and owner) is on it."""
    return cur.execute(MINE, _mine_params(record)).fetchone()


def _my_claim(cur: Cursor, record: CallRecord) -> Held | None:
    """This attempt's claim, if it was committed: the row is pending under it."""
    row = _mine(cur, record)
    return Held(row[1]) if row is not None and row[0] == CallStatus.PENDING else None


def _my_outcome(cur: Cursor, record: CallRecord) -> bool | None:
    """True if this attempt's outcome was committed: its row holds it (no longer pending)."""
    row = _mine(cur, record)
    return True if row is not None and row[0] != CallStatus.PENDING else None
