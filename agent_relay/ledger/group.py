"""Group commit for sync tool calls on a server ledger: the claims and outcomes that threads of one process
write at the same moment share one transaction, as async calls on one loop do (``agent_relay.batching``).

Alone or queued. A thread that finds the group idle (nothing queued, no write of the group in flight)
writes its own record at once, alone, on its own connection: a thread on its own never waits for company
and pays only an uncontended lock for this. A thread that finds a write in flight queues its record and
sleeps. The group's writer threads (two per ledger, each started when first needed) take everything
queued, write it in one transaction (``CallWriter.write_batch``, a single record too), wake each of
those threads with its own record's result, and take what was queued meanwhile. A writer thread counts
as busy until it finds the queue empty, so a caller arriving between two of its batches queues for the
next instead of writing alone. Every thread returns only after its own row is committed, as alone.

A thread about to queue first does its own record's share of the batch's work (``prepare``: the writer
stamps its lease and the backend encodes its parameters), while the write before it is in flight; the
writer thread then only joins what is queued. The writer thread's work between two batches is what every
queued thread waits for: adding 50 µs of it per batch cut 8 threads' calls/s by 10 to 15%, and encoding
on the callers' threads instead raised them by 2 to 7% (medians of three rounds of 8 to 10 interleaved
runs per variant; 2-core machine, local server).

Why writer threads of their own, not the caller that happens to be writing (as before): a batch needs a
thread that is running when the commit before it comes back. A caller handed that job had first to be
woken and to win the GIL from the threads running tool code, while no write was in flight; a caller
keeping it made its own call wait for other threads' writes. Why two: with one, each batch waits for the
one before it, so one slow commit (a slow WAL flush, or the writer thread waiting for the GIL) holds up
every thread, and single runs swung from 1,100 to 4,600 calls/s (one thread: about 1,250); with two, a
batch goes out while the other waits. Measured with 8 threads on a 2-core machine against a local server,
one process per variant, variants interleaved (5 runs each, three rounds): callers taking turns 2.18 to
2.35 times one thread's calls/s (medians), two writer threads 2.67 to 2.83; three or four were no better.

Each record gets its own result: a claim that meets another row's key is ``Found`` for that record only
(the backend claims it again after the shared commit); a statement that fails fails its own record (the
backend writes the records one by one when a statement aborts the shared transaction); a transaction that
fails (a lost connection the backend could not retry) is a ``LedgerError`` for each of its records, each
thread raising its own.

``close`` lets the writer threads write what is queued and end; records submitted after it are written
alone. A forked child starts with no writer threads and an empty queue (the parent's threads are not in
it); its first queued record starts its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import LedgerError
from .records import CallRecord, Claim

Batch = Callable[
    [Sequence[CallRecord], Sequence[CallRecord]], tuple[list[Claim | LedgerError], list[LedgerError | None]]
]


_PENDING: Any = object()  # a queued record's result before its write ends


class _Queued:
    """A record waiting for a writer thread to take it: then for its result."""

    __slots__ = ("finish", "record", "result", "wake")

    def __init__(self, record: CallRecord, finish: bool) -> None:
        self.record = record
        self.finish = finish
        self.result: Claim | LedgerError | None = _PENDING
        self.wake = threading.Lock()  # held until its result is there: acquiring waits
        self.wake.acquire()


class GroupCommit:
    """The sync ``start`` / ``finish`` writes of one ledger, grouped. Thread-safe.

    ``claim_alone`` / ``finish_alone`` write one record on its own (raising ``LedgerError``), ``batch``
    several in one transaction (``CallWriter.write_batch``: a result per record), ``error`` makes the
    ``LedgerError`` of a record whose batch was interrupted before it could report; ``prepare`` (if any)
    is called on a record's own thread just before it is queued (``finish``: for its outcome's write).
    """

    def __init__(
        self,
        claim_alone: Callable[[CallRecord], Claim],
        finish_alone: Callable[[CallRecord], None],
        batch: Batch,
        error: Callable[[CallRecord, bool, BaseException], LedgerError],
        *,
        prepare: Callable[[CallRecord, bool], None] | None = None,
        writers: int = 2,
    ) -> None:
        if writers < 1:
            raise ValueError(f"a group commit needs at least one writer thread, not {writers}")
        self._claim_alone = claim_alone
        self._finish_alone = finish_alone
        self._batch = batch
        self._error = error
        self._prepare = prepare
        self._most_writers = writers
        self._lock = threading.Lock()  # guards the fields below; never held across a write
        self._queued = threading.Condition(self._lock)  # signalled when a record is queued, or on close
        self._queue: list[_Queued] = []
        self._alone = 0  # callers' own writes in flight
        self._batching = 0  # writer threads writing a batch
        self._writers: list[threading.Thread] = []
        self._pid = os.getpid()
        self._closed = False
        self.shared = 0  # records written in a transaction shared with others (for tests and benchmarks)

    @property
    def writer_threads(self) -> tuple[threading.Thread, ...]:
        """The group's writer threads now running: none before a record first queued, none after
        ``close`` (which waits for them to end), none in a forked child until one of its records queues."""
        with self._lock:
            return tuple(t for t in self._writers if t.is_alive())

    @property
    def waiting(self) -> int:
        """How many records are queued for a writer thread's next batch."""
        with self._lock:
            return len(self._queue)

    def claim(self, record: CallRecord) -> Claim:
        """``CallWriter.start`` for a strict call: its pending row, committed. Raises ``LedgerError``."""
        result = self._submit(record, finish=False)
        assert result is not None
        return result

    def finish(self, record: CallRecord) -> None:
        """``CallWriter.finish``: the call's outcome, committed. Raises ``LedgerError``."""
        self._submit(record, finish=True)

    def close(self) -> None:
        """Let the writer threads write what is queued and end; later records are written alone."""
        with self._lock:
            self._closed = True
            writers, self._writers = self._writers, []
            self._queued.notify_all()
        for writer in writers:
            writer.join()

    def _submit(self, record: CallRecord, *, finish: bool) -> Claim | None:
        with self._lock:
            if self._pid != os.getpid():  # a forked child: none of the parent's writes or threads are its own
                self._pid, self._queue, self._alone, self._batching, self._writers = os.getpid(), [], 0, 0, []
            idle = self._closed or not (self._queue or self._alone or self._batching)
            if idle:
                self._alone += 1
        if idle:  # write at once, alone
            try:
                return self._write_alone(record, finish)
            finally:
                with self._lock:
                    self._alone -= 1
        if self._prepare is not None:  # (this thread's share of the batch's work, done while it waits)
            self._prepare(record, finish)
        mine = _Queued(record, finish)
        with self._lock:
            closed = self._closed  # (closed meanwhile: no writer thread may be left to take it)
            if not closed:
                self._queue.append(mine)
                if self._batching == len(self._writers) < self._most_writers:  # none free: one more
                    self._start_writer()
                self._queued.notify()
        if closed:
            return self._write_alone(record, finish)
        mine.wake.acquire()  # until a writer thread hands over this record's result
        result = mine.result
        assert result is not _PENDING  # (every write gives each of its records a result)
        if isinstance(result, LedgerError):
            raise result
        return result

    def _write_alone(self, record: CallRecord, finish: bool) -> Claim | None:
        if finish:
            self._finish_alone(record)
            return None
        return self._claim_alone(record)

    def _start_writer(self) -> None:
        writer = threading.Thread(target=self._write_queued, name="agent-relay-group-writer")
        writer.daemon = True  # (a runtime never shut down must not hold up the exit)
        self._writers.append(writer)
        writer.start()

    def _write_queued(self) -> None:
        """A writer thread: write what is queued, one batch at a time, until closed with nothing queued.
        It counts as busy (``_batching``) from the moment it takes a batch until it finds the queue empty:
        a caller arriving between two of its batches queues for the next, instead of writing alone."""
        me = threading.current_thread()
        with self._lock:
            self._batching += 1
            while True:
                if not self._queue:
                    self._batching -= 1
                    while not self._queue:
                        if self._closed or me not in self._writers:
                            return
                        self._queued.wait()
                    self._batching += 1
                group, self._queue = self._queue, []
                self._lock.release()
                try:
                    self._write(group)
                finally:
                    self._lock.acquire()

    def _write(self, group: list[_Queued]) -> None:
        """Write ``group`` in one transaction (a single record too: it was encoded for a batch) and wake
        each of its threads. Whatever is raised becomes each record's error: the writer thread goes on
        with the next batch."""
        try:
            self._together(group)
        except BaseException as exc:  # (each record carries it to its own thread)
            for queued in group:
                if queued.result is _PENDING:
                    queued.result = self._error(queued.record, queued.finish, exc)
        finally:
            for queued in group:
                queued.wake.release()

    def _together(self, group: list[_Queued]) -> None:
        starts = [q for q in group if not q.finish]
        finishes = [q for q in group if q.finish]
        claimed, finished = self._batch([q.record for q in starts], [q.record for q in finishes])
        for queued, result in zip([*starts, *finishes], [*claimed, *finished], strict=True):
            queued.result = result
        if len(group) > 1:
            with self._lock:  # (two writer threads)
                self.shared += len(group)
