"""Every SQL statement AgentRelay runs lives here.

``LedgerStore`` is thread-safe. Every write is its own committed transaction, so a row the store has
written survives the process being killed the instant after. Failures surface as ``LedgerError`` naming
the ledger (password masked) and what to do; they are never swallowed.

SQLite: WAL journal, a busy timeout, ``BEGIN IMMEDIATE`` for writes (so concurrent writers queue on the
lock instead of failing on a snapshot upgrade), and one lock per store so the threads of a process take
turns rather than contending inside SQLite. ``synchronous=NORMAL`` by default: committed rows survive a
process crash; set ``LedgerOptions(sqlite_synchronous="FULL")`` to also survive power loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from opentelemetry import context as otel_context
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.pool import StaticPool

from ..encoding import compact_dumps
from ..errors import ConfigurationError, LedgerError, SchemaVersionError
from . import migrations
from .fastpath import Checkpointer, SqliteHotPath
from .records import CLAIMED, FAILED, PENDING, SUCCEEDED, CallRecord
from .schema import SCHEMA_VERSION, agent_runs, metadata, schema_info, tool_calls

_T = TypeVar("_T")
_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerOptions:
    """How the ledger's database is opened.

    ``busy_timeout_s``: how long a SQLite writer waits for another process's write lock before the call
    fails with ``LedgerError``. ``sqlite_synchronous``: ``NORMAL`` (survives a process crash) or ``FULL``
    (also survives power loss). ``engine_options``: passed to ``sqlalchemy.create_engine`` as they are
    (pool size, timeouts...), over AgentRelay's defaults (``pool_pre_ping=True`` on servers, so a
    connection the server dropped is replaced before use). ``upgrade``: bring a ledger of an older schema
    version up to date when opening it, instead of refusing it.
    """

    busy_timeout_s: float = 10.0
    sqlite_synchronous: str = "NORMAL"
    engine_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    upgrade: bool = False

    def __post_init__(self) -> None:
        if self.sqlite_synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"sqlite_synchronous={self.sqlite_synchronous!r} is not a SQLite synchronous mode; "
                f"use one of {', '.join(_SYNCHRONOUS)}."
            )
        if not self.busy_timeout_s >= 0:
            raise ConfigurationError(f"busy_timeout_s must be a number >= 0, not {self.busy_timeout_s!r}.")


def default_owner() -> str:
    """``host:pid`` of this process, stored on the rows it claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_is_gone(owner: str | None) -> bool:
    """True only when ``owner`` (host:pid) provably stopped: same host, and no such process."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    # a zombie (exited, not yet reaped by its parent) is gone too
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except OSError:
        return False


def utc(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)


class LedgerStore:
    """The ``agent_runs`` / ``tool_calls`` ledger behind one SQLAlchemy engine."""

    def __init__(self, url: str | sa.URL, options: LedgerOptions | None = None) -> None:
        self.options = options or LedgerOptions()
        self.url = sa.make_url(url)
        self.database = self.url.render_as_string(hide_password=True)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine = self._create_engine()
        # Writes on SQLite open with BEGIN IMMEDIATE; the option rides on connections of this engine view.
        self._write_engine = self.engine.execution_options(agent_relay_write=True)
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else contextlib.nullcontext()
        )
        self._insert_call = tool_calls.insert()
        self._checkpointer = Checkpointer(self.engine, self._lock) if self._background_checkpoints else None
        self._writer: ThreadPoolExecutor | None = None  # see write_in_background
        self._writer_lock = threading.Lock()
        self._hot = SqliteHotPath(self.engine, self._checkpointer) if self.is_sqlite else None
        dialect_insert = sqlite.insert if self.is_sqlite else postgresql.insert
        self._claim_stmt, self._existing_stmt, self._complete_stmt = _call_statements(dialect_insert)
        self._outcome_stmt = _outcome_statement(dialect_insert)

    # --- set-up ---------------------------------------------------------------------------------------
    @property
    def _in_memory(self) -> bool:
        db = self.url.database
        return self.is_sqlite and (not db or db == ":memory:" or self.url.query.get("mode") == "memory")

    @property
    def _background_checkpoints(self) -> bool:
        """A file-backed SQLite ledger checkpoints its WAL on a background thread (see ``Checkpointer``),
        unless every commit syncs (``synchronous=FULL``): there a checkpoint's sync of the database file
        would hold up the callers' WAL syncs, which cost more than the checkpoint it takes off them."""
        synchronous = self.options.sqlite_synchronous.upper()
        return self.is_sqlite and not self._in_memory and synchronous in ("OFF", "NORMAL")

    def _create_engine(self) -> Engine:
        kwargs: dict[str, Any] = {"json_serializer": compact_dumps}
        if not self.is_sqlite:
            kwargs["pool_pre_ping"] = True
        if self.is_sqlite:
            connect_args: dict[str, Any] = {
                "check_same_thread": False,
                "timeout": self.options.busy_timeout_s,
            }
            if self._in_memory:
                kwargs["poolclass"] = StaticPool
            kwargs["connect_args"] = connect_args
        kwargs.update(self.options.engine_options)
        try:
            engine = sa.create_engine(self.url, **kwargs)
        except (ImportError, sa.exc.ArgumentError) as exc:
            raise LedgerError(
                f"cannot open the ledger at {self.database}: {exc}. Check AGENT_RELAY_DATABASE_URL (for "
                f"PostgreSQL install agent-relay[postgres] and use postgresql+psycopg://...).",
                database=self.database,
            ) from exc
        if self.is_sqlite:
            self._configure_sqlite(engine)
        return engine

    def _configure_sqlite(self, engine: Engine) -> None:
        synchronous = self.options.sqlite_synchronous.upper()
        busy_ms = int(self.options.busy_timeout_s * 1000)
        checkpoint_in_background = self._background_checkpoints

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Transactions are ours to begin (below), not the sqlite3 module's implicit ones.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute(f"PRAGMA synchronous={synchronous}")
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                cur.execute("PRAGMA foreign_keys=ON")
                if checkpoint_in_background:
                    cur.execute("PRAGMA wal_autocheckpoint=0")
            finally:
                cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("agent_relay_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    def open(self) -> None:
        """Create the tables on an empty database, or check (and with ``upgrade``, upgrade) its version."""
        with self._guard("read the schema version"):
            found = self._read_version()
            if found is None:
                with self._write_engine.begin() as conn:
                    metadata.create_all(conn)
                    if conn.execute(sa.select(schema_info.c.version)).first() is None:
                        conn.execute(
                            schema_info.insert().values(
                                id=1, version=SCHEMA_VERSION, created_at=dt.datetime.now(dt.UTC)
                            )
                        )
                found = self._read_version()
        if found is not None and found < SCHEMA_VERSION and self.options.upgrade:
            self.upgrade()
            return
        if found != SCHEMA_VERSION:
            raise SchemaVersionError(database=self.database, found=found or 0, expected=SCHEMA_VERSION)

    def upgrade(self) -> tuple[int, int]:
        """Upgrade the ledger to this version's schema, one recorded step at a time; (from, to).

        Safe to run concurrently (upgraders serialise on the version row) and twice (a no-op). A ledger
        of a newer version is refused with ``SchemaVersionError``.
        """
        with self._guard("upgrade the schema"):
            start = self._read_version()
            if start is None:
                raise LedgerError(
                    f"the database at {self.database} holds no AgentRelay ledger to upgrade; "
                    f"opening it with an AgentRuntime creates one.",
                    database=self.database,
                )
            if start > SCHEMA_VERSION:
                raise SchemaVersionError(database=self.database, found=start, expected=SCHEMA_VERSION)
            for version in range(start + 1, SCHEMA_VERSION + 1):
                with self._write_engine.begin() as conn:
                    locked = sa.select(schema_info.c.version).where(schema_info.c.id == 1)
                    if not self.is_sqlite:
                        locked = locked.with_for_update()
                    if conn.execute(locked).scalar_one() >= version:
                        continue  # another upgrader got there first
                    migrations.STEPS[version](conn)
                    conn.execute(schema_info.update().where(schema_info.c.id == 1).values(version=version))
        return start, SCHEMA_VERSION

    def _read_version(self) -> int | None:
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table(schema_info.name):
                return None
            return conn.execute(sa.select(schema_info.c.version).where(schema_info.c.id == 1)).scalar()

    def dispose(self) -> None:
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.shutdown(wait=True)
        if self._checkpointer is not None:
            self._checkpointer.stop()
        if self._hot is not None:
            with self._lock:
                self._hot.close()
        self.engine.dispose()

    # --- error handling -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _guard(
        self, action: str, *, run_id: str | None = None, tool_name: str | None = None
    ) -> Iterator[None]:
        """Serialise (SQLite), keep our own SQL out of traces, and turn driver errors into LedgerError."""
        token = otel_context.attach(otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            with self._lock:
                yield
        except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
            raise LedgerError(
                f"could not {action} in the ledger at {self.database}: {_reason(exc)}. {_advice(exc)}",
                database=self.database,
                run_id=run_id,
                tool_name=tool_name,
            ) from exc
        finally:
            otel_context.detach(token)

    def _hot_write(self, write: Callable[[CallRecord], _T], record: CallRecord, action: str) -> _T:
        """``_guard`` for the SQLite hot path, written out: it runs twice on every live call.

        Instrumentation is suppressed only when the DB-API connection is instrumented (a proxy, not a
        plain ``sqlite3.Connection``): a plain one cannot emit spans for our own SQL.
        """
        assert self._hot is not None
        token = None
        with self._lock:
            try:
                if self._hot.instrumented:
                    token = otel_context.attach(
                        otel_context.set_value(otel_context._SUPPRESS_INSTRUMENTATION_KEY, True)
                    )
                return write(record)
            except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
                raise self._call_failed(action, record, exc) from exc
            finally:
                if token is not None:
                    otel_context.detach(token)

    def _call_failed(self, action: str, record: CallRecord, exc: Exception) -> LedgerError:
        """The ``LedgerError`` of one call's write, ``action`` naming it (``"claim a call of tool"``)."""
        err = LedgerError(
            f"could not {action} {record.tool_name!r} in the ledger at {self.database}: "
            f"{_reason(exc)}. {_advice(exc)}",
            database=self.database,
            run_id=record.run_id,
            tool_name=record.tool_name,
        )
        err.__cause__ = exc
        return err

    def write_batch(
        self, claims: Sequence[CallRecord], completions: Sequence[CallRecord]
    ) -> dict[int, LedgerError]:
        """Claim ``claims`` and complete ``completions`` in one committed transaction.

        Returns the records that failed, by ``id(record)``, with their ``LedgerError``; the others are
        claimed (``record.claim`` filled in) or completed. If the transaction itself fails, every
        record fails with the same error, raised here. (On a server a failing statement aborts the
        transaction, so the batch is written again with a savepoint around each statement.)
        """
        first = (list(claims) + list(completions))[0]
        action = f"record {len(claims) + len(completions)} tool calls (of run {first.run_id} and others)"
        with self._guard(action, run_id=first.run_id):
            failed: Mapping[int, Exception | None] = (
                self._hot.write_batch(claims, completions)
                if self._hot is not None
                else self._server_batch(claims, completions)
            )
        errors: dict[int, LedgerError] = {}
        for records, what in ((claims, "claim a call of tool"), (completions, "record the outcome of tool")):
            for record in records:
                if id(record) not in failed:
                    if records is completions:
                        record.completed = True
                    continue
                cause = failed[id(record)]
                errors[id(record)] = (
                    self._not_recorded(record) if cause is None else self._call_failed(what, record, cause)
                )
        return errors

    def _server_batch(
        self, claims: Sequence[CallRecord], completions: Sequence[CallRecord]
    ) -> dict[int, Exception | None]:
        """``write_batch`` through SQLAlchemy: (as ``SqliteHotPath.write_batch``) the failures by record.

        First all in one plain transaction; if a statement fails (rare: it aborts the whole transaction on
        PostgreSQL), the batch is written again with a savepoint around each statement, so only the
        failing ones fail. Savepoints cost two round trips per statement, which the first try saves."""
        try:
            return self._server_batch_once(claims, completions, savepoints=False)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            return self._server_batch_once(claims, completions, savepoints=True)

    def _server_batch_once(
        self, claims: Sequence[CallRecord], completions: Sequence[CallRecord], *, savepoints: bool
    ) -> dict[int, Exception | None]:
        failed: dict[int, Exception | None] = {}
        found: list[tuple[CallRecord, tuple[Any, Any]]] = []
        writes = [(r, True) for r in claims] + [(r, False) for r in completions]
        with self._write_engine.begin() as conn:
            for record, is_claim in writes:
                savepoint = conn.begin_nested() if savepoints else None
                try:
                    if is_claim:
                        found.append((record, self._claim_on(conn, record)))
                    elif self._complete_on(conn, record) != 1:
                        failed[id(record)] = None
                except sa.exc.DBAPIError as exc:
                    if savepoint is None:
                        raise  # it aborted the transaction: the caller tries again with savepoints
                    savepoint.rollback()
                    failed[id(record)] = exc
                    continue
                if savepoint is not None:
                    savepoint.commit()
        for record, claimed in found:
            _apply_claimed(record, *claimed)
        return failed

    def _claim_on(self, conn: Connection, record: CallRecord) -> tuple[Any, Any]:
        """The claim's statements on ``conn``: (attempts if claimed, else the row holding the key)."""
        assert record.started_ns is not None
        params = {
            "call_id": record.call_id,
            "run_id": record.run_id,
            "seq": record.seq,
            "tool_name": record.tool_name,
            "phase": record.phase,
            "idempotency_key": record.idempotency_key,
            "arguments": record.arguments,
            "trace_id": record.trace_id,
            "span_id": record.span_id,
            "started_at": utc(record.started_ns),
            "owner": record.owner,
        }
        attempts = conn.execute(self._claim_stmt, params).scalar()
        if attempts is not None:
            return attempts, None
        key = {"run_id": record.run_id, "phase": record.phase, "idempotency_key": record.idempotency_key}
        return None, conn.execute(self._existing_stmt, key).one()

    def _complete_on(self, conn: Connection, record: CallRecord) -> int:
        """The outcome's statement on ``conn``: 1 if written, 0 if the row was not there to take it."""
        assert record.ended_ns is not None
        if not record.pending_row:
            written = conn.execute(self._outcome_stmt, _complete_values(record)).scalar()
            return 0 if written is None else 1
        values = {
            "b_call_id": record.call_id,
            "status": record.status,
            "output": record.output,
            "error_type": record.error_type,
            "error_message": record.error_message,
            "cost_usd": record.cost_usd,
            "cost_unknown": record.cost_unknown,
            "input_tokens": record.input_tokens,
            "output_tokens": record.output_tokens,
            "model": record.model,
            "ended_at": utc(record.ended_ns),
        }
        return int(conn.execute(self._complete_stmt, values).rowcount)

    # --- runs ----------------------------------------------------------------------------------------
    def insert_run(self, **values: Any) -> None:
        with (
            self._guard("record the start of the run", run_id=values.get("run_id")),
            self._write_engine.begin() as conn,
        ):
            conn.execute(agent_runs.insert().values(**values))

    def finish_run(self, run_id: str, **values: Any) -> None:
        with self._guard("record the end of the run", run_id=run_id), self._write_engine.begin() as conn:
            conn.execute(agent_runs.update().where(agent_runs.c.run_id == run_id).values(**values))

    def get_run(self, run_id: str) -> Row[Any] | None:
        with self._guard("read a run", run_id=run_id), self.engine.connect() as conn:
            return conn.execute(sa.select(agent_runs).where(agent_runs.c.run_id == run_id)).first()

    def list_calls(self, run_id: str) -> Sequence[Row[Any]]:
        with self._guard("read the calls of a run", run_id=run_id), self.engine.connect() as conn:
            return conn.execute(
                sa.select(tool_calls).where(tool_calls.c.run_id == run_id).order_by(tool_calls.c.seq)
            ).all()

    def succeeded_forward_calls(self, run_id: str) -> Sequence[Any]:
        """The run's succeeded forward calls, latest first (the order a saga unwinds them)."""
        c = tool_calls.c
        stmt = (
            sa.select(c.call_id, c.seq, c.tool_name, c.arguments, c.output)
            .where(c.run_id == run_id, c.phase == "forward", c.status == "succeeded", c.origin == "live")
            .order_by(c.seq.desc())
        )
        with self._guard("read the calls of a run", run_id=run_id), self.engine.connect() as conn:
            return conn.execute(stmt).all()

    def forward_calls(self, run_id: str) -> Sequence[Any]:
        """Every forward call of a run in ``seq`` order: what a replay serves from."""
        c = tool_calls.c
        stmt = (
            sa.select(
                c.call_id,
                c.seq,
                c.tool_name,
                c.idempotency_key,
                c.arguments,
                c.output,
                c.status,
                c.error_type,
                c.error_message,
                c.cost_usd,
                c.cost_unknown,
                c.input_tokens,
                c.output_tokens,
                c.model,
            )
            .where(c.run_id == run_id, c.phase == "forward")
            .order_by(c.seq)
        )
        with self._guard("read the calls of a run", run_id=run_id), self.engine.connect() as conn:
            return conn.execute(stmt).all()

    def call_totals(self, run_id: str) -> tuple[Decimal, bool, int, int]:
        """(cost, any cost unknown, input tokens, output tokens) summed over a run's calls."""
        c = tool_calls.c
        stmt = sa.select(
            sa.func.coalesce(sa.func.sum(c.cost_usd), 0),
            sa.func.max(sa.case((c.cost_unknown, 1), else_=0)),
            sa.func.coalesce(sa.func.sum(c.input_tokens), 0),
            sa.func.coalesce(sa.func.sum(c.output_tokens), 0),
        ).where(c.run_id == run_id)
        with self._guard("read the calls of a run", run_id=run_id), self.engine.connect() as conn:
            cost, unknown, inp, out = conn.execute(stmt).one()
        return Decimal(str(cost)), bool(unknown), int(inp), int(out)

    def write_in_background(self, records: Sequence[CallRecord]) -> Future[None]:
        """``insert_complete`` on the store's writer thread (one per store, started on first use), so
        the caller does not wait for it; the future raises its ``LedgerError``. ``dispose`` waits for
        what was submitted."""
        with self._writer_lock:
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-relay-writer")
            return self._writer.submit(self.insert_complete, records)

    def insert_complete(self, records: Sequence[CallRecord]) -> None:
        """Record finished calls in one transaction, each a complete row (a replay's calls: ``origin``
        ``replayed`` when served from the source run, ``diverged`` when the source has no such call)."""
        if not records:
            return
        first = records[0]
        with self._guard(
            f"record replayed calls of run {first.run_id}", run_id=first.run_id, tool_name=first.tool_name
        ):
            if self._hot is not None:
                self._hot.insert_complete(records)
                return
            values = [_complete_values(r) for r in records]
            with self._write_engine.begin() as conn:
                # the statement is built once; the values travel as parameters (see _call_statements)
                conn.execute(self._insert_call, values)

    def settle(self, call_id: str, **values: Any) -> bool:
        """Write the outcome of a pending call by hand; False if it was not pending."""
        stmt = tool_calls.update().where(tool_calls.c.call_id == call_id, tool_calls.c.status == PENDING)
        with self._guard("settle a call"), self._write_engine.begin() as conn:
            return bool(conn.execute(stmt.values(**values)).rowcount)

    def get_call(self, call_id: str) -> Row[Any] | None:
        with self._guard("read a call"), self.engine.connect() as conn:
            return conn.execute(sa.select(tool_calls).where(tool_calls.c.call_id == call_id)).first()

    def max_seq(self, run_id: str) -> int:
        stmt = sa.select(sa.func.coalesce(sa.func.max(tool_calls.c.seq), 0)).where(
            tool_calls.c.run_id == run_id
        )
        with self._guard("read the calls of a run", run_id=run_id), self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    # --- calls ---------------------------------------------------------------------------------------
    def claim(self, record: CallRecord) -> None:
        """Insert the pending row (or re-open a failed one); commit; fill in ``record.claim``.

        ``CLAIMED``: this worker now holds the call (``attempts`` counts tries). ``EXISTS``: a pending or
        succeeded row already holds the key; ``existing_status`` / ``existing_output`` say which.
        """
        assert record.started_ns is not None
        if self._hot is not None:
            self._hot_write(self._hot.claim, record, "claim a call of tool")
            return
        action = f"claim a call of tool {record.tool_name!r}"
        with (
            self._guard(action, run_id=record.run_id, tool_name=record.tool_name),
            self._write_engine.begin() as conn,
        ):
            claimed = self._claim_on(conn, record)
        _apply_claimed(record, *claimed)

    def find_succeeded(self, record: CallRecord) -> None:
        """Durability ``outcome``: if a succeeded row already holds the call's key, mark the record
        ``EXISTS`` with it (the wrapper serves it) instead of running the call again."""
        row: tuple[Any, ...] | None
        if self._hot is not None:
            row = self._hot_write(self._hot.existing, record, "look up a call of tool")
        else:
            with (
                self._guard(f"look up a call of tool {record.tool_name!r}", run_id=record.run_id),
                self.engine.connect() as conn,
            ):
                found = conn.execute(
                    self._existing_stmt,
                    {
                        "run_id": record.run_id,
                        "phase": record.phase,
                        "idempotency_key": record.idempotency_key,
                    },
                ).first()
            row = None if found is None else tuple(found)
        if row is not None and row[0] == SUCCEEDED:
            record.found(*row)

    def take_over(self, record: CallRecord) -> bool:
        """Claim a pending row whose owner (``record.existing_owner``) is gone; False if someone else did."""
        c = tool_calls.c
        stmt = (
            tool_calls.update()
            .where(c.call_id == record.call_id, c.status == PENDING, c.owner == record.existing_owner)
            .values(
                owner=record.owner,
                attempts=c.attempts + 1,
                seq=record.seq,
                trace_id=record.trace_id,
                span_id=record.span_id,
                started_at=utc(record.started_ns or 0),
            )
            .returning(c.attempts)
        )
        with (
            self._guard(
                f"take over a call of tool {record.tool_name!r}",
                run_id=record.run_id,
                tool_name=record.tool_name,
            ),
            self._write_engine.begin() as conn,
        ):
            attempts = conn.execute(stmt).scalar()
        if attempts is None:
            return False
        record.held(attempts)
        return True

    def complete(self, record: CallRecord) -> None:
        """Write the call's outcome and commit: onto its pending row, or (durability ``outcome``, no
        pending row) as the whole row, over a failed earlier try of its key only."""
        assert record.ended_ns is not None and record.claim == CLAIMED
        action = "record the outcome of tool"
        if self._hot is not None:
            written = self._hot_write(self._hot.finish, record, action)
        else:
            with (
                self._guard(
                    f"{action} {record.tool_name!r}", run_id=record.run_id, tool_name=record.tool_name
                ),
                self._write_engine.begin() as conn,
            ):
                written = self._complete_on(conn, record)
        if written != 1:
            raise self._not_recorded(record)
        record.completed = True

    def _not_recorded(self, record: CallRecord) -> LedgerError:
        """A call whose outcome found no row to take it: another worker settled or recorded it first."""
        why = "was no longer pending: another worker settled it"
        if not record.pending_row:
            why = "was already recorded by another worker"
        return LedgerError(
            f"call {record.call_id} (tool {record.tool_name!r}, run {record.run_id}) {why} in the ledger at "
            f"{self.database}; its outcome here was not recorded.",
            database=self.database,
            run_id=record.run_id,
            tool_name=record.tool_name,
        )


def _apply_claimed(record: CallRecord, attempts: Any, row: Any) -> None:
    """Fill in the record from a committed claim: held by this worker, or the row that holds its key."""
    if attempts is not None:
        record.held(attempts)
    else:
        record.found(row.status, row.output, row.attempts, row.owner, row.arguments)


def _complete_values(r: CallRecord) -> dict[str, Any]:
    """A finished call's row, by column."""
    return {
        "call_id": r.call_id,
        "run_id": r.run_id,
        "seq": r.seq,
        "tool_name": r.tool_name,
        "phase": r.phase,
        "idempotency_key": r.idempotency_key,
        "arguments": r.arguments,
        "output": r.output,
        "status": r.status,
        "error_type": r.error_type,
        "error_message": r.error_message,
        "cost_usd": r.cost_usd,
        "cost_unknown": r.cost_unknown,
        "input_tokens": r.input_tokens,
        "output_tokens": r.output_tokens,
        "model": r.model,
        "trace_id": r.trace_id,
        "span_id": r.span_id,
        "started_at": utc(r.started_ns or 0),
        "ended_at": utc(r.ended_ns or r.started_ns or 0),
        "attempts": r.attempts or 1,
        "owner": r.owner,
        "origin": r.origin,
    }


def _outcome_statement(insert: Any) -> Any:
    """Durability ``outcome``: insert the finished call's row; over a failed earlier try of the same key,
    overwrite it (counting the attempt); over any other row, change nothing (no row returned)."""
    c = tool_calls.c
    ins = insert(tool_calls).values(
        {col.name: sa.bindparam(col.name, type_=col.type) for col in tool_calls.c}
    )
    kept = ("call_id", "run_id", "phase", "idempotency_key", "tool_name", "arguments", "attempts", "origin")
    return ins.on_conflict_do_update(
        index_elements=[c.run_id, c.phase, c.idempotency_key],
        set_={col.name: ins.excluded[col.name] for col in tool_calls.c if col.name not in kept}
        | {"attempts": c.attempts + 1},
        where=c.status == FAILED,
    ).returning(c.attempts)  # a row back if written (psycopg reports no rowcount for it)


def _call_statements(insert: Any) -> tuple[Any, Any, Any]:
    """The hot-path statements, built once per store (building them per call costs more than running them).

    claim: insert the pending row; on a key conflict re-open the row only if it failed (a retry), else
    return nothing so the caller reads what holds the key. existing: that read. complete: the outcome.
    """
    c = tool_calls.c
    claim_columns = (
        "call_id",
        "run_id",
        "seq",
        "tool_name",
        "phase",
        "idempotency_key",
        "arguments",
        "trace_id",
        "span_id",
        "started_at",
        "owner",
    )
    ins = insert(tool_calls).values(
        {name: sa.bindparam(name, type_=c[name].type) for name in claim_columns}
        | {"status": PENDING, "attempts": 1}
    )
    claim = ins.on_conflict_do_update(
        index_elements=[c.run_id, c.phase, c.idempotency_key],
        set_={
            "status": PENDING,
            "attempts": c.attempts + 1,
            "seq": ins.excluded.seq,
            "trace_id": ins.excluded.trace_id,
            "span_id": ins.excluded.span_id,
            "started_at": ins.excluded.started_at,
            "owner": ins.excluded.owner,
            "ended_at": None,
            "output": None,
            "error_type": None,
            "error_message": None,
        },
        where=c.status == FAILED,
    ).returning(c.attempts)
    existing = sa.select(c.status, c.output, c.attempts, c.owner, c.arguments).where(
        c.run_id == sa.bindparam("run_id"),
        c.phase == sa.bindparam("phase"),
        c.idempotency_key == sa.bindparam("idempotency_key"),
    )
    outcome_columns = (
        "status",
        "output",
        "error_type",
        "error_message",
        "cost_usd",
        "cost_unknown",
        "input_tokens",
        "output_tokens",
        "model",
        "ended_at",
    )
    complete = (
        tool_calls.update()
        .where(c.call_id == sa.bindparam("b_call_id"), c.status == PENDING)
        .values({name: sa.bindparam(name, type_=c[name].type) for name in outcome_columns})
    )
    return claim, existing, complete


def _reason(exc: Exception) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]


def _advice(exc: Exception) -> str:
    text = _reason(exc).lower()
    if "readonly" in text or "read-only" in text or "read only" in text:
        return (
            "The database is read-only: point AGENT_RELAY_DATABASE_URL at a writable ledger or fix its "
            "permissions."
        )
    if "locked" in text or "busy" in text:
        return (
            "Another process held the ledger's write lock longer than the busy timeout; retry, or raise "
            "LedgerOptions(busy_timeout_s=...)."
        )
    if "unable to open" in text:
        return "Check that the ledger's directory exists and is writable."
    if "database" in text and "does not exist" in text:
        return "Create the database first (CREATE DATABASE ...), or check the name in the URL."
    if "no such table" in text or "no such column" in text or "does not exist" in text:
        return "The ledger's tables are missing or from another version; open it with a matching agent-relay."
    return "Check that the database is reachable and writable."
