"""WAL checkpoints of a file-backed SQLite ledger, on a background thread, off the callers' commits."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from typing import Any

from sqlalchemy.engine import Engine

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
