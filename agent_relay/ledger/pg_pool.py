"""A small pool of psycopg connections for the PostgreSQL writer backend (``pg_calls``).

Threads each take a connection of their own, so their round trips to the server overlap; the pool's
lock guards only its list, never a connect or a statement. Connections are in autocommit mode (a single
statement is its own transaction: one round trip) and are not pinged when taken: a connection the server
dropped shows itself by the failed statement, and the backend retries on a fresh one where that is safe.
No new dependency: ``psycopg_pool`` would bring a maintenance thread and checks per checkout that the
hot path does without.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

import psycopg
from sqlalchemy.engine import Engine

_IDLE = psycopg.pq.TransactionStatus.IDLE


def connect_params(engine: Engine, connect_args: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``psycopg.connect`` takes for the engine's URL and the ``connect_args`` of
    its options, as SQLAlchemy itself would connect (without SQLAlchemy's adapters: the backend passes
    plain values)."""
    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)
    return {**params, **connect_args}


class Lent:
    """A connection lent to one thread, with the cursor its statements run on and the names of the
    statements ``pg_wire`` prepared on it."""

    __slots__ = ("conn", "cursor", "prepared")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.cursor: psycopg.Cursor[Any] = conn.cursor()
        self.prepared: set[bytes] = set()

    @property
    def broken(self) -> bool:
        """Whether the connection is lost (the server dropped it, or the network did)."""
        return self.conn.broken or self.conn.closed

    @property
    def reusable(self) -> bool:
        """Whether the connection can serve the next caller: open, and outside any transaction or
        statement (one interrupted mid-statement is not)."""
        return not self.broken and self.conn.info.transaction_status == _IDLE


class PgPool:
    """Up to ``size`` autocommit connections, made when first needed and kept for reuse. Thread-safe.

    ``take`` waits up to ``timeout_s`` for a free one when all are lent. ``most_lent`` is the largest
    number lent at once: how many round trips were in flight together at most.
    """

    def __init__(self, params: Mapping[str, Any], *, size: int, timeout_s: float) -> None:
        if size < 1:
            raise ValueError(f"a ledger connection pool needs at least one connection, not {size}")
        self._params = dict(params)
        # psycopg's own switch for prepared statements (None: never, as behind a pooler that cannot keep
        # them), which pg_wire's statements follow too
        self.prepares = self._params.get("prepare_threshold", 5) is not None
        self._size = size
        self._timeout_s = timeout_s
        self._lock = threading.Lock()
        self._returned = threading.Condition(self._lock)  # signalled when a connection comes back
        self._waiting = 0
        self._idle: list[Lent] = []
        self._pid = os.getpid()
        self._closed = False
        self.lent = 0
        self.most_lent = 0
        self.connects = 0  # connections made, over the pool's life

    def take(self, *, fresh: bool = False) -> Lent:
        """A connection for this thread (``fresh``: a new one, not one kept idle)."""
        lent: Lent | None = None
        with self._lock:
            if self.lent >= self._size:
                self._wait_for_one()
            if os.getpid() != self._pid:  # a forked child: the parent's sockets are not ours to use
                self._pid, self._idle = os.getpid(), []
            if self._idle and not fresh:
                lent = self._idle.pop()
            self.lent += 1
            self.most_lent = max(self.most_lent, self.lent)
        if lent is not None:
            return lent
        try:
            lent = Lent(psycopg.connect(**self._params, autocommit=True))
        except BaseException:
            self._release(None)
            raise
        with self._lock:
            self.connects += 1
        return lent

    def _wait_for_one(self) -> None:
        """Wait (holding the lock's condition) until fewer than ``size`` are lent."""
        deadline = time.monotonic() + self._timeout_s
        self._waiting += 1
        try:
            while self.lent >= self._size:
                left = deadline - time.monotonic()
                if left <= 0 or not self._returned.wait(left):
                    if self.lent < self._size:
                        break
                    raise psycopg.OperationalError(
                        f"all {self._size} ledger connections stayed busy for {self._timeout_s:g} s; raise "
                        f"LedgerOptions(engine_options={{'pool_size': ...}}) or run fewer threads per process"
                    )
        finally:
            self._waiting -= 1

    def give(self, lent: Lent) -> None:
        """Take back a connection; a lost one is closed, and with it every idle one (a server that
        dropped one connection, restarting or failing over, dropped them all)."""
        self._release(lent)

    def _release(self, lent: Lent | None) -> None:
        stale: list[Lent] = []
        with self._lock:
            self.lent -= 1
            if lent is not None:
                if lent.broken:
                    stale, self._idle = [lent, *self._idle], []
                elif self._closed or not lent.reusable:
                    stale = [lent]
                else:
                    self._idle.append(lent)
            if self._waiting:
                self._returned.notify()
        for dead in stale:
            with contextlib.suppress(Exception):
                dead.conn.close()

    def close(self) -> None:
        """Close the idle connections (lent ones are closed when given back after this)."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._closed = True
        for lent in idle:
            with contextlib.suppress(Exception):
                lent.conn.close()


def pool_for(engine: Engine, options: Mapping[str, Any]) -> PgPool:
    """The pool for a ledger's engine, sized as its engine options size SQLAlchemy's pool (``pool_size``
    plus ``max_overflow``, ``pool_timeout``: 5 + 10 and 30 s by default)."""
    size = int(options.get("pool_size", 5)) + max(0, int(options.get("max_overflow", 10)))
    params = connect_params(engine, options.get("connect_args", {}))
    return PgPool(params, size=size, timeout_s=float(options.get("pool_timeout", 30.0)))
