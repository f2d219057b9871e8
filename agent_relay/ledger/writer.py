"""``CallWriter``: every write of a ``tool_calls`` row goes through this one object, and so do a budgeted
run's reservations and settlements on its ``agent_runs`` row (which its calls' writes make).

A live call is claimed when it starts and finished when it ends; a call's ``durability`` decides what
that commits (``STRICT``: a pending row, then the outcome onto it; ``OUTCOME``: nothing at the start, the
whole row at the end). The span processor calls ``start`` / ``finish`` for the spans it sees; the wrapper
calls the same methods for spans no processor saw (sampled out), ``write_batch`` for async calls that
share a commit, and ``insert_rows`` / ``ServedRows`` for calls a replay served without running. Every
method commits before it returns and raises ``LedgerError`` where the write failed; nothing is left on
the record for someone else to raise.

The statements come from a backend chosen once, when the ledger is opened: ``SqliteCalls`` (plain
``sqlite3``), ``PgCalls`` (psycopg directly, for PostgreSQL through psycopg) or ``SqlCalls`` (SQLAlchemy,
for any other server driver). All write the same rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from decimal import Decimal
from queue import SimpleQueue
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context

from ..errors import ClaimLostError, LedgerError
from ..states import CallStatus, Durability
from .connection import Database, suppress_instrumentation, utc
from .group import GroupCommit
from .leases import FOREVER_NS, LeaseRenewer
from .records import Approval, CallRecord, Claim, Found, Held, Reserved
from .schema import tool_calls
from .statements import CallStatements

_T = TypeVar("_T")
_A = TypeVar("_A")
_C = TypeVar("_C", bound=Claim | LedgerError)
BatchResults = tuple[list[Claim | LedgerError], list[LedgerError | None]]
"""What ``CallWriter.write_batch`` gives each record: its claim or error, its outcome's error or None."""
_LoopWrite = tuple[
    Sequence[CallRecord],
    Sequence[CallRecord],
    asyncio.AbstractEventLoop,
    Callable[[BatchResults | BaseException], object],
]
_CLAIM = "claim a call of tool {tool}"
_FINISH = "record the outcome of tool {tool}"


