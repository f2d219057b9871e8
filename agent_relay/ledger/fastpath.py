"""The SQLite hot path: a tool call's claim and completion as two plain ``sqlite3`` transactions.

The statements are the ones ``store._call_statements`` builds with SQLAlchemy, written out for SQLite and
run on the pool's own DBAPI connection: SQLAlchemy's per-execution machinery (events, compiled-cache
lookups, result processing) cost more than the SQLite work itself, and these two transactions are on
every live tool call. Values are stored exactly as SQLAlchemy's column types store them on SQLite
(JSON text, ``YYYY-MM-DD HH:MM:SS.ffffff`` UTC timestamps, REAL money, 0/1 booleans), so every other
reader — the store, the CLI, users' SQL — sees the same rows either way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.engine import Engine

from ..encoding import compact_dumps
from .records import CallRecord

_log = logging.getLogger(__name__)

# Commits between two background checkpoints: a call writes ~9 WAL pages over its two commits, so this keeps
# the WAL near SQLite's own default checkpoint size (1,000 pages).
CHECKPOINT_EVERY = 200
# A WAL this long (pages) means other processes' writes kept it from starting over: restart it (below).
RESTART_FRAMES = 4000
# How long a restarting checkpoint waits for other processes' writers and readers, in milliseconds, for
# each RESTART_FRAMES the WAL has grown (their busy handlers poll too: a short wait can starve), at most
# RESTART_WAIT_MAX_MS.
RESTART_WAIT_MS = 200
RESTART_WAIT_MAX_MS = 2000

CLAIM = (
    "INSERT INTO tool_calls (call_id, run_id, seq, tool_name, phase, idempotency_key, arguments, trace_id, "
    "span_id, started_at, owner, status, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', 1) "
    "ON CONFLICT (run_id, phase, idempotency_key) DO UPDATE SET status = 'pending', "
    "attempts = tool_calls.attempts + 1, seq = excluded.seq, trace_id = excluded.trace_id, "
    "span_id = excluded.span_id, started_at = excluded.started_at, owner = excluded.owner, ended_at = NULL, "
    "output = NULL, error_type = NULL, error_message = NULL WHERE tool_calls.status = 'failed' "
    "RETURNING attempts"
)
EXISTING = (
    "SELECT status, output, attempts, owner, arguments FROM tool_calls "
    "WHERE run_id = ? AND phase = ? AND idempotency_key = ?"
)
INSERT_COMPLETE = (
    "INSERT INTO tool_calls (call_id, run_id, seq, tool_name, phase, idempotency_key, arguments, output, "
    "status, error_type, error_message, cost_usd, cost_unknown, input_tokens, output_tokens, model, "
    "trace_id, span_id, started_at, ended_at, attempts, owner, origin) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)"
)
# durability "outcome": the finished call's row; a failed earlier try of its key is overwritten
INSERT_OUTCOME = (
    INSERT_COMPLETE + " ON CONFLICT (run_id, phase, idempotency_key) DO UPDATE SET seq = excluded.seq, "
    "output = excluded.output, status = excluded.status, error_type = excluded.error_type, "
    "error_message = excluded.error_message, cost_usd = excluded.cost_usd, "
    "cost_unknown = excluded.cost_unknown, input_tokens = excluded.input_tokens, "
    "output_tokens = excluded.output_tokens, model = excluded.model, trace_id = excluded.trace_id, "
    "span_id = excluded.span_id, started_at = excluded.started_at, ended_at = excluded.ended_at, "
    "owner = excluded.owner, attempts = tool_calls.attempts + 1 WHERE tool_calls.status = 'failed'"
)
COMPLETE = (
    "UPDATE tool_calls SET status = ?, output = ?, error_type = ?, error_message = ?, cost_usd = ?, "
    "cost_unknown = ?, input_tokens = ?, output_tokens = ?, model = ?, ended_at = ? "
    "WHERE call_id = ? AND status = 'pending'"
)


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def timestamp(ns: int) -> str:
    """A UTC instant as SQLAlchemy's SQLite DateTime stores it (``YYYY-MM-DD HH:MM:SS.ffffff``).

    Calls come many to a second, so the second's text is formatted once and kept.
    """
    global _second
    seconds, micros = divmod(ns // 1000, 1_000_000)
    cached = _second
    if cached[0] != seconds:
        cached = _second = (seconds, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)))
    return f"{cached[1]}.{micros:06d}"


def json_value(stored: Any) -> Any:
    """A JSON column's value as read by ``sqlite3``. The columns are declared ``JSON``, which SQLite
    gives NUMERIC affinity: a stored number (``0``, ``1.5``) comes back as a number, not as its text."""
    return json.loads(stored) if isinstance(stored, str | bytes) else stored


def json_text(value: Any) -> str | None:
    return None if value is None else compact_dumps(value)


class Checkpointer:
    """Copies the WAL back into the database on a background thread, off the callers' commits.

    SQLite's automatic checkpoint runs inside whichever commit crosses ``wal_autocheckpoint`` pages, and
    with ``synchronous=NORMAL`` it syncs the WAL and the database file: that commit waits for it. The
    store opens its connections with ``wal_autocheckpoint=0`` instead (at ``synchronous=NORMAL``), and
    this thread checkpoints every ``CHECKPOINT_EVERY`` commits, and once a second while writes keep
    coming. First a PASSIVE checkpoint, which never blocks the writers: it copies the bulk of the WAL and
    pays its syncs while they go on. A WAL that keeps growing is only reset once a checkpoint has copied
    all of it, which a PASSIVE one racing the writers never does; so the few frames written meanwhile are
    copied by a second checkpoint holding ``lock`` (the store's: this process's writers wait for it), and
    the next transaction starts the WAL over. Other processes writing the same ledger can still keep it
    from starting over; once it passes ``RESTART_FRAMES`` pages, the second checkpoint is a RESTART,
    which also holds their writers back, waiting for them longer the longer the WAL has grown (this
    process's writers wait with it, so only while it is oversized). Durability
    is unchanged: a committed transaction is in the WAL either way. The thread starts with the first
    commit and stops when the store is disposed.
    """

    def __init__(self, engine: Engine, lock: contextlib.AbstractContextManager[Any]) -> None:
        self._engine = engine
        self._lock = lock
        self._wake = threading.Event()
        self._stop = False
        self._commits = 0
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def committed(self) -> None:
        """Count a commit; wake the thread when enough have piled up."""
        self._commits += 1
        if self._thread is None:
            self._start()
        elif self._commits >= CHECKPOINT_EVERY:
            self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None and not self._stop:
                self._thread = threading.Thread(target=self._run, name="agent-relay-checkpoint", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        conn: Any = None
        try:
            while not self._stop:
                self._wake.wait(1.0)
                self._wake.clear()
                if self._stop or not self._commits:
                    continue
                self._commits = 0
                try:
                    if conn is None:
                        conn = self._engine.raw_connection()
                    self._checkpoint(conn.driver_connection)
                except Exception:  # the next checkpoint (or SQLite's at close) catches up; never fatal
                    _log.debug("agent-relay: background WAL checkpoint failed", exc_info=True)
                    if conn is not None:
                        with contextlib.suppress(Exception):
                            conn.invalidate()
                    conn = None
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.invalidate()  # closed, not returned to the pool with its short busy timeout

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()  # the bulk, writers on
        if frames < RESTART_FRAMES:
            with self._lock:  # what was written meanwhile (the report counts only the frames it saw)
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            return
        wait_ms = min(RESTART_WAIT_MAX_MS, RESTART_WAIT_MS * (frames // RESTART_FRAMES))
        conn.execute(f"PRAGMA busy_timeout={wait_ms}")
        with self._lock:
            conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()

    def stop(self) -> None:
        """Stop the thread (waits for a checkpoint in progress)."""
        with self._start_lock:
            self._stop = True
            thread, self._thread = self._thread, None
        self._wake.set()
        if thread is not None:
            thread.join()


class SqliteHotPath:
    """Claim and complete on one pooled sqlite3 connection, kept checked out.

    Not thread-safe on its own: callers hold the store's lock, which serialises a process's SQLite work
    anyway, so one connection serves every thread (and saves a pool checkout per transaction).
    """

    def __init__(self, engine: Engine, checkpointer: Checkpointer | None = None) -> None:
        self._engine = engine
        self._pooled: Any = None
        self._checkpointer = checkpointer
        # True until a connection shows it is a plain sqlite3.Connection (no DB-API instrumentation)
        self.instrumented = True

    def _connection(self) -> sqlite3.Connection:
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

    def _committed(self, conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")
        if self._checkpointer is not None:
            self._checkpointer.committed()

    def close(self) -> None:
        """Return the connection to the pool."""
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            with contextlib.suppress(Exception):
                pooled.close()

    # The transactions below are written out (no context manager): they run on every live call.
    def claim(self, record: CallRecord) -> None:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            found = _claim_in(conn, record)
            self._committed(conn)
        except BaseException:
            self._failed(conn)
            raise
        _apply_claim(record, found)

    def write_batch(
        self, claims: Sequence[CallRecord], completions: Sequence[CallRecord]
    ) -> dict[int, sqlite3.Error | None]:
        """Claim and complete several calls in one transaction. Returns, by ``id(record)``, a statement's
        own error, or ``None`` where a completion found its row no longer pending (or, for a row without
        a pending one, already recorded); every other record is claimed or completed. An error of the
        transaction itself (it could not begin or commit) raises: then nothing was written."""
        failed: dict[int, sqlite3.Error | None] = {}
        found: list[tuple[CallRecord, tuple[Any, Any]]] = []
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            for record in claims:
                try:
                    found.append((record, _claim_in(conn, record)))
                except sqlite3.Error as exc:  # this statement was undone; the transaction goes on
                    failed[id(record)] = exc
            for record in completions:
                try:
                    if conn.execute(*_outcome_statement(record)).rowcount != 1:
                        failed[id(record)] = None
                except sqlite3.Error as exc:
                    failed[id(record)] = exc
            self._committed(conn)
        except BaseException:
            self._failed(conn)
            raise
        for record, claimed in found:
            _apply_claim(record, claimed)
        return failed

    def existing(self, record: CallRecord) -> tuple[Any, ...] | None:
        """The row holding the call's key, as ``EXISTING`` reads it (no transaction: one statement)."""
        conn = self._connection()
        try:
            row: tuple[Any, ...] | None = conn.execute(
                EXISTING, (record.run_id, record.phase, record.idempotency_key)
            ).fetchone()
        except BaseException:
            self._failed(conn)
            raise
        if row is None:
            return None
        status, output, attempts, owner, arguments = row
        return status, json_value(output), attempts, owner, json_value(arguments)

    def _write(self, sql: str, params: Any, *, many: bool = False) -> int:
        """One statement (or one per row, with ``many``) in its own committed transaction; rows changed."""
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            changed = (conn.executemany if many else conn.execute)(sql, params).rowcount
            self._committed(conn)
        except BaseException:
            self._failed(conn)
            raise
        return changed

    def insert_complete(self, records: Sequence[CallRecord]) -> None:
        self._write(INSERT_COMPLETE, [_complete_row(r) for r in records], many=True)

    def finish(self, record: CallRecord) -> int:
        """Write the call's outcome (``_outcome_statement``); 1, or 0 if no row could take it."""
        return self._write(*_outcome_statement(record))


def _complete_row(r: CallRecord) -> tuple[Any, ...]:
    """``INSERT_COMPLETE``'s parameters for a finished call."""
    return (
        r.call_id,
        r.run_id,
        r.seq,
        r.tool_name,
        r.phase,
        r.idempotency_key,
        r.arguments_text if r.arguments_text is not None else json_text(r.arguments),
        json_text(r.output),
        r.status,
        r.error_type,
        r.error_message,
        None if r.cost_usd is None else float(r.cost_usd),
        int(r.cost_unknown),
        r.input_tokens,
        r.output_tokens,
        r.model,
        r.trace_id,
        r.span_id,
        timestamp(r.started_ns or 0),
        timestamp(r.ended_ns or r.started_ns or 0),
        r.owner,
        r.origin,
    )


def _outcome_statement(record: CallRecord) -> tuple[str, tuple[Any, ...]]:
    """A finished call's statement: the outcome onto its pending row, or (durability ``outcome``, no
    pending row) the whole row inserted, over a failed earlier try of its key only."""
    if record.pending_row:
        return COMPLETE, _update_row(record)
    return INSERT_OUTCOME, _complete_row(record)


def _update_row(record: CallRecord) -> tuple[Any, ...]:
    """``COMPLETE``'s parameters: the outcome onto the call's pending row."""
    assert record.ended_ns is not None
    return (
        record.status,
        json_text(record.output),
        record.error_type,
        record.error_message,
        None if record.cost_usd is None else float(record.cost_usd),
        int(record.cost_unknown),
        record.input_tokens,
        record.output_tokens,
        record.model,
        timestamp(record.ended_ns),
        record.call_id,
    )


def _claim_in(conn: sqlite3.Connection, record: CallRecord) -> tuple[Any, Any]:
    """Run the claim inside the open transaction: (``RETURNING`` row, or the row holding the key)."""
    assert record.started_ns is not None
    params = (
        record.call_id,
        record.run_id,
        record.seq,
        record.tool_name,
        record.phase,
        record.idempotency_key,
        record.arguments_text if record.arguments_text is not None else json_text(record.arguments),
        record.trace_id,
        record.span_id,
        timestamp(record.started_ns),
        record.owner,
    )
    row = conn.execute(CLAIM, params).fetchone()
    if row is not None:
        return row, None
    return None, conn.execute(EXISTING, (record.run_id, record.phase, record.idempotency_key)).fetchone()


def _apply_claim(record: CallRecord, found: tuple[Any, Any]) -> None:
    """Fill in the record from a committed claim: held by this worker, or the row that holds its key."""
    row, existing = found
    if row is not None:
        record.held(row[0])
        return
    assert existing is not None  # the conflicting row: it was there inside the same transaction
    status, output, attempts, owner, arguments = existing
    record.found(status, json_value(output), attempts, owner, json_value(arguments))
