"""Async tool calls' ledger writes: made off the event loop, and shared by the calls in flight together.

An ``async def`` tool call awaits its claim (the pending row) and its outcome, each committed before it goes
on, as every call does. The writes are made on the ledger writer's thread for loops
(``CallWriter.write_batch_later``), never on the loop's own thread, so a slow disk or a server round trip
never holds up the loop's other tasks. The calls gathered on the loop share the commit: the writes queued on
a loop turn go together, and while a write is in flight, the next ones queue and go in one transaction when
it ends (group commit). A call alone in flight writes at once (the cost is the hop to the writer's thread
and back). One exception: on a SQLite ledger whose commits do not sync the disk (``NORMAL``, the default), a
batch is written on the loop's thread when the write lock is free this instant
(``CallWriter.write_batch_now``: no wait, only the CPU of the write, less than the hops cost); held by
another process or thread, it goes to the writer's thread, which waits for it. Durability is unchanged: no
call runs its body before its claim is committed, nor returns before its outcome is. What the calls share is
a transaction's fixed cost: on SQLite the lock, the commit and the WAL's bookkeeping; on a server, the
commit's round trip and its WAL flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

from .ledger.records import CallRecord
from .ledger.writer import BatchResults, CallWriter


class QueuedWrite:
    """A call's claim or outcome, queued for the loop's next transaction. ``result`` once it is written:
    a ``Claim`` or ``LedgerError`` for a claim, ``None`` or a ``LedgerError`` for an outcome."""

    __slots__ = ("record", "result", "waiter", "written")

    def __init__(self, record: CallRecord, waiter: asyncio.Future[None]) -> None:
        self.record = record
        self.waiter = waiter  # done when written (awaited directly: a shield per call costs)
        self.written = False
        self.result: Any = None


class LoopBatcher:
    """The calls of one ledger in flight on one event loop, and the writes they wait for. Used on its
    loop's thread only (the writer's thread hands results back through the loop)."""

    def __init__(self, writer: CallWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = weakref.ref(writer)  # (the registry below is keyed by the writer: no cycle back)
        self._loop = loop
        self._starts: list[QueuedWrite] = []
        self._finishes: list[QueuedWrite] = []
        self._scheduled = False  # a flush is due on this loop turn
        self._writing = False  # a batch is being written on the writer's thread
        self.batches = 0  # batches handed to the writer (for tests and benchmarks)
        self.in_flight = 0  # the calls of this ledger in flight on the loop (see _submit)

    def submit_start(self, record: CallRecord) -> QueuedWrite:
        """Queue ``CallWriter.start`` for the next transaction."""
        return self._submit(record, self._starts)

    def submit_finish(self, record: CallRecord) -> QueuedWrite:
        """Queue ``CallWriter.finish`` for the next transaction."""
        return self._submit(record, self._finishes)

    def _submit(self, record: CallRecord, queue: list[QueuedWrite]) -> QueuedWrite:
        """The first write queued while none is in flight schedules the flush, which runs once every
        call that is ready on the loop has had its turn to queue its own; a call alone in flight flushes
        at once."""
        write = QueuedWrite(record, self._loop.create_future())
        queue.append(write)
        if not self._scheduled and not self._writing:
            if self.in_flight <= 1:  # alone in flight: no other call's write is coming to go with it
                self._flush()
            else:
                self._scheduled = True
                self._loop.call_soon(self._flush)
        return write

    async def result(self, write: QueuedWrite) -> Any:
        """Wait for a queued write; its result. Cancelled meanwhile, the caller still waits for the write
        to end before the cancellation goes on (the row is the truth): ``write.result`` then says how it
        went. (The write is bounded by the ledger's own timeouts.)"""
        try:
            await write.waiter
        except asyncio.CancelledError:
            while not write.written:
                write.waiter = self._loop.create_future()  # (the cancelled one takes no result)
                with contextlib.suppress(asyncio.CancelledError):
                    await write.waiter
            raise
        return write.result

    def _flush(self) -> None:
        """Hand everything queued to the writer's thread, as one transaction."""
        self._scheduled = False
        if self._writing or not (self._starts or self._finishes):
            return
        writer = self._writer()
        if writer is None:  # (a writer is alive while its calls are)
            return
        starts, self._starts = self._starts, []
        finishes, self._finishes = self._finishes, []
        self.batches += 1
        now = writer.write_batch_now([w.record for w in starts], [w.record for w in finishes])
        if now is not None:  # (an uncontended SQLite write that does not sync: made here, at once)
            self._written(starts + finishes, now)
            return
        self._writing = True
        writer.write_batch_later(
            [w.record for w in starts],
            [w.record for w in finishes],
            self._loop,
            lambda results: self._written(starts + finishes, results),
        )

    def _written(self, writes: list[QueuedWrite], results: BatchResults | BaseException) -> None:
        """On the loop: each caller's result; then what queued meanwhile goes at once."""
        self._writing = False
        if isinstance(results, BaseException):  # (write_batch reports its failures as results: a bug)
            for write in writes:
                write.written = True
                if not write.waiter.done():
                    write.waiter.set_exception(results)
        else:
            for write, result in zip(writes, [*results[0], *results[1]], strict=True):
                write.result, write.written = result, True
                if not write.waiter.done():
                    write.waiter.set_result(None)
        self._flush()


_batchers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[CallWriter, LoopBatcher]
] = weakref.WeakKeyDictionary()


def batcher_for(writer: CallWriter) -> LoopBatcher | None:
    """The running loop's batcher for ``writer`` (``None`` when the loop cannot be weakly referenced)."""
    loop = asyncio.get_running_loop()
    try:
        by_writer = _batchers.setdefault(loop, weakref.WeakKeyDictionary())
    except TypeError:  # a loop that cannot be weakly referenced (some third-party loops): no batching
        return None
    batcher = by_writer.get(writer)
    if batcher is None:
        batcher = by_writer[writer] = LoopBatcher(writer, loop)
    return batcher