class CallWriter:
    """The ``tool_calls`` writer of one ledger. Thread-safe.

    Every claim of a strict call (``start``, ``claim``, ``write_batch``, ``take_over``,
    ``take_approved``) carries a lease of ``lease_s`` from ``clock()`` (ns since the epoch), renewed by
    ``leases`` until the call's outcome is written (see ``ledger.leases``).
    """

    def __init__(
        self,
        database: Database,
        backend: CallStatements,
        *,
        lease_s: float = 30.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._db = database
        self._backend = backend
        self._lease_ns = int(lease_s * 1e9)
        self._clock = clock
        self.leases = LeaseRenewer(lease_s, self.renew_leases)
        self._background: ThreadPoolExecutor | None = None  # see insert_rows_later
        self._background_lock = threading.Lock()
        self._loop_writes: SimpleQueue[_LoopWrite | None] | None = None  # see write_batch_later
        self._loop_writer: threading.Thread | None = None
        # a server's commits wait on I/O that threads can share; SQLite's threads take turns anyway
        self._group = (
            None
            if database.is_sqlite
            else GroupCommit(
                self.claim,
                self._finish_alone,
                self.write_batch,
                self._group_error,
                prepare=self._prepare_queued,
            )
        )

    @property
    def backend(self) -> CallStatements:
        """The statements' backend chosen for this ledger (``SqliteCalls``, ``PgCalls`` or ``SqlCalls``)."""
        return self._backend

    @property
    def group(self) -> GroupCommit | None:
        """Where threads' ``start`` / ``finish`` writes meet to share commits (``None`` on SQLite)."""
        return self._group

    def _error(self, action: str, record: CallRecord, exc: BaseException) -> LedgerError:
        """The ``LedgerError`` of a write of ``record`` (``{tool}`` in ``action``: its tool)."""
        return self._db.error(
            action.format(tool=repr(record.tool_name)), exc, run_id=record.run_id, tool_name=record.tool_name
        )

    def _write(self, action: str, record: CallRecord, write: Callable[[CallRecord], _T]) -> _T:
        """Run one backend method on ``record`` (see ``_guarded``; ``{tool}`` in ``action``: its tool)."""
        return self._guarded(action, record.run_id, record.tool_name, write, record)

    def _guarded(
        self, action: str, run_id: str, tool_name: str | None, write: Callable[[_A], _T], arg: _A
    ) -> _T:
        """``write(arg)`` under the database's lock, our own SQL kept out of traces (only when a driver
        instrumentation could see it: attaching a context costs, and this runs on every call). A failure
        is a ``LedgerError`` saying ``could not <action>`` (``{tool}``: ``tool_name``), naming the run."""
        with self._db.lock:
            token = suppress_instrumentation() if self._backend.instrumented else None
            try:
                return write(arg)
            except Exception as exc:
                raise self._db.error(
                    action.format(tool=repr(tool_name)), exc, run_id=run_id, tool_name=tool_name
                ) from exc
            finally:
                if token is not None:
                    otel_context.detach(token)  # type: ignore[arg-type]

    # --- a live call ----------------------------------------------------------------------------------
    def start(self, record: CallRecord) -> Claim:
        """The call starts: ``Held`` when this worker is to run it (its pending row committed, for a
        strict call), or ``Found``: another row already holds its key and did not fail. On a server,
        threads starting or ending calls at the same moment share the commit (``group.GroupCommit``)."""
        if record.durability is Durability.OUTCOME:
            return Held(record.attempts)  # its row is written when it ends, with its outcome
        if self._group is not None:
            try:
                return self._group.claim(record)
            finally:
                record.encoded = None
        return self.claim(record)

    def claim(self, record: CallRecord) -> Claim:
        """Insert the call's pending row (or re-open a failed one) and commit, whatever its durability;
        held, its lease is renewed until its outcome is written."""
        self._lease(record)
        return self._held(record, self._write(_CLAIM, record, self._backend.claim))

    def _lease(self, record: CallRecord) -> None:
        record.lease_until_ns = self._clock() + self._lease_ns

    def _held(self, record: CallRecord, claim: _C) -> _C:
        if isinstance(claim, Held):
            self.leases.hold(record.call_id, record.owner)
        return claim

    def renew_leases(self, owner: str, call_ids: Sequence[str]) -> set[str]:
        """Extend by ``lease_s`` the leases of those of ``call_ids`` still pending under ``owner``, in one
        statement; the ids it extended."""
        with self._db.guard(f"renew the leases of {len(call_ids)} running calls"):
            return self._backend.renew(owner, call_ids, self._clock() + self._lease_ns)

    def finish(self, record: CallRecord) -> None:
        """The call ended: write its outcome and commit. ``LedgerError`` when no row could take it
        (another worker settled or recorded the call first, or took it over when its lease ran out).
        Grouped on a server, as ``start`` is."""
        if self._group is not None:
            try:
                self._group.finish(record)
            finally:
                record.encoded = None
        else:
            self._finish_alone(record)

    def _prepare_queued(self, record: CallRecord, finish: bool) -> None:
        """A record about to queue for a shared commit, on its own thread: what ``_batch`` would do for it
        before the write (its claim's lease stamped, or its outcome's renewal stopped), and its parameters
        encoded (``_batch`` leaves a record so encoded as it is)."""
        if finish:
            self.leases.drop(record.call_id)
        else:
            self._lease(record)
        # (an encoding that fails is this record's LedgerError only, worded as its write alone's would be)
        record.encoded = self._write(
            _FINISH if finish else _CLAIM, record, lambda r: self._backend.encode(r, finish)
        )

    def _finish_alone(self, record: CallRecord) -> None:
        self.leases.drop(record.call_id)
        if not self._write(_FINISH, record, self._backend.finish):
            raise self.not_recorded(record)

    def _group_error(self, record: CallRecord, finish: bool, exc: BaseException) -> LedgerError:
        return self._error(_FINISH if finish else _CLAIM, record, exc)

    def write_batch(self, starts: Sequence[CallRecord], finishes: Sequence[CallRecord]) -> BatchResults:
        """``start`` and ``finish`` for several calls in one committed transaction: each record's result
        (a claim or a ``LedgerError``; ``None`` or a ``LedgerError``), in order. If the transaction itself
        fails, every record gets its own error (each names its own call; their cause is the same)."""
        results = self._batch(starts, finishes, self._backend.batch)
        assert results is not None  # (batch waits for the lock: it always writes)
        return results

    def write_batch_now(
        self, starts: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> BatchResults | None:
        """``write_batch`` here and now, only if that cannot wait: on a SQLite ledger whose commits do not
        sync the disk, with neither this process nor another holding the write lock; ``None`` (nothing
        written) otherwise. An event loop's writes try it before going to the writer's thread
        (``batching``): an uncontended SQLite write costs less than the two hops there and back."""
        if not self._db.syncless_commits:  # (a server's round trip, or a commit that syncs the disk)
            return None
        lock = cast(threading.RLock, self._db.lock)
        if not lock.acquire(blocking=False):
            return None
        try:
            return self._batch(starts, finishes, self._backend.batch_if_free)
        finally:
            lock.release()

    def _batch(
        self,
        starts: Sequence[CallRecord],
        finishes: Sequence[CallRecord],
        write: Callable[
            [Sequence[CallRecord], Sequence[CallRecord]],
            tuple[list[Claim | Exception], list[bool | Exception]] | None,
        ],
    ) -> BatchResults | None:
        claims = [r for r in starts if r.durability is not Durability.OUTCOME]
        for record in claims:
            if record.encoded is None:  # (else stamped when it was encoded: see _prepare_queued)
                self._lease(record)
        for record in finishes:
            if record.encoded is None:
                self.leases.drop(record.call_id)
        if not claims and not finishes:  # only calls without a pending row starting: nothing to write
            return [Held(r.attempts) for r in starts], []
        first = (list(starts) + list(finishes))[0]
        shared = f" (in one commit with {len(claims) + len(finishes) - 1} other writes)"
        try:
            written = self._write(_CLAIM, first, lambda _: write(claims, finishes))
        except LedgerError as err:
            cause = err.__cause__ or err
            return (
                [self._error(_CLAIM + shared, r, cause) for r in starts],
                [self._error(_FINISH + shared, r, cause) for r in finishes],
            )
        if written is None:  # (batch_if_free: the lock was taken)
            return None
        claimed, finished = written
        by_record = dict(zip(map(id, claims), claimed, strict=True))
        start_results: list[Claim | LedgerError] = []
        for record in starts:
            result = by_record.get(id(record), Held(record.attempts))
            if isinstance(result, Exception):
                start_results.append(self._error(_CLAIM, record, result))
            else:
                start_results.append(self._held(record, result) if id(record) in by_record else result)
        finish_results: list[LedgerError | None] = []
        for record, done in zip(finishes, finished, strict=True):
            if isinstance(done, Exception):
                finish_results.append(self._error(_FINISH, record, done))
            else:
                finish_results.append(None if done else self.not_recorded(record))
        return start_results, finish_results

    def find(self, record: CallRecord) -> Found | None:
        """The row holding the call's key, if any (a read: no transaction of its own)."""
        return self._write("look up a call of tool {tool}", record, self._backend.find)

    def take_over(self, record: CallRecord, owner: str | None, before_ns: int = FOREVER_NS) -> Held | None:
        """Claim the pending row ``owner`` (now gone) held, if its lease ends before ``before_ns``;
        ``None`` if someone else took it first, or its owner renewed the lease meanwhile."""
        self._lease(record)
        attempts = self._write(
            "take over a call of tool {tool}", record, lambda r: self._backend.take_over(r, owner, before_ns)
        )
        return None if attempts is None else self._held(record, Held(attempts))

    # --- a budgeted run's totals (see ``budget_rows``) --------------------------------------------------
    def reserve(self, run_id: str, tool_name: str, amount: Decimal) -> Reserved:
        """Add ``amount`` to run ``run_id``'s ``reserved_usd`` if its cost, its reservations and ``amount``
        stay within its limit (spent + reserved + amount <= limit), in one committed step; what the run's
        row said either way."""
        action = "reserve budget for a call of tool {tool}"
        return self._guarded(action, run_id, tool_name, lambda _: self._backend.reserve(run_id, amount), None)

    def release(self, run_id: str, hold: Decimal, cost: Decimal = Decimal(0)) -> None:
        """Release ``hold`` of run ``run_id``'s reservations and add ``cost`` to its cost: for what no
        call's outcome write settled (a call served after all, usage counted outside any call)."""
        action = "release budget reserved for a call"
        self._guarded(action, run_id, None, lambda _: self._backend.settle_run(run_id, cost, hold), None)

    def not_recorded(self, record: CallRecord) -> LedgerError:
        """A call whose outcome found no row to take it: another worker settled or recorded it first, or
        took it over when this one's lease ran out (``ClaimLostError``: the row has another owner)."""
        if record.durability is Durability.STRICT:
            try:
                found = self.find(record)
            except LedgerError:
                found = None
            if found is not None and found.owner != record.owner:
                return ClaimLostError(
                    database=self._db.name,
                    run_id=record.run_id,
                    tool_name=record.tool_name,
                    call_id=record.call_id,
                    owner=found.owner,
                )
        why = "was no longer pending: another worker settled it"
        if record.durability is Durability.OUTCOME:
            why = "was already recorded by another worker"
        return LedgerError(
            f"call {record.call_id} (tool {record.tool_name!r}, run {record.run_id}) {why} in the ledger at "
            f"{self._db.name}; its outcome here was not recorded.",
            database=self._db.name,
            run_id=record.run_id,
            tool_name=record.tool_name,
        )

    # --- calls served without running -------------------------------------------------------------------
    def insert_rows(self, records: Sequence[CallRecord]) -> None:
        """Record finished calls in one transaction, each a complete row."""
        if records:
            self._write(
                f"record replayed calls of run {records[0].run_id} (the first of tool {{tool}})",
                records[0],
                lambda _: self._backend.insert_rows(records),
            )

    def write_batch_later(
        self,
        starts: Sequence[CallRecord],
        finishes: Sequence[CallRecord],
        loop: asyncio.AbstractEventLoop,
        done: Callable[[BatchResults | BaseException], object],
    ) -> None:
        """``write_batch`` on the writer's thread for event loops (one per ledger, started on first use), so
        a loop never waits on the ledger itself (``batching.LoopBatcher``); ``done`` is called on ``loop``
        with the results (or what was raised). ``close`` waits for what was handed in."""
        with self._background_lock:
            if self._loop_writes is None:
                self._loop_writes = SimpleQueue()
                self._loop_writer = threading.Thread(
                    target=self._write_for_loops, args=(self._loop_writes,), name="agent-relay-loop-writer"
                )
                self._loop_writer.daemon = True  # (a runtime never shut down must not hold up the exit)
                self._loop_writer.start()
            self._loop_writes.put((starts, finishes, loop, done))

    def _write_for_loops(self, queue: SimpleQueue[_LoopWrite | None]) -> None:
        while (item := queue.get()) is not None:
            starts, finishes, loop, done = item
            result: BatchResults | BaseException
            try:
                result = self.write_batch(starts, finishes)
            except BaseException as exc:  # (write_batch reports its failures as results: a bug)
                result = exc
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for it any more
                loop.call_soon_threadsafe(done, result)

    def insert_rows_later(self, records: Sequence[CallRecord]) -> Future[None]:
        """``insert_rows`` on the writer's background thread (one per ledger, started on first use), so
        the caller does not wait for it; the future raises its ``LedgerError``. ``close`` waits for what
        was submitted."""
        with self._background_lock:
            if self._background is None:
                self._background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="agent-relay-writer")
            return self._background.submit(self.insert_rows, records)

    def decide(self, call_id: str, status: CallStatus, by: str, note: str | None) -> bool:
        """A person's decision on a call awaiting approval (``APPROVED`` or ``REJECTED``); False if the
        call is not awaiting one."""
        c = tool_calls.c
        values: dict[str, Any] = {
            "status": status,
            "decided_by": by,
            "decided_at": utc(time.time_ns()),
            "decision_note": note,
        }
        if status is CallStatus.REJECTED:
            values["error_type"] = "agent_relay.errors.ApprovalRejectedError"
            values["error_message"] = f"rejected by {by}" + (f": {note}" if note else "")
        stmt = tool_calls.update().where(c.call_id == call_id, c.status == CallStatus.AWAITING_APPROVAL)
        with self._db.guard("record a decision on a call"), self._db.write_engine.begin() as conn:
            return bool(conn.execute(stmt.values(**values)).rowcount)

    def take_approved(self, record: CallRecord) -> Approval | None:
        """Claim an approved call for this try (it becomes ``pending``, held by ``record.owner``); the
        decision, or None when another worker took it first."""
        c = tool_calls.c
        self._lease(record)
        stmt = (
            tool_calls.update()
            .where(c.call_id == record.call_id, c.status == CallStatus.APPROVED)
            .values(
                status=CallStatus.PENDING,
                owner=record.owner,
                lease_expires_at=utc(record.lease_until_ns or 0),
                seq=record.seq,
                trace_id=record.trace_id,
                span_id=record.span_id,
                started_at=utc(record.started_ns or time.time_ns()),
            )
            .returning(c.attempts, c.decided_by, c.decided_at, c.decision_note)
        )
        with self._db.guard("claim an approved call"), self._db.write_engine.begin() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        self.leases.hold(record.call_id, record.owner)
        return Approval(*row)

    def settle(self, call_id: str, **values: Any) -> bool:
        """Write by hand the outcome of a pending call (a person settling one left in doubt); False if it
        was not pending."""
        stmt = tool_calls.update().where(
            tool_calls.c.call_id == call_id, tool_calls.c.status == CallStatus.PENDING
        )
        self.leases.drop(call_id)
        with self._db.guard("settle a call"), self._db.write_engine.begin() as conn:
            return bool(conn.execute(stmt.values(**values)).rowcount)

    def close(self) -> None:
        if self._group is not None:
            self._group.close()  # (what threads queued is written first)
        self.leases.close()
        with self._background_lock:
            background, self._background = self._background, None
            loop_writes, self._loop_writes = self._loop_writes, None
            loop_writer, self._loop_writer = self._loop_writer, None
        if background is not None:
            background.shutdown(wait=True)
        if loop_writes is not None and loop_writer is not None:
            loop_writes.put(None)
            loop_writer.join()
        with self._db.lock:
            self._backend.close()


class ServedRows:
    """The rows of calls a replay served, written in batches: a replay protects no side effect, so its
    rows need not cost the caller a commit each. A replay killed mid-run loses at most its unwritten rows,
    never a real call's record. Thread-safe."""

    BATCH = 256

    def __init__(self, writer: CallWriter) -> None:
        self._writer = writer
        self._lock = threading.Lock()
        self._queued: list[CallRecord] = []
        self._writes: list[Future[None]] = []  # batches being written in the background

    def add(self, record: CallRecord) -> None:
        """Queue a row; a full queue goes to the writer's background thread. A batch that failed is
        raised here, at the next full batch (or by ``flush``)."""
        with self._lock:
            self._queued.append(record)
            if len(self._queued) < self.BATCH:
                return
            batch, self._queued = self._queued, []
        write = self._writer.insert_rows_later(batch)
        with self._lock:
            failed = [w for w in self._writes if w.done() and w.exception() is not None]
            self._writes = [w for w in self._writes if not w.done()] + [write]
        for done in failed:
            done.result()  # raises that batch's LedgerError (this one is on its way)

    def flush(self) -> LedgerError | None:
        """Write what is queued and wait for the background batches; the first failure, if any."""
        with self._lock:
            batch, self._queued = self._queued, []
            writes, self._writes = self._writes, []
        error: LedgerError | None = None
        for write in writes:
            try:
                write.result()
            except LedgerError as err:
                error = error or err
        try:
            self._writer.insert_rows(batch)
        except LedgerError as err:
            error = error or err
        return error
