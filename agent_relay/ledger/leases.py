"""Leases on claims: how long the owner of a pending ``tool_calls`` row holds it, who renews it, and when a
waiting worker may take it over.

A strict call's claim stores its owner (``host:pid``) and ``lease_expires_at``: the claim's instant plus
``LedgerOptions.lease_s`` (30 s by default). While the body runs, its process renews the lease: one
``LeaseRenewer`` thread per ledger renews every lease its process holds, every ``lease_s / 3``, in one
``UPDATE`` (sync and async bodies alike: the thread needs no event loop). The lease is the process's, not
the body's: a body stuck forever in a live process keeps its lease (bound it with ``@tool(timeout_s=...)``).

A worker that finds another's pending row treats its owner as gone (``lapsed``) when the owner is provably
dead (same host, no such process; or it let the row go, ``IN_DOUBT_OWNER``) or its lease has ended: it
is dead on another host, frozen (SIGSTOP, a VM paused) or cut off from the ledger. The call is then in
doubt: taken over only for an ``idempotent=True`` tool, else ``CallInDoubtError``. The take-over is
conditional on the lease the waiter judged (``lease_expires_at < now``), so a lease renewed meanwhile is
not taken; and an owner that comes back after losing its row cannot write its outcome over the new
owner's try (the writer's outcome is conditional on the owner), it gets ``LedgerError``.

Clocks: instants are UTC from each host's clock (as ``started_at`` is); a waiter compares the owner's
``lease_expires_at`` with its own clock. On SQLite every process shares one host and so one clock. On
PostgreSQL the hosts' clocks must agree to well within ``lease_s`` (NTP keeps them within milliseconds):
a waiter whose clock runs ahead of the owner's by more than about two thirds of ``lease_s`` (what a
renewal every third leaves in hand) could take over a live claim early. Rows claimed before schema
version 8 (or by an older AgentRelay) have no lease: only the same-host test frees them.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence

from .connection import IN_DOUBT_OWNER, owner_is_gone, utc
from .records import Found

_log = logging.getLogger(__name__)

FOREVER_NS = 253_402_300_799 * 10**9  # 9999-12-31 23:59:59 UTC: "whatever its lease says"
RENEWALS_PER_LEASE = 3  # a live owner's lease is renewed this often per lease period
_CHUNK = 500  # call ids per renewal statement

Renew = Callable[[str, Sequence[str]], Collection[str]]
"""``renew(owner, call_ids)``: extend the leases of those of ``call_ids`` still pending under ``owner``;
the ids it extended."""


@dataclasses.dataclass(frozen=True, slots=True)
class Lapsed:
    """The owner of a pending row is gone: the call is in doubt. ``why`` says how it is known (for
    ``CallInDoubtError``); a take-over happens only while the row's lease ends before ``before_ns``."""

    why: str
    before_ns: int


def lapsed(found: Found, me: str, now_ns: int) -> Lapsed | None:
    """Whether the owner of the pending row ``found`` is gone (``None``: it holds the row, wait for it).
    ``me`` is this process's owner string: its own rows are never judged by their lease."""
    owner = found.owner
    if owner == IN_DOUBT_OWNER:
        return Lapsed("timed out before its outcome was known", FOREVER_NS)
    if owner_is_gone(owner):
        return Lapsed(f"was claimed by {owner}, which died before recording its outcome", FOREVER_NS)
    until = found.lease_until
    if owner == me or until is None or until >= utc(now_ns):
        return None
    return Lapsed(
        f"was claimed by {owner}, whose lease on it ran out at {until.isoformat(timespec='milliseconds')} "
        f"without being renewed (that process is gone, frozen or cut off from the ledger) before recording "
        f"its outcome",
        now_ns,
    )


class LeaseRenewer:
    """Renews the leases of the calls this process holds, on one daemon thread started on first use, which
    ticks every ``interval_s`` (renewing only when some are held). Thread-safe. A renewal that fails is
    logged and tried again at the next tick (a lease that runs out meanwhile can be taken over; its owner
    then cannot record the outcome). A row no longer pending under its owner (finished, or taken over) is
    let go."""

    def __init__(self, lease_s: float, renew: Renew) -> None:
        self.interval_s = lease_s / RENEWALS_PER_LEASE
        self._renew = renew
        self._held: dict[str, tuple[str, object]] = {}  # call id -> (owner, this hold's token)
        self._cond = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False

    def hold(self, call_id: str, owner: str) -> None:
        """Renew the lease of ``call_id`` (pending under ``owner``) until ``drop``."""
        with self._cond:
            self._held[call_id] = (owner, object())
            if self._closed:
                return
            if self._thread is None or not self._thread.is_alive():  # (first use, or after a fork)
                self._thread = threading.Thread(target=self._run, name="agent-relay-leases", daemon=True)
                self._thread.start()
            # (not woken: it ticks every interval_s, before any lease held since its last tick runs out;
            # waking it on every call that found it idle cost a thread switch per sequential call)

    def drop(self, call_id: str) -> None:
        """Stop renewing ``call_id`` (its outcome is written, or it was let go)."""
        with self._cond:
            self._held.pop(call_id, None)

    def held(self) -> list[str]:
        """The call ids whose leases are being renewed."""
        with self._cond:
            return list(self._held)

    def close(self) -> None:
        """Stop the thread (the leases it held then run out)."""
        with self._cond:
            self._closed = True
            thread, self._thread = self._thread, None
            self._cond.notify_all()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5.0)

    def _run(self) -> None:
        with self._cond:
            due = time.monotonic() + self.interval_s
            while not self._closed:
                left = due - time.monotonic()
                if left > 0 or not self._held:
                    if left <= 0:  # an idle tick
                        due = time.monotonic() + self.interval_s
                        left = self.interval_s
                    self._cond.wait(left)
                    continue
                if left > 0:
                    self._cond.wait(left)
                    continue
                due = time.monotonic() + self.interval_s
                held = dict(self._held)
                self._cond.release()
                try:
                    gone = self._renew_all(held)
                finally:
                    self._cond.acquire()
                for call_id in gone:  # (unless held again meanwhile: a failed call tried again)
                    if self._held.get(call_id) == held[call_id]:
                        del self._held[call_id]

    def _renew_all(self, held: dict[str, tuple[str, object]]) -> list[str]:
        """Renew every lease in ``held``; the ids no longer pending under their owner."""
        by_owner: dict[str, list[str]] = {}
        for call_id, (owner, _) in held.items():
            by_owner.setdefault(owner, []).append(call_id)
        gone: list[str] = []
        for owner, ids in by_owner.items():
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                try:
                    renewed = set(self._renew(owner, chunk))
                except Exception:
                    _log.warning(
                        "agent-relay: could not renew the leases of %d calls", len(chunk), exc_info=True
                    )
                    continue
                gone.extend(call_id for call_id in chunk if call_id not in renewed)
        return gone
