"""Group commit for async tool calls: the ledger writes of calls in flight together on one event loop
go to the ledger in one transaction.

An ``async def`` tool call awaits its claim (the pending row) and its outcome, each committed before it
goes on, as every call does; what changes is that the calls gathered on the loop at that moment share the
commit. A call that finds itself alone in flight writes at once, as a sync call does, so sequential
awaits pay nothing for this. Durability is unchanged: no call runs its body before its claim is
committed, nor returns before its outcome is. What the calls share is a transaction's fixed cost: on
SQLite the lock, the commit and the WAL's bookkeeping; on a server, the commit's round trip and its WAL
flush.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, TypeVar

from .errors import LedgerError
from .ledger.records import CallRecord, Claim
from .ledger.writer import CallWriter

_R = TypeVar("_R")


class LoopBatcher:
    """The calls of one ledger in flight on one event loop, and the writes they wait for."""

    def __init__(self, writer: CallWriter, loop: asyncio.AbstractEventLoop) -> None:
        self._writer = weakref.ref(writer)  # (the registry below is keyed by the writer: no cycle back)
        self._loop = loop
        self.in_flight = 0  # async calls of this ledger between their start and their end, on this loop
        self._starts: list[tuple[CallRecord, asyncio.Future[Any]]] = []
        self._finishes: list[tuple[CallRecord, asyncio.Future[Any]]] = []

    @property
    def shared(self) -> bool:
        """Whether a call starting or ending now has company to share a commit with."""
        return self.in_flight > 1

    def submit_start(self, record: CallRecord) -> asyncio.Future[Claim | LedgerError]:
        """Queue ``CallWriter.start`` for this loop turn's transaction; the future gets its result."""
        return self._submit(record, self._starts)

    def submit_finish(self, record: CallRecord) -> asyncio.Future[LedgerError | None]:
        """Queue ``CallWriter.finish`` for this loop turn's transaction; the future gets its result."""
        return self._submit(record, self._finishes)

    def _submit(
        self, record: CallRecord, queue: list[tuple[CallRecord, asyncio.Future[Any]]]
    ) -> asyncio.Future[Any]:
        """The first write queued schedules the flush, which runs once every call that is ready on the
        loop has had its turn to queue its own."""
        if not self._starts and not self._finishes:
            self._loop.call_soon(self.flush)
        waiter = self._loop.create_future()
        queue.append((record, waiter))
        return waiter

    async def result(self, waiter: asyncio.Future[_R]) -> _R:
        """Wait for a queued write. Cancelled meanwhile, the write is made at once, before the
        cancellation goes on (the row is the truth): ``waiter.result()`` then says how it went."""
        try:
            return await asyncio.shield(waiter)
        except asyncio.CancelledError:
            self.flush()
            raise

    def flush(self) -> None:
        """Write everything queued, in one transaction, and hand each caller its result."""
        starts, self._starts = self._starts, []
        finishes, self._finishes = self._finishes, []
        writer = self._writer()
        if writer is None or not (starts or finishes):  # (a writer is alive while its calls are)
            return
        claimed, finished = writer.write_batch([r for r, _ in starts], [r for r, _ in finishes])
        results: list[Any] = [*claimed, *finished]
        for (_, waiter), result in zip(starts + finishes, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)


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
