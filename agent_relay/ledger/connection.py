"""The ledger's database: how it is opened (``LedgerOptions``), its engine and lock, and the one way
driver errors become ``LedgerError``.

SQLite: WAL journal, a busy timeout, ``BEGIN IMMEDIATE`` for writes (so concurrent writers queue on the
lock instead of failing on a snapshot upgrade), and one lock per database so the threads of a process
take turns rather than contending inside SQLite. ``synchronous=NORMAL`` by default: committed rows
survive a process crash; ``LedgerOptions(sqlite_synchronous="FULL")`` also survives power loss.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import socket
import sqlite3
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from opentelemetry import context as otel_context
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY as SUPPRESS_INSTRUMENTATION_KEY
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from ..encoding import storage_dumps
from ..errors import ConfigurationError, LedgerError

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
DRIVER_ERRORS = (sa.exc.SQLAlchemyError, sqlite3.Error)


@dataclasses.dataclass(frozen=True, slots=True)
class LedgerOptions:
    """How the ledger's database is opened.

    ``busy_timeout_s``: how long a SQLite writer waits for another process's write lock before the call
    fails with ``LedgerError``. ``sqlite_synchronous``: ``NORMAL`` (survives a process crash) or ``FULL``
    (also survives power loss). ``engine_options``: passed to ``sqlalchemy.create_engine`` as they are
    (pool size, timeouts...), over AgentRelay's defaults (``pool_pre_ping=True`` on servers, so a
    connection the server dropped is replaced before use). On PostgreSQL through psycopg, the tool calls'
    own statements run on a separate pool of the same size (``pool_size`` + ``max_overflow``), without a
    ping: a statement a dropped connection failed is tried again on a new one (``ledger.pg_calls``).
    ``upgrade``: bring a ledger of an older schema version up to date when opening it, instead of
    refusing it. ``lease_s``: how long a claim on a call (its pending row) stays held without renewal;
    this process renews the leases of the calls it runs every ``lease_s / 3``, and a worker that finds a
    claim whose lease ran out treats the call as in doubt, its owner gone (``ledger.leases``). Keep it
    below ``AgentRuntime(wait_timeout_s=...)``, and well above the clock skew between hosts.
    """

    busy_timeout_s: float = 10.0
    sqlite_synchronous: str = "NORMAL"
    engine_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    upgrade: bool = False
    lease_s: float = 30.0

    def __post_init__(self) -> None:
        if self.sqlite_synchronous.upper() not in _SYNCHRONOUS:
            raise ConfigurationError(
                f"sqlite_synchronous={self.sqlite_synchronous!r} is not a SQLite synchronous mode; "
                f"use one of {', '.join(_SYNCHRONOUS)}."
            )
        if not self.busy_timeout_s >= 0:
            raise ConfigurationError(f"busy_timeout_s must be a number >= 0, not {self.busy_timeout_s!r}.")
        lease = self.lease_s
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not 0 < lease < 1e9:
            raise ConfigurationError(
                f"lease_s must be a number of seconds > 0 (how long a claim stays held without renewal, "
                f"e.g. LedgerOptions(lease_s=30)), not {lease!r}."
            )


def default_owner() -> str:
    """``host:pid`` of this process, stored on the rows it claims."""
    return f"{socket.gethostname()}:{os.getpid()}"


IN_DOUBT_OWNER = "in-doubt"
"""The owner of a pending row its worker let go of without knowing its outcome (its body timed out)."""


def owner_is_gone(owner: str | None) -> bool:
    """True only when ``owner`` (host:pid) provably stopped: same host, and no such process; or when its
    worker let the row go (``IN_DOUBT_OWNER``)."""
    if owner == IN_DOUBT_OWNER:
        return True
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


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def utc(ns: int) -> dt.datetime:
    """An instant in ns since the epoch, truncated to the microsecond exactly as the SQLite backend's
    text is (a float of the seconds would round some instants to the next microsecond)."""
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def suppress_instrumentation() -> object:
    """Attach a context in which instrumentations record nothing (our own SQL must not trace itself);
    undo with ``opentelemetry.context.detach``."""
    return otel_context.attach(otel_context.set_value(SUPPRESS_INSTRUMENTATION_KEY, True))


class Database:
    """One ledger database: its SQLAlchemy engine, its lock, and error translation. Thread-safe."""

    def __init__(self, url: str | sa.URL, options: LedgerOptions | None = None) -> None:
        self.options = options or LedgerOptions()
        self.url = sa.make_url(url)
        self.name = self.url.render_as_string(hide_password=True)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.engine = self._create_engine()
        # Writes on SQLite open with BEGIN IMMEDIATE; the option rides on connections of this engine view.
        self.write_engine = self.engine.execution_options(agent_relay_write=True)
        # SQLite: a process's threads take turns (one writer at a time anyway); servers need no lock
        self.lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if self.is_sqlite else contextlib.nullcontext()
        )

    @property
    def in_memory(self) -> bool:
        db = self.url.database
        return self.is_sqlite and (not db or db == ":memory:" or self.url.query.get("mode") == "memory")

    @property
    def syncless_commits(self) -> bool:
        """A SQLite ledger whose commits do not wait for the disk (``synchronous`` ``NORMAL`` or ``OFF``,
        or in memory): a commit there costs CPU only."""
        return self.is_sqlite and self.options.sqlite_synchronous.upper() in ("OFF", "NORMAL")

    @property
    def background_checkpoints(self) -> bool:
        """A file-backed SQLite ledger checkpoints its WAL on a background thread (see ``Checkpointer``),
        unless every commit syncs (``synchronous=FULL``): there a checkpoint's sync of the database file
        would hold up the callers' WAL syncs, which cost more than the checkpoint it takes off them."""
        synchronous = self.options.sqlite_synchronous.upper()
        return self.is_sqlite and not self.in_memory and synchronous in ("OFF", "NORMAL")

    def _create_file(self) -> None:
        """A new SQLite ledger file is created owner-only (0600): it holds whole arguments and results.
        (SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions.) An existing file
        keeps its own."""
        path = self.url.database
        if not path or self.in_memory or self.url.query.get("uri") or os.path.exists(path):
            return
        # (created meanwhile, or no such directory: SQLite says so when it opens the file)
        with contextlib.suppress(FileExistsError, FileNotFoundError, NotADirectoryError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    def _create_engine(self) -> Engine:
        kwargs: dict[str, Any] = {"json_serializer": storage_dumps}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": self.options.busy_timeout_s}
            if self.in_memory:
                kwargs["poolclass"] = StaticPool
        else:
            kwargs["pool_pre_ping"] = True
        kwargs.update(self.options.engine_options)
        try:
            engine = sa.create_engine(self.url, **kwargs)
        except (ImportError, sa.exc.ArgumentError) as exc:
            raise LedgerError(
                f"cannot open the ledger at {self.name}: {exc}. Check AGENT_RELAY_DATABASE_URL (for "
                f"PostgreSQL install agent-relay[postgres] and use postgresql+psycopg://...).",
                database=self.name,
            ) from exc
        if self.is_sqlite:
            self._configure_sqlite(engine)
            self._create_file()
        return engine

    def _configure_sqlite(self, engine: Engine) -> None:
        synchronous = self.options.sqlite_synchronous.upper()
        busy_ms = int(self.options.busy_timeout_s * 1000)
        checkpoint_in_background = self.background_checkpoints

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

    @contextlib.contextmanager
    def guard(
        self, action: str, *, run_id: str | None = None, tool_name: str | None = None
    ) -> Iterator[None]:
        """Serialise (SQLite), keep our own SQL out of traces, and turn driver errors into
        ``LedgerError`` saying ``could not <action>``."""
        token = suppress_instrumentation()
        try:
            with self.lock:
                yield
        except DRIVER_ERRORS as exc:
            raise self.error(action, exc, run_id=run_id, tool_name=tool_name) from exc
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]

    def error(
        self, action: str, exc: BaseException, *, run_id: str | None = None, tool_name: str | None = None
    ) -> LedgerError:
        """The ``LedgerError`` for ``exc``, raised while trying to ``action``."""
        if is_driver_error(exc):
            detail = f"{_reason(exc)}. {_advice(exc)}"
        else:  # a bug or a driver surprise: still the caller's to see, never lost
            detail = f"unexpected error {type(exc).__name__}: {exc}"
        err = LedgerError(
            f"could not {action} in the ledger at {self.name}: {detail}",
            database=self.name,
            run_id=run_id,
            tool_name=tool_name,
        )
        err.__cause__ = exc
        return err

    def dispose(self) -> None:
        self.engine.dispose()


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a database driver's error (psycopg's too, which the PostgreSQL writer backend
    raises without SQLAlchemy: looked up only if loaded, so SQLite ledgers never import it)."""
    if isinstance(exc, DRIVER_ERRORS):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]


def _advice(exc: BaseException) -> str:
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
    if "deleted or replaced" in text:
        return "Restore the ledger file (or point AGENT_RELAY_DATABASE_URL at it) and restart the process."
    if "unable to open" in text:
        return "Check that the ledger's directory exists and is writable."
    if "database" in text and "does not exist" in text:
        return "Create the database first (CREATE DATABASE ...), or check the name in the URL."
    if "no such table" in text or "no such column" in text or "does not exist" in text:
        return "The ledger's tables are missing or from another version; open it with a matching agent-relay."
    return "Check that the database is reachable and writable."
