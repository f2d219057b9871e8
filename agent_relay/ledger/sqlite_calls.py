"""The SQLite writer backend: a tool call's statements as plain ``sqlite3`` on one pooled connection.

SQLAlchemy's per-execution machinery (events, compiled-cache lookups, result processing) costs more than
the SQLite work itself, and these transactions are on every live tool call; so the statements are
written out here, from the same column lists as the SQLAlchemy backend's (``columns``), and values are
stored exactly as SQLAlchemy's column types store them on SQLite (JSON text, ``YYYY-MM-DD
HH:MM:SS.ffffff`` UTC timestamps, exact decimal text for money, 0/1 booleans), so every reader sees the
same rows either way. ``tests/integration/test_writer_parity.py`` writes the same calls through both
and compares them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from ..states import CallStatus, Durability
from . import columns as col
from .budget_rows import amounts, reserve_sqlite, settle_sqlite, settles
from .checkpoint import Checkpointer
from .records import CallRecord, Claim, Found, Held, Reserved


def _insert(names: tuple[str, ...]) -> str:
    return f"INSERT INTO tool_calls ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


def _assign(names: tuple[str, ...], source: str) -> str:
    return ", ".join(f"{name} = {source.format(name)}" for name in names)


# a new try over a failed row of the same key: its attempt and outcome columns anew, the attempt counted
_RETRY = (
    f" ON CONFLICT ({', '.join(col.KEY)}) DO UPDATE SET {_assign(col.RETRY_SET, 'excluded.{}')}, "
    f"attempts = tool_calls.attempts + 1 WHERE tool_calls.status = '{CallStatus.FAILED}' RETURNING attempts"
)
CLAIM = _insert(col.CLAIM) + _RETRY
INSERT_OUTCOME = _insert(col.ROW) + _RETRY
INSERT_ROW = _insert(col.ROW)
FIND = f"SELECT {', '.join(col.FOUND)} FROM tool_calls WHERE {_assign(col.KEY, '?').replace(', ', ' AND ')}"
FINISH = (
    f"UPDATE tool_calls SET {_assign(col.OUTCOME, '?')} "
    f"WHERE call_id = ? AND status = '{CallStatus.PENDING}' AND owner = ?"
)
TAKE_OVER = (
    f"UPDATE tool_calls SET {_assign(col.ATTEMPT, '?')}, attempts = attempts + 1 "
    f"WHERE call_id = ? AND status = '{CallStatus.PENDING}' AND owner = ? "
    f"AND (lease_expires_at IS NULL OR lease_expires_at < ?) RETURNING attempts"
)

RENEW = (
    f"UPDATE tool_calls SET lease_expires_at = ? WHERE status = '{CallStatus.PENDING}' AND owner = ? "
    f"AND call_id IN ({{}}) RETURNING call_id"
)

_claim_params = col.sqlite_params(col.CLAIM)
_row_params = col.sqlite_params(col.ROW)
_key_params = col.sqlite_params(col.KEY)
_finish_params = col.sqlite_params((*col.OUTCOME, "call_id", "owner"))
_attempt_params = col.sqlite_params((*col.ATTEMPT, "call_id"))


def _found(row: tuple[Any, ...]) -> Found:
    status, output, attempts, owner, arguments, lease_until = row
    return col.found(
        (status, col.json_value(output), attempts, owner, col.json_value(arguments), lease_until)
    )


class SqliteCalls:
    """The writer backend for SQLite: every statement on one pooled ``sqlite3`` connection, kept checked
    out. Not thread-safe on its own: the writer holds the database's lock around each method, which
    serialises a process's SQLite work anyway, so one connection serves every thread."""

    def __init__(
        self,
        engine: Engine,
        checkpointer: Checkpointer | None = None,
        *,
        in_memory: bool = False,
    ) -> None:
        self._engine = engine
        self._in_memory = in_memory
        self._no_wait: Any = None  # (see batch_if_free)
        self._pooled: Any = None
        self._checkpointer = checkpointer
        database = engine.url.database
        self._path = database if database and database != ":memory:" and not engine.url.query else None
        self._file: int | None = None  # a descriptor of the ledger file, to see it deleted (see _check_file)
        # True until a connection shows it is a plain sqlite3.Connection (no DB-API instrumentation)
        self.instrumented = True

    def connection(self) -> sqlite3.Connection:
        """The ``sqlite3`` connection the statements run on (checked out of the pool on first use)."""
        if self._pooled is None:
            self._pooled = self._engine.raw_connection()
            self.instrumented = type(self._pooled.driver_connection) is not sqlite3.Connection
        conn: sqlite3.Connection = self._pooled.driver_connection
        return conn

    def _failed(self, conn: sqlite3.Connection) -> None:
        """Roll back after an error; a fresh connection next time, in case this one is broken."""
        with contextlib.suppress(sqlite3.Error):
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        self.close()

    def _commit(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")
        if self._path is not None and (self._file is None or not os.fstat(self._file).st_nlink):
            self._check_file()  # (opens the file's descriptor once, then raises if it was unlinked)
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def _check_file(self) -> None:
        """A commit counts only if it reached the ledger where it lives: a file deleted (or replaced by
        another, which unlinks it) while the connection was open takes commits no reader will ever see."""
        if self._file is None:
            self._file = os.open(self._path, os.O_RDONLY)  # type: ignore[arg-type]
        if os.fstat(self._file).st_nlink == 0:
            raise sqlite3.OperationalError(
                f"the ledger file {self._path} was deleted or replaced while this process was writing to it; "
                f"the write went to the old file"
            )

    def close(self) -> None:
        """Return the connection to the pool."""
        file, self._file = self._file, None
        if file is not None:
            os.close(file)
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            with contextlib.suppress(Exception):
                pooled.close()
        self._drop_no_wait()

    # The transactions below are written out (no context manager): they run on every live call.
    def claim(self, record: CallRecord) -> Claim:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            claim = self._claim_in(conn, record)
            self._commit(conn)
        except BaseException:
            self._failed(conn)
            raise
        return claim

    def finish(self, record: CallRecord) -> bool:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            written = self._finish_in(conn, record)
            self._commit(conn)
        except BaseException:
            self._failed(conn)
            raise
        return written

    def batch(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]]:
        """Every statement in one transaction; a statement's own error is its record's result (SQLite
        undoes only that statement). An error of the transaction itself raises: nothing was written."""
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._failed(conn)
            raise
        return self._batch_in(conn, claims, finishes)

    def encode(self, record: CallRecord, finish: bool) -> None:
        """Nothing ahead: a SQLite ledger's threads do not queue for shared commits."""
        return None

    def batch_if_free(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]] | None:
        """``batch``, only if it need not wait for the write lock: ``None`` (nothing written) if another
        connection holds it now. (Whether its commit may wait for the disk is the caller's to judge:
        ``CallWriter.write_batch_now``.)"""
        if self._in_memory:  # no other process can hold its lock (and this one's is held)
            return self.batch(claims, finishes)
        conn = self.no_wait_connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                return None
            self._drop_no_wait()
            raise
        except BaseException:
            self._drop_no_wait()
            raise
        return self._batch_in(conn, claims, finishes)

    def no_wait_connection(self) -> sqlite3.Connection:
        """The second connection of the ledger file ``batch_if_free`` writes on: its busy handler never
        waits (checked out of the pool on first use)."""
        if self._no_wait is None:
            self._no_wait = self._engine.raw_connection()
            self._no_wait.driver_connection.execute("PRAGMA busy_timeout=0")
        conn: sqlite3.Connection = self._no_wait.driver_connection
        return conn

    def _drop_no_wait(self) -> None:
        no_wait, self._no_wait = self._no_wait, None
        if no_wait is not None:
            with contextlib.suppress(Exception):
                no_wait.close()

    def _batch_in(
        self, conn: sqlite3.Connection, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]]:
        """The body of ``batch``, its transaction begun."""
        claimed: list[Claim | Exception] = []
        finished: list[bool | Exception] = []
        try:
            for record in claims:
                try:
                    claimed.append(self._claim_in(conn, record))
                except sqlite3.Error as exc:
                    claimed.append(exc)
            for record in finishes:
                try:
                    finished.append(self._finish_in(conn, record))
                except sqlite3.Error as exc:
                    finished.append(exc)
            self._commit(conn)
        except BaseException:
            self._failed(conn)
            raise
        return claimed, finished

    def insert_rows(self, records: Sequence[CallRecord]) -> None:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            # (one statement per row: a multi-row INSERT took about 25 µs of CPU per row here against
            # executemany's 17, and a replay timed until its rows are written was no faster with it)
            conn.executemany(INSERT_ROW, [_row_params(r) for r in records])
            self._commit(conn)
        except BaseException:
            self._failed(conn)
            raise

    def find(self, record: CallRecord) -> Found | None:
        conn = self.connection()
        try:
            row = conn.execute(FIND, _key_params(record)).fetchone()
        except BaseException:
            self._failed(conn)
            raise
        return None if row is None else _found(row)

    def take_over(self, record: CallRecord, owner: str | None, before_ns: int) -> int | None:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            params = (*_attempt_params(record), owner, col.timestamp(before_ns))
            row = conn.execute(TAKE_OVER, params).fetchone()
            self._commit(conn)
        except BaseException:
            self._failed(conn)
            raise
        return None if row is None else int(row[0])

    def renew(self, owner: str, call_ids: Sequence[str], until_ns: int) -> set[str]:
        """One statement, committed on its own: no transaction is left open between driver calls (a
        process frozen then would hold the ledger's write lock)."""
        conn = self.connection()
        stmt = RENEW.format(", ".join("?" * len(call_ids)))
        try:
            rows = conn.execute(stmt, (col.timestamp(until_ns), owner, *call_ids)).fetchall()
        except BaseException:
            self._failed(conn)
            raise
        return {row[0] for row in rows}

    def reserve(self, run_id: str, amount: Decimal) -> Reserved:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")  # (every writer of the file queues here: check and write at once)
            found = reserve_sqlite(conn, run_id, amount)
            self._commit(conn)
        except BaseException:
            self._failed(conn)
            raise
        return found

    def settle_run(self, run_id: str, cost: Decimal, hold: Decimal) -> None:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            settle_sqlite(conn, run_id, cost, hold)
            self._commit(conn)
        except BaseException:
            self._failed(conn)
            raise

    @staticmethod
    def _claim_in(conn: sqlite3.Connection, record: CallRecord) -> Claim:
        row = conn.execute(CLAIM, _claim_params(record)).fetchone()
        if row is not None:
            return Held(row[0])
        found = conn.execute(FIND, _key_params(record)).fetchone()
        assert found is not None  # the conflicting row: it was there inside the same transaction
        return _found(found)

    @staticmethod
    def _finish_in(conn: sqlite3.Connection, record: CallRecord) -> bool:
        if record.durability is Durability.OUTCOME:
            written = conn.execute(INSERT_OUTCOME, _row_params(record)).fetchone() is not None
        else:
            written = conn.execute(FINISH, _finish_params(record)).rowcount == 1
        if written and record.budget_hold is not None and settles(record):
            settle_sqlite(conn, *amounts(record))
        return written
