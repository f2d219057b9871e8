"""``CallTable``: the in-memory state of one run's calls, and the typed fate of each new call.

What the table holds: the succeeded calls it can serve again (an LRU index, with a Bloom filter of the
keys it dropped), the calls in flight (so an identical call waits for the first instead of running
twice), the next ``seq``, the repeat counts of tools that opted out of deduplication, and the failed tries
of calls that leave no pending row. ``reserve`` returns a fate — a small frozen value the caller acts on;
the table itself does no I/O and never waits.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from .errors import CallInProgressError

# Succeeded calls a live or resumed run keeps in memory to serve again; past this many, the least
# recently used are dropped and served from the ledger instead (a read), so a long session's memory stays
# flat. (A replay or fork keeps them all: its source run's rows are in memory anyway.)
DEDUP_INDEX_SIZE = 1024
_EVICTED_BITS = 1 << 18  # a Bloom filter of the dropped calls' keys (32 KiB, made on the first drop)


_waiters_lock = threading.Lock()  # (tasks waiting on a flight are rare: one lock for all of them)


class Flight:
    """A live call that callers with the same key wait for: threads block on a lock, tasks await a
    future their loop is told about when the call lands. Made by the first caller that waits (most calls
    have none: the table marks a call in flight with its thread's id alone)."""

    __slots__ = ("_running", "_waiters", "thread_id")

    def __init__(self, thread_id: int) -> None:
        self._running = threading.Lock()  # held while the call runs (cheaper to make than an Event)
        self._running.acquire()
        self._waiters: list[asyncio.Future[None]] | None = None
        self.thread_id = thread_id  # the thread running the call

    def land(self) -> None:
        """The call ended: wake the waiters. (No lock: a task registers itself before it looks whether
        the call is still running, so it either is in the list taken here or sees the call landed.)"""
        self._running.release()
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            waiter.get_loop().call_soon_threadsafe(_wake, waiter)

    def wait(self, timeout: float, *, tool_name: str, run_id: str, key: str) -> None:
        # the same thread waiting on its own call would wait forever (a tool calling itself)
        if self.thread_id == threading.get_ident() or not self._running.acquire(timeout=timeout):
            raise CallInProgressError(tool_name=tool_name, run_id=run_id, idempotency_key=key)
        self._running.release()  # let the next waiter through

    async def wait_async(self, timeout: float, *, tool_name: str, run_id: str, key: str) -> None:
        waiter = asyncio.get_running_loop().create_future()
        with _waiters_lock:  # (among waiters: ``land`` takes the list without it)
            if self._waiters is None:
                self._waiters = []
            self._waiters.append(waiter)
        if not self._running.locked():  # landed before the list was taken: nobody will wake this one
            return
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            raise CallInProgressError(tool_name=tool_name, run_id=run_id, idempotency_key=key) from None


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# --- fates: what to do with a call --------------------------------------------------------------------
class Serve(NamedTuple):
    """Already succeeded in this run: return ``output`` (``arguments`` kept only for caller keys)."""

    arguments: Any
    output: Any


class Wait(NamedTuple):
    """An identical call is in flight: wait for it to land, then ask again."""

    flight: Flight


class Live(NamedTuple):
    """Run it live as call number ``seq``."""

    seq: int


class Replay(NamedTuple):
    """Serve it from the replayed run's row ``row`` as call number ``seq``; no body runs."""

    seq: int
    row: Any


class Diverge(NamedTuple):
    """The replayed run has no such call: record the divergence as call ``seq`` (the ``position``-th
    distinct call the replay asked for), then raise."""

    seq: int
    position: int


class Refuse(NamedTuple):
    """Not allowed to run at all (the budget is spent, the run is unwinding): raise ``error``."""

    error: BaseException


Fate = Serve | Wait | Live | Replay | Diverge | Refuse
NewCall = Live | Replay | Diverge | Refuse  # what a call neither served nor in flight may become


class CallTable:
    """One run's calls in memory. Thread-safe."""

    def __init__(self, *, first_seq: int = 1, keep_all: bool = False) -> None:
        self._lock = threading.Lock()
        self._seq = itertools.count(first_seq)
        self._keep_all = keep_all  # a replay keeps every served call (its source is in memory anyway)
        # (phase, key) -> (arguments, output) of succeeded calls, least recently used first
        self._done: OrderedDict[tuple[str, str], Serve] = OrderedDict()
        self._evicted: bytearray | None = None  # which keys the index dropped (see maybe_evicted)
        self._inflight: dict[tuple[str, str], Flight | int] = {}  # a Flight once someone waits
        self._occurrences: dict[str, int] = {}
        self._tries: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        """How many succeeded calls the index holds."""
        return len(self._done)

    def reserve(
        self, phase: str, key: str, new_call: Callable[[Callable[[], int], str, str, str], NewCall], tool: str
    ) -> Fate:
        """The fate of a call: ``Serve`` or ``Wait`` from the table, else what
        ``new_call(next_seq, phase, key, tool)`` decides (it runs under the table's lock). A ``Live`` or
        ``Replay`` call is in flight until ``release``."""
        with self._lock:
            done = self._done.get((phase, key))
            if done is not None:
                self._done.move_to_end((phase, key))
                return done
            flight = self._inflight.get((phase, key))
            if flight is not None:
                if not isinstance(flight, Flight):  # the first to wait for it (its runner's thread id)
                    flight = self._inflight[(phase, key)] = Flight(flight)
                return Wait(flight)
            fate = new_call(self._seq.__next__, phase, key, tool)
            if isinstance(fate, (Live, Replay)):
                self._inflight[(phase, key)] = threading.get_ident()
            return fate

    def release(self, phase: str, key: str, done: Serve | None = None) -> None:
        """Settle a reserved call: succeeded (``done`` = its arguments and output) or not; wake waiters."""
        with self._lock:
            if done is not None:
                self._done[(phase, key)] = done
                if len(self._done) > DEDUP_INDEX_SIZE and not self._keep_all:
                    (_, dropped), _ = self._done.popitem(last=False)
                    if self._evicted is None:
                        self._evicted = bytearray(_EVICTED_BITS // 8)
                    for bit in _filter_bits(dropped):
                        self._evicted[bit >> 3] |= 1 << (bit & 7)
            flight = self._inflight.pop((phase, key), None)
        if isinstance(flight, Flight):
            flight.land()

    def maybe_evicted(self, key: str) -> bool:
        """Whether the index may have dropped the call with this key (False: it never held it). A Bloom
        filter: fixed in size, so it may say yes for a key it never dropped (a needless ledger read)."""
        evicted = self._evicted
        return evicted is not None and all(evicted[b >> 3] & (1 << (b & 7)) for b in _filter_bits(key))

    def occurrence(self, base_key: str) -> int:
        """How many times a non-deduplicated call with this key was made before in this run."""
        with self._lock:
            n = self._occurrences.get(base_key, 0)
            self._occurrences[base_key] = n + 1
            return n

    def attempt(self, phase: str, key: str) -> int:
        """The try number of a call that leaves no pending row (which would count its tries)."""
        with self._lock:
            return self._tries.get((phase, key), 0) + 1

    def failed_try(self, phase: str, key: str, attempt: int) -> None:
        with self._lock:
            self._tries[(phase, key)] = attempt


def _filter_bits(key: str) -> tuple[int, int]:
    """Two bit positions for an idempotency key (64 hex digits of SHA-256: already uniformly random)."""
    return int(key[:8], 16) % _EVICTED_BITS, int(key[8:16], 16) % _EVICTED_BITS
