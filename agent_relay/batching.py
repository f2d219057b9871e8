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

from .ledger.processor import write_batch
from .ledger.records import CallRecord
from .ledger.store import LedgerStore


class LoopBatcher:
    """The calls of one runtime in flight on one event loop, and the writes they wait for."""

    def __init__(self, store: LedgerStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = weakref.ref(store)  # (the registry below is keyed by the store: no cycle back)
        self._loop = loop
        self.in_flight = 0  # async calls of this runtime between their start and their end, on this loop
        self._claims: list[CallRecord] = []
        self._completions: list[CallRecord] = []
        self._waiters: list[asyncio.Future[None]] = []

    @property
    def shared(self) -> bool:
        """Whether a call starting or ending now has company to share a commit with."""
        return self.in_flight > 1

    async def claim(self, record: CallRecord) -> None:
        await self._wait(record, self._claims)

    async def complete(self, record: CallRecord) -> None:
        await self._wait(record, self._completions)

    async def _wait(self, record: CallRecord, queue: list[CallRecord]) -> None:
        """Queue the write; the first one queued schedules the flush, which runs once every call that is
        ready on the loop has had its turn to queue its own. Failures are left on the record."""
        queue.append(record)
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        if len(self._waiters) == 1:
            self._loop.call_soon(self.flush)
        try:
            await waiter
        except asyncio.CancelledError:
            self.flush()  # the write happens before the cancellation goes on: the row is the truth
            raise

    def flush(self) -> None:
        """Write everything queued, in one transaction, and wake the callers."""
        claims, self._claims = self._claims, []
        completions, self._completions = self._completions, []
        waiters, self._waiters = self._waiters, []
        store = self._store()
        if store is not None and (claims or completions):  # (a store is alive while its calls are)
            write_batch(store, claims, completions)
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


_batchers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, weakref.WeakKeyDictionary[LedgerStore, LoopBatcher]
] = weakref.WeakKeyDictionary()


def batcher_for(store: LedgerStore) -> LoopBatcher | None:
    """The running loop's batcher for ``store`` (``None`` when the loop cannot be weakly referenced)."""
    loop = asyncio.get_running_loop()
    try:
        by_store = _batchers.setdefault(loop, weakref.WeakKeyDictionary())
    except TypeError:  # a loop that cannot be weakly referenced (some third-party loops): no batching
        return None
    batcher = by_store.get(store)
    if batcher is None:
        batcher = by_store[store] = LoopBatcher(store, loop)
    return batcher
