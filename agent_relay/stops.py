"""Calls that stop their run without unwinding it, for a person to act: a call in doubt after its body
timed out (settle it), and a call that requires approval (approve or reject it); and what a resumed run
does with a decided one. Each works on the call's ``CallBase`` once its row is claimed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from . import reserve, semconv, spans
from .callbase import CallBase
from .errors import (
    ApprovalRejectedError,
    ApprovalRequiredError,
    CallInDoubtError,
    ConfigurationError,
    LedgerError,
    ToolTimeoutError,
)
from .ledger.connection import IN_DOUBT_OWNER
from .ledger.records import Found
from .states import CallStatus

Approver = Callable[[dict[str, Any]], bool]


def approver(requires: bool | Approver, tool_name: str) -> Approver | None:
    """``@tool(requires_approval=...)``: always (True), never (False), or a predicate of the arguments."""
    if requires is True:
        return lambda arguments: True
    if requires is False or requires is None:
        return None
    if callable(requires):
        return requires
    raise ConfigurationError(
        f"@tool({tool_name!r}, requires_approval=...) must be True, False or a function of the arguments "
        f"dict returning a bool (e.g. lambda args: args['amount'] > 100), not {requires!r}."
    )


def timed_out(call: CallBase, exc: ToolTimeoutError) -> NoReturn:
    """The body did not end in time (``@tool(timeout_s=...)``) and running it again is not known to be
    safe: its row stays pending, let go (``IN_DOUBT_OWNER``), and the run stops there without unwinding,
    as for a call whose worker died; ``CallInDoubtError`` says how to settle it."""
    record, bound, span = call.record, call.bound, call.span
    assert record is not None and bound is not None and span is not None
    error = CallInDoubtError(
        tool_name=call.spec.name,
        run_id=call.run.run_id,
        call_id=record.call_id,
        owner=call.services.owner,
        why=f"timed out after {exc.timeout_s:g} s, while its side effect may still have been under way",
    )
    error.__cause__ = exc
    record.error_type, record.error_message = spans.error_type_name(exc), str(exc)
    call.run.in_doubt.append(record.call_id)
    reserve.keep(call)  # (what it may cost stays reserved: fail closed)
    try:
        spans.end_span(span, error, call.secrets)
        bound.finished()  # (still pending: the row keeps why)
        call.services.ledger.calls.settle(record.call_id, owner=IN_DOUBT_OWNER)
    except LedgerError as err:
        error.add_note(f"agent-relay: the call could not be marked in doubt in the ledger: {err}")
    call.release()
    raise error


def await_approval(call: CallBase) -> NoReturn:
    """The call's row says it awaits a decision (asked now, or earlier and still undecided): the run stops
    here, without unwinding; nothing ran."""
    record, bound, span = call.record, call.bound, call.span
    assert record is not None and bound is not None and span is not None
    bound.hold(Found(CallStatus.AWAITING_APPROVAL, None, record.attempts, None, None))  # (nothing to finish)
    call.run.awaiting_approval.append(record.call_id)
    span.add_event(semconv.EVENT_APPROVAL_REQUESTED)
    call.abandon(
        ApprovalRequiredError(tool_name=call.spec.name, run_id=call.run.run_id, call_id=record.call_id)
    )


def rejected(call: CallBase) -> NoReturn:
    """A person rejected the call: raise that where the agent called it (the row says so already)."""
    record = call.record
    assert record is not None
    decision = call.services.ledger.get_call(record.call_id)
    by, note = (decision.decided_by, decision.decision_note) if decision is not None else (None, None)
    assert call.span is not None
    call.span.set_attributes(_decision_attributes(CallStatus.REJECTED, by, note))
    call.abandon(ApprovalRejectedError(tool_name=call.spec.name, call_id=record.call_id, by=by, note=note))


def take_approved(call: CallBase) -> int | None:
    """Claim an approved call for this try; its attempt number, or None when another worker took it."""
    record, span = call.record, call.span
    assert record is not None and span is not None
    approval = call.services.ledger.calls.take_approved(record)
    if approval is None:
        return None
    span.set_attributes(_decision_attributes(CallStatus.APPROVED, approval.decided_by, approval.note))
    if approval.decided_at is not None:
        span.set_attribute(semconv.APPROVAL_DECIDED_AT, approval.decided_at.isoformat())
    return approval.attempts


def _decision_attributes(decision: str, by: str | None, note: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {semconv.APPROVAL_DECISION: decision}
    if by is not None:
        attributes[semconv.APPROVAL_DECIDED_BY] = by
    if note:
        attributes[semconv.APPROVAL_NOTE] = note
    return attributes
