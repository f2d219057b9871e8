"""Group commit for sync tool calls on a server ledger: the claims and outcomes that threads of one process
write at the same moment share one transaction, as async calls on one loop do (``agent_relay.batching``).

Leaders and followers. A thread that finds fewer than ``most_in_flight`` (two) writes of the group in
flight leads: it writes its own record at once, alone (one autocommitted statement: a thread on its own
never waits for company, and pays only an uncontended lock for this). A thread that finds that many in
flight queues its record and sleeps. When a leader's write is committed, it writes what was queued
meanwhile in one transaction (``CallWriter.write_batch``) and wakes each of those threads with its own
record's result; then it hands the lead to the first thread queued during that write, which does the
same. Every thread returns only after its own row is committed, as alone.

Why two in flight, not one: while one transaction waits for the server's commit (its WAL flush), the
next is already on its way, and the server flushes both at once; with one, the threads queued behind
it idled for a whole round trip each time (8 threads on 2 cores: 1,600 to 1,950 calls/s with one in
flight, 2,100 to 2,400 with two; three or four made smaller batches, each a commit of its own, and
fewer calls/s).

Why the leader writes one batch more before handing on: it is the thread already running when its commit
comes back, so the next batch goes out at once; a thread handed the lead must first be woken and win the
GIL from threads running tool code, while no write is in flight. One round, not more: the leader's own
caller waits for it (two commits at most, never an unbounded queue of other threads' writes).

Each record gets its own result: a claim that meets another row's key is ``Found`` for that record only
(the backend claims it again after the shared commit); a statement that fails fails its own record (the
backend writes the records one by one when a statement aborts the shared transaction); a transaction that
fails (a lost connection the backend could not retry) is a ``LedgerError`` for each of its records, each
thread raising its own.
"""

from __future__ import annotations

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
    """A record waiting for the write in flight to end: then for its result, or for the lead."""

    __slots__ = ("finish", "followers", "record", "result", "wake")

    def __init__(self, record: CallRecord, finish: bool) -> None:
        self.record = record
        self.finish = finish
        self.result: Claim | LedgerError | None = _PENDING
        self.followers: list[_Queued] | None = None  # set when this thread is handed the lead
        self.wake = threading.Lock()  # held until its result (or the lead) is there: acquiring waits
        self.wake.acquire()


class GroupCommit:
    """The sync ``start`` / ``finish`` writes of one ledger, grouped. Thread-safe.

    ``claim_alone`` / ``finish_alone`` write one record on its own (raising ``LedgerError``), ``batch``
    several in one transaction (``CallWriter.write_batch``: a result per record), ``error`` makes the
    ``LedgerError`` of a record whose batch was interrupted before it could report.
    """

    def __init__(
        self,
        claim_alone: Callable[[CallRecord], Claim],
        finish_alone: Callable[[CallRecord], None],
        batch: Batch,
        error: Callable[[CallRecord, bool, BaseException], LedgerError],
        *,
        most_in_flight: int = 2,
    ) -> None:
        if most_in_flight < 1:
            raise ValueError(f"a group commit needs at least one write in flight, not {most_in_flight}")
        self._most_in_flight = most_in_flight
        self._claim_alone = claim_alone
        self._finish_alone = finish_alone
        self._batch = batch
        self._error = error
        self._lock = threading.Lock()  # guards the two fields below; never held across a write
        self._in_flight = 0  # writes of the group in flight: at ``most_in_flight``, newcomers queue
        self._queue: list[_Queued] = []
        self.shared = 0  # records written in a transaction shared with others (for tests and benchmarks)

    @property
    def waiting(self) -> int:
        """How many records are queued behind the writes in flight."""
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

    def _submit(self, record: CallRecord, *, finish: bool) -> Claim | None:
        with self._lock:
            mine = _Queued(record, finish) if self._in_flight >= self._most_in_flight else None
            if mine is None:
                self._in_flight += 1
            else:
                self._queue.append(mine)
        if mine is None:  # room in flight: write at once, alone
            try:
                if finish:
                    self._finish_alone(record)
                    return None
                return self._claim_alone(record)
            finally:
                self._then()
        mine.wake.acquire()  # until a leader hands over this record's result, or the lead
        if mine.followers is not None:
            try:
                self._write(mine.followers)
            finally:
                self._then()
        result = mine.result
        assert result is not _PENDING  # (every write gives each of its records a result)
        if isinstance(result, LedgerError):
            raise result
        return result

    def _then(self, rounds: int = 1) -> None:
        """After this thread's write: write what was queued meanwhile (``rounds`` times at most), then
        hand the lead to the first thread queued since; or, with nothing queued, end this write."""
        while True:
            with self._lock:
                queued, self._queue = self._queue, []
                if not queued:
                    self._in_flight -= 1
                    return
            if not rounds:
                queued[0].followers = queued
                queued[0].wake.release()
                return
            rounds -= 1
            try:
                self._write(queued)
            except BaseException:  # interrupted (its records have their errors): hand on, then go on
                self._then(0)
                raise

    def _write(self, group: list[_Queued]) -> None:
        """Write ``group`` (in one transaction if several) and wake each of its threads but the lead's.
        Raises only what is no ``Exception`` (an interruption), after giving each record its error."""
        try:
            if len(group) == 1:
                self._alone(group[0])
            else:
                self._together(group)
        except BaseException as exc:
            for queued in group:
                if queued.result is _PENDING:
                    queued.result = self._error(queued.record, queued.finish, exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            for queued in group:
                if queued.followers is None:
                    queued.wake.release()

    def _alone(self, queued: _Queued) -> None:
        try:
            if queued.finish:
                self._finish_alone(queued.record)
                queued.result = None
            else:
                queued.result = self._claim_alone(queued.record)
        except LedgerError as err:
            queued.result = err

    def _together(self, group: list[_Queued]) -> None:
        starts = [q for q in group if not q.finish]
        finishes = [q for q in group if q.finish]
        claimed, finished = self._batch([q.record for q in starts], [q.record for q in finishes])
        for queued, result in zip([*starts, *finishes], [*claimed, *finished], strict=True):
            queued.result = result
        self.shared += len(group)
