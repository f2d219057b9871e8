"""Async tool calls' ledger writes: made off the event loop, and shared by the calls in flight together.

An ``async def`` tool call awaits its claim (the pending row) and its outcome, each committed before it
goes on, as every call does. The writes are made on a thread of the ledger's writer
(``CallWriter.loop_writes``), never on the loop's own thread, so a slow disk or a server round trip never
holds up the loop's other tasks. The calls gathered on the loop share the commit: the writes queued on a
loop turn go together, and while a write is in flight, the next ones queue and go in one transaction
when it ends (group commit). A call alone in flight writes at once (the cost is the hop to the writer's
thread and back). Durability is unchanged: no call runs its body before its claim is committed, nor
returns before its outcome is. What the calls share is a transaction's fixed cost: on SQLite the lock,
the commit and the WAL's bookkeeping; on a server, the commit's round trip and its WAL flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any, TypeVar

from .errors import LedgerError
from .ledger.records import CallRecord, Claim
from .ledger.writer import CallWriter

_R = TypeVar("_R")


class LoopBatcher:
    """The calls of one ledger in flight on one event loop, and the writes they wait for. Used on its
    loop's thread only (the writer's thread hands results back through the loop)."""

    def __init__(self, writer: CallWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = weakref.ref(writer)  # (the registry below is keyed by the writer: no cycle back)
        self._loop = loop
        self._starts: list[tuple[CallRecord, asyncio.Future[Any]]] = []
        self._finishes: list[tuple[CallRecord, asyncio.Future[Any]]] = []
        self._scheduled = False  # a flush is due on this loop turn
        self._writing = False  # a batch is being written on the writer's thread
        self.batches = 0  # batches written (for tests and benchmarks)

    def submit_start(self, record: CallRecord) -> asyncio.Future[Claim | LedgerError]:
        """Queue ``CallWriter.start`` for the next transaction; the future gets its result."""
        return self._submit(record, self._starts)

    def submit_finish(self, record: CallRecord) -> asyncio.Future[LedgerError | None]:
        """Queue ``CallWriter.finish`` for the next transaction; the future gets its result."""
        return self._submit(record, self._finishes)

    def _submit(
        self, record: CallRecord, queue: list[tuple[CallRecord, asyncio.Future[Any]]]
    ) -> asyncio.Future[Any]:
        """The first write queued while none is in flight schedules the flush, which runs once every
        call that is ready on the loop has had its turn to queue its own."""
        waiter = self._loop.create_future()
        queue.append((record, waiter))
        if not self._scheduled and not self._writing:
            self._scheduled = True
            self._loop.call_soon(self._flush)
        return waiter

    async def result(self, waiter: asyncio.Future[_R]) -> _R:
        """Wait for a queued write. Cancelled meanwhile, the caller still waits for the write to end
        before the cancellation goes on (the row is the truth): ``waiter.result()`` then says how it
        went. (The write is bounded by the ledger's own timeouts.)"""
        try:
            return await asyncio.shield(waiter)
        except asyncio.CancelledError:
            while not waiter.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(waiter)
            raise

    def _flush(self) -> None:
        """Hand everything queued to the writer's thread, as one transaction."""
        self._scheduled = False
        if self._writing or not (self._starts or self._finishes):
            return
        starts, self._starts = self._starts, []
        finishes, self._finishes = self._finishes, []
        waiters = [w for _, w in starts + finishes]
        writer = self._writer()
        if writer is None:  # (a writer is alive while its calls are)
            return
        self._writing = True
        self.batches += 1
        written = self._loop.run_in_executor(
            writer.loop_writes, writer.write_batch, [r for r, _ in starts], [r for r, _ in finishes]
        )
        written.add_done_callback(lambda done: self._written(done, waiters))

    def _written(self, done: asyncio.Future[Any], waiters: list[asyncio.Future[Any]]) -> None:
        """On the loop: each caller's result; then what queued meanwhile goes at once."""
        self._writing = False
        failure = None if done.cancelled() else done.exception()
        if done.cancelled() or failure is not None:  # (write_batch reports its failures as results)
            for waiter in waiters:
                if waiter.done():
                    continue
                if failure is None:
                    waiter.cancel()
                else:
                    waiter.set_exception(failure)
        else:
            claimed, finished = done.result()
            for waiter, result in zip(waiters, [*claimed, *finished], strict=True):
                if not waiter.done():
                    waiter.set_result(result)
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
