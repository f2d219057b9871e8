"""Keys across runs: ``@tool(key=..., key_scope="global")``.

A global key names one call for every run on the ledger (an order id charged once, ever). It is held in
``tool_call_keys`` (``ledger.key_claims``) by the first call that claims it. ``claim`` is reached from
``calls.Invocation`` once the call's own row is claimed, right before its body would run — so an approved
call, a retry and a resumed call each ask again — and answers with a step:

- ``HELD``: this call holds the key; its body runs. Its success is recorded on the key (``finished``),
  its failure gives the key up (``released``), and so does its compensation (``saga``).
- ``Served``: another run's call holds it and succeeded: this call is served that result without
  running, recorded in its own run (origin ``deduplicated``, no cost) with a span saying where it came
  from. The Stripe rule holds across runs: other arguments under the same key are an
  ``IdempotencyKeyReuseError``.
- ``WAITING``: the holder is running in a live process: wait (bounded by the runtime's wait timeout, then
  ``CallInProgressError``) and ask again. A holder whose process is gone is in doubt: its key is taken over
  for an ``idempotent`` tool, else ``CallInDoubtError`` names the holder's call to settle, and this run
  stops there (``in_doubt``) without unwinding.

A key whose ``retain`` has passed, or whose holder failed (or whose run was pruned before it ended), is
taken over. A call that is refused here never ran: its row is recorded failed.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from typing import Any, NamedTuple, NoReturn

from . import semconv, spans
from .callbase import CallBase
from .errors import CallInDoubtError, CallInProgressError, LedgerError
from .keys import scope_key
from .ledger.columns import instant
from .ledger.connection import owner_is_gone
from .ledger.key_claims import Holder, KeyClaim
from .states import CallStatus, Origin

HELD = "held"
WAITING = "waiting"
_RACES = 5  # takers beaten to a stale key before giving up (each race is another run winning it)


class Served(NamedTuple):
    """Served another run's result: ``value`` is the call's result."""

    value: Any


# --- what a holder means for this call (pure) ---------------------------------------------------------
class Take(NamedTuple):
    """The key is free to take over from ``holder`` (expired; its holder failed, is gone, or ours)."""

    holder: Holder


class Serve(NamedTuple):
    """The holder succeeded with ``output``."""

    holder: Holder
    output: Any


class Busy(NamedTuple):
    """The holder is still running in a live process (or awaits a person's decision)."""

    holder: Holder


class Doubt(NamedTuple):
    """The holder's process died mid-call: its outcome is unknown."""

    holder: Holder


def decide(holder: Holder, call_id: str, now: dt.datetime, idempotent: bool) -> Take | Serve | Busy | Doubt:
    """What ``holder`` means for call ``call_id`` asking for its key at ``now``. While the key row is
    pending, the holder's ``tool_calls`` row says how it went."""
    if holder.status == CallStatus.SUCCEEDED and (holder.call_id == call_id or not _expired(holder, now)):
        return Serve(holder, holder.output)
    if holder.call_id == call_id or _expired(holder, now):
        return Take(holder)
    if holder.call_status == CallStatus.SUCCEEDED:
        return Serve(holder, holder.call_output)
    if holder.call_status in (None, CallStatus.FAILED, CallStatus.REJECTED):
        return Take(holder)
    # (the call row's owner: a resumed worker took it over, or a timed-out body let it go)
    if holder.call_status == CallStatus.PENDING and owner_is_gone(holder.call_owner or holder.owner):
        return Take(holder) if idempotent else Doubt(holder)
    return Busy(holder)


def _expired(holder: Holder, now: dt.datetime) -> bool:
    expires = instant(holder.expires_at)  # (SQLite: stored as UTC, read back naive)
    return expires is not None and expires <= now


# --- acting on it --------------------------------------------------------------------------------------
def claim(call: CallBase) -> str | Served:
    """Hold the call's global key (``HELD``), serve another run's result (``Served``), or wait
    (``WAITING``: ask again after a pause). Refusals are recorded on the call's row, then raised."""
    spec, run, record, services = call.spec, call.run, call.record, call.services
    assert record is not None and call.user_key is not None and spec.global_key is not None
    now = dt.datetime.now(dt.UTC)
    retain = spec.global_key.retain
    request = KeyClaim(
        scope_key=scope_key(spec.name, call.user_key, services.keys.anchor),
        tool_name=spec.name,
        run_id=run.run_id,
        call_id=record.call_id,
        owner=services.owner,
        arguments=record.arguments,
        created_at=now,
        expires_at=None if retain is None else now + retain,
    )
    keys = services.ledger.keys
    if call.span is not None:
        call.span.set_attribute(semconv.KEY_SCOPE, "global")
    for _ in range(_RACES):
        try:
            holder = keys.claim(request)
            fate = None if holder is None else decide(holder, record.call_id, now, spec.idempotent)
            if fate is None or (isinstance(fate, Take) and keys.take(request, fate.holder)):
                call.scope = HELD
                return HELD
        except LedgerError as err:
            _refuse(call, err)
        if isinstance(fate, Take):
            continue  # another run took it first: ask again
        _check_arguments(call, fate.holder)
        if isinstance(fate, Serve):
            return Served(_serve(call, fate))
        if isinstance(fate, Doubt):
            holder = fate.holder
            run.in_doubt.append(holder.call_id)  # the run stops here, without unwinding
            _refuse(
                call,
                CallInDoubtError(
                    tool_name=spec.name, run_id=holder.run_id, call_id=holder.call_id, owner=holder.owner
                ),
            )
        if call.deadline is None:
            call.deadline = time.monotonic() + services.wait_timeout_s
        if time.monotonic() <= call.deadline:
            call.scope = WAITING
            return WAITING
        break
    _refuse(call, CallInProgressError(tool_name=spec.name, run_id=run.run_id, idempotency_key=call.key))


def finished(call: CallBase) -> LedgerError | None:
    """The call holding its key succeeded (its row is written): later runs are served its result."""
    if call.scope != HELD:
        return None
    assert call.record is not None
    call.scope = None
    try:
        call.services.ledger.keys.finish(call.record.call_id, call.record.output)
    except LedgerError as err:
        return err
    return None


def released(call: CallBase) -> None:
    """The call holding its key failed: give the key up, so the next call with it runs. (Not giving it up
    is safe: the holder's failed row frees it for the next claimant.)"""
    if call.scope == HELD and call.record is not None:
        call.scope = None
        with contextlib.suppress(LedgerError):
            call.services.ledger.keys.release(call.record.call_id)


def _serve(call: CallBase, fate: Serve) -> Any:
    """Record the call as served from the holder's (origin ``deduplicated``, no cost); its result."""
    record, span, bound, holder = call.record, call.span, call.bound, fate.holder
    assert record is not None and span is not None and bound is not None
    record.status, record.output, record.origin = CallStatus.SUCCEEDED, fate.output, Origin.DEDUPLICATED
    spans.mark_served_across_runs(span, holder.run_id, holder.call_id)
    span.end()
    try:
        bound.finished()
    except LedgerError:
        call.release()
        raise
    if holder.status != CallStatus.SUCCEEDED:  # its key row was left pending (its process died after)
        with contextlib.suppress(LedgerError):
            call.services.ledger.keys.finish(holder.call_id, fate.output)
    call.metric(CallStatus.SUCCEEDED, Origin.DEDUPLICATED)
    call.release(fate.output, succeeded=True)
    return call.spec.decode(fate.output)


def _check_arguments(call: CallBase, holder: Holder) -> None:
    """Stripe's rule, across runs: a global key may only be used again with the same arguments."""
    err = call.key_reuse(holder.arguments, holder.run_id)
    if err is not None:
        _refuse(call, err)


def _refuse(call: CallBase, error: BaseException) -> NoReturn:
    """The call does not run: its row is recorded failed (it may run again), its span ends, and
    ``error`` is raised."""
    call.failed(error)
    raise error
