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
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from ..encoding import compact_dumps
from .records import CLAIMED, EXISTS, CallRecord

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
COMPLETE = (
    "UPDATE tool_calls SET status = ?, output = ?, error_type = ?, error_message = ?, cost_usd = ?, "
    "cost_unknown = ?, input_tokens = ?, output_tokens = ?, model = ?, ended_at = ? "
    "WHERE call_id = ? AND status = 'pending'"
)


def timestamp(ns: int) -> str:
    """A UTC instant as SQLAlchemy's SQLite DateTime stores it."""
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def json_text(value: Any) -> str | None:
    return None if value is None else compact_dumps(value)


class SqliteHotPath:
    """Claim and complete on one pooled sqlite3 connection, kept checked out.

    Not thread-safe on its own: callers hold the store's lock, which serialises a process's SQLite work
    anyway, so one connection serves every thread (and saves a pool checkout per transaction).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pooled: Any = None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if self._pooled is None:
            self._pooled = self._engine.raw_connection()
        conn: sqlite3.Connection = self._pooled.driver_connection
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error:
            self.close()  # a fresh connection next time, in case this one is broken
            raise

    def close(self) -> None:
        """Return the connection to the pool."""
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            with contextlib.suppress(Exception):
                pooled.close()

    def claim(self, record: CallRecord) -> None:
        assert record.started_ns is not None
        with self._transaction() as conn:
            row = conn.execute(
                CLAIM,
                (
                    record.call_id,
                    record.run_id,
                    record.seq,
                    record.tool_name,
                    record.phase,
                    record.idempotency_key,
                    json_text(record.arguments),
                    record.trace_id,
                    record.span_id,
                    timestamp(record.started_ns),
                    record.owner,
                ),
            ).fetchone()
            if row is not None:
                record.claim, record.attempts = CLAIMED, row[0]
                return
            status, output, attempts, owner, arguments = conn.execute(
                EXISTING, (record.run_id, record.phase, record.idempotency_key)
            ).fetchone()
        record.claim, record.existing_status, record.existing_owner = EXISTS, status, owner
        record.existing_output = None if output is None else json.loads(output)
        record.existing_arguments = None if arguments is None else json.loads(arguments)
        record.attempts = attempts

    def insert_complete(self, records: Sequence[CallRecord]) -> None:
        rows = [
            (
                r.call_id,
                r.run_id,
                r.seq,
                r.tool_name,
                r.phase,
                r.idempotency_key,
                json_text(r.arguments),
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
            for r in records
        ]
        with self._transaction() as conn:
            conn.executemany(INSERT_COMPLETE, rows)

    def complete(self, record: CallRecord) -> int:
        """Write the outcome; the number of rows updated (1, or 0 if the row was no longer pending)."""
        assert record.ended_ns is not None
        cost = None if record.cost_usd is None else float(record.cost_usd)
        with self._transaction() as conn:
            return conn.execute(
                COMPLETE,
                (
                    record.status,
                    json_text(record.output),
                    record.error_type,
                    record.error_message,
                    cost,
                    int(record.cost_unknown),
                    record.input_tokens,
                    record.output_tokens,
                    record.model,
                    timestamp(record.ended_ns),
                    record.call_id,
                ),
            ).rowcount
