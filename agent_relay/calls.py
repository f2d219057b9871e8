"""The path one tool call takes inside a run, shared by the sync and async wrappers.

``Invocation`` holds the call's encoded arguments and key (computed before anything else happens).
``begin()`` asks the run for the call's fate and acts on it, returning the next step as a value: ``Done``
(served without running: deduplicated, resumed or replayed), ``Wait`` (an identical call is in flight),
``Poll`` (another live worker holds its row), ``ClaimWith`` (async: its claim is written off the loop,
with other calls') or ``Go`` (claimed: run the body). The drivers (``agent_relay.execute``) only wait
(sleeping or awaiting) and run the body between ``enter()`` and ``leave()``; ``succeeded`` / ``failed`` end
the span and the row is finished — by the ledger's span processor, or through the same ``BoundCall`` when
no processor saw the span. The async driver awaits a batched call's outcome between ``outcome`` /
``failing`` and ``settled`` / ``failure_settled``, the steps those two take.
"""

from __future__ import annotations

import dataclasses
import time
from contextvars import ContextVar, Token
from decimal import Decimal
from typing import Any, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace

from . import keyscope, reserve, semconv, spans, stops
from .callbase import MAX_ERROR_MESSAGE
from .calltable import Live, Refuse, Replay, Serve, Wait
from .compensation import Step
from .content import scrub
from .context import CallInfo
from .encoding import encode, safe_text
from .errors import (
    CallInDoubtError,
    CallInProgressError,
    ConfigurationError,
    LedgerError,
    OutputEncodingError,
)
from .injected import model_tool_call_id
from .keys import encode_arguments, idempotency_key
from .ledger.leases import lapsed
from .ledger.processor import BoundCall
from .ledger.records import CallRecord, Claim, Found, Held
from .run import Run, current_run
from .served import ServedCall
from .services import Services
from .spec import ToolSpec
from .states import CallStatus, Durability, Origin, Phase, RunMode
from .usage import TokenUsage, response_facts, usage_from_result

_POLL_S = 0.05  # how often a call waits on a row another live worker holds
_DECISIONS = (CallStatus.AWAITING_APPROVAL, CallStatus.APPROVED, CallStatus.REJECTED)

_active: ContextVar[Invocation | None] = ContextVar("agent_relay_active_invocation", default=None)


def active_invocation() -> Invocation | None:
    """The live tool call whose body is running in this context, if any."""
    return _active.get()


# --- steps: what the driver does next -----------------------------------------------------------------
class Done(NamedTuple):
    """Served without running: ``value`` is the call's result."""

    value: Any


@dataclasses.dataclass(frozen=True, slots=True)
class Go:
    """Claimed: run the body."""


class Poll(NamedTuple):
    """Another live worker holds the call's row: wait ``delay`` seconds, then ``poll()``."""

    delay: float


@dataclasses.dataclass(frozen=True, slots=True)
class ClaimWith:
    """(Async) write the claim with the other calls' of this loop turn, then ``claimed(claim)``."""


Next = Done | Wait | Poll | ClaimWith | Go

_GO = Go()


class Invocation(ServedCall):
    """One call of a tool inside a run: deciding its fate, and the live path. Not shared between threads."""

    __slots__ = ()

    @staticmethod
    def forward(
        services: Services, spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Invocation | None:
        """A forward call in the current run, or ``None`` outside any session (a plain call)."""
        run = current_run()
        if run is None:
            return None
        bound = spec.bind(args, kwargs)
        model_call_id = None
        if spec.excluded:
            left_out = {name: bound.pop(name) for name in spec.excluded}
            model_call_id = model_tool_call_id(left_out, spec.call_id_parameters)
        args_json = encode_arguments(spec.name, bound)
        user_key = None
        if spec.key is not None:
            user_key = spec.key(bound)
            if not isinstance(user_key, str) or not user_key:
                raise ConfigurationError(
                    f"tool {spec.name!r}: its key= function must return a non-empty string, not "
                    f"{user_key!r}; the tool was not run."
                )
        occurrence = None
        if not spec.deduplicate:
            base = idempotency_key(spec.name, Phase.FORWARD, args_json, user_key=user_key, scheme=run.keys)
            occurrence = run.table.occurrence(base)
        call = Invocation(
            services, run, spec, Phase.FORWARD, args_json, user_key=user_key, occurrence=occurrence
        )
        call.model_call_id = model_call_id
        return call

    @staticmethod
    def compensating(services: Services, run: Run, step: Step) -> Invocation:
        """The compensation of a recorded forward call: keyed by the compensating tool's name, phase
        ``compensation`` and the forward call's arguments."""
        return Invocation(
            services, run, step.compensation, Phase.COMPENSATION, dict(step.arguments), compensates=step
        )

    # --- deciding ----------------------------------------------------------------------------------------
    def begin(self, *, batch: bool = False) -> Next:
        """Ask the run for this call's fate and act on it; with ``batch`` a live call's claim is left to
        the caller (``ClaimWith``), to be written with other calls'."""
        fate = self.run.fate(self.phase, self.key, self.spec.name)
        if isinstance(fate, Live):
            if self.run.spend.limit is not None:
                reserve.hold(self)  # what it may cost, reserved before it runs; or refused (raises)
            return self._start_live(fate.seq, batch)
        if isinstance(fate, Serve):
            if self.user_key is not None:
                self.check_user_key(fate.arguments)
            span = self.start_span(None, spans.DEDUPLICATED_ATTRIBUTES)
            return Done(self.served(span, fate.output, semconv.EVENT_DEDUPLICATED, "deduplicated"))
        if isinstance(fate, Replay):
            return Done(self.replayed(fate))
        if isinstance(fate, Wait):
            return fate
        if isinstance(fate, Refuse):
            spans.end_span(self.start_span(), fate.error)
            self.metric("refused", Origin.LIVE)
            raise fate.error
        if self.run.spend.limit is not None:  # a call the recorded run refused for its budget: refused again
            reserve.refuse_again(self)
        self.diverge(fate)

    def _start_live(self, seq: int, batch: bool) -> Next:
        run, spec, services = self.run, self.spec, self.services
        durability = spec.durability
        approval = spec.approval is not None and self.phase is Phase.FORWARD and spec.approval(self.args_json)
        if self.phase is not Phase.FORWARD or run.mode is RunMode.RESUME or approval:
            durability = Durability.STRICT  # a resumed run's calls and compensations, and approvals: strict
        record = CallRecord(
            run_id=run.run_id,
            call_id=self.call_id,
            seq=seq,
            tool_name=spec.name,
            phase=self.phase,
            idempotency_key=self.key,
            arguments=spec.content.for_ledger(self.args_json),
            owner=services.owner,
            durability=durability,
            attempts=run.table.attempt(self.phase, self.key) if durability is Durability.OUTCOME else 1,
            budget_hold=self.hold,
        )
        if record.arguments is self.args_json:  # not redacted: store the text the key was made from
            record.arguments_text = self.args_text
        if approval:  # its claim asks for the decision: the row awaits it (unless one was made already)
            record.status = CallStatus.AWAITING_APPROVAL
        self.record = record
        writer = services.ledger.calls
        found: Found | None = None
        # look for an earlier row of this key when no pending row will meet it (durability "outcome"), and
        # for a caller-supplied key, whose earlier try may have failed with other arguments (Stripe's rule)
        if self.user_key is not None or (
            durability is Durability.OUTCOME and run.table.maybe_evicted(self.key)
        ):
            try:
                found = writer.find(record)
                if found is not None:
                    self.check_user_key(found.arguments)
            except BaseException:
                self.release()
                raise
        try:
            self.bound = BoundCall(writer, record)
            if found is not None and found.status == CallStatus.SUCCEEDED:
                self.span = span = self.start_span(seq)
                return self.claimed(self.bound.hold(found))
            if batch:  # its writes go with other calls': the processor leaves this span alone
                self.span = span = self.start_span(seq)
                self.bound.note(span.get_span_context(), None)
                self.batched = True
                if durability is Durability.OUTCOME:  # (its start writes nothing: its row comes at its end)
                    return self.claimed(self.bound.hold(writer.start(record)))
                return ClaimWith()
            token = self.bound.bind()
            try:
                self.span = span = self.start_span(seq)
            finally:
                BoundCall.unbind(token)
        except BaseException:
            self.release()
            raise
        try:
            claim = self.bound.claimed(span.get_span_context())
        except LedgerError as err:
            self.abandon(err)
        return self.claimed(claim)

    def claimed(self, claim: Claim | LedgerError) -> Next:
        """Go on from the claim: run the call, serve what its row holds, or wait for the worker that
        holds it."""
        span, record, bound = self.span, self.record, self.bound
        assert span is not None and record is not None and bound is not None
        if isinstance(claim, LedgerError):
            self.abandon(claim)
        bound.hold(claim)
        if isinstance(claim, Held):
            if record.status is CallStatus.AWAITING_APPROVAL:  # the request is recorded: stop for a person
                stops.await_approval(self)
            return self._go(claim.attempts)
        if claim.status in _DECISIONS:
            if claim.status == CallStatus.AWAITING_APPROVAL:
                stops.await_approval(self)
            if claim.status == CallStatus.REJECTED:
                stops.rejected(self)
            record.status = CallStatus.PENDING
            attempts = stops.take_approved(self)
            if attempts is None:  # another worker took it first: wait for its outcome
                return Poll(_POLL_S)
            bound.hold(Held(attempts))
            return self._go(attempts)
        if claim.status == CallStatus.SUCCEEDED:
            self.check_user_key(claim.arguments)
            resumed = self.run.mode is RunMode.RESUME
            span.set_attributes(spans.served_attributes(Origin.LIVE, resumed=resumed))
            event = semconv.EVENT_RESUMED if resumed else semconv.EVENT_DEDUPLICATED
            return Done(self.served(span, claim.output, event, "resumed" if resumed else "deduplicated"))
        gone = lapsed(claim, self.services.owner, time.time_ns())  # (the row is pending: whose is it?)
        if gone is None:  # held by a live worker: wait for its outcome (bounded)
            now = time.monotonic()
            if self.deadline is None:
                self.deadline = now + self.services.wait_timeout_s
            if now > self.deadline:
                self.abandon(self._in_progress())
            return Poll(_POLL_S)
        if not self.spec.idempotent:  # its owner is gone, or its lease ran out: the call is in doubt
            self.run.in_doubt.append(record.call_id)
            self.abandon(
                CallInDoubtError(
                    tool_name=self.spec.name,
                    run_id=self.run.run_id,
                    call_id=record.call_id,
                    owner=claim.owner,
                    why=gone.why,
                )
            )
        try:
            held = self.services.ledger.calls.take_over(record, claim.owner, gone.before_ns)
        except LedgerError as err:
            self.abandon(err)
        if held is None:  # another worker took it first, or its owner renewed the lease: wait on it
            return Poll(_POLL_S)
        bound.hold(held)
        return self._go(held.attempts)

    def poll(self) -> Next:
        """Claim again, after waiting on another worker's row (or on another run's global key)."""
        assert self.record is not None
        if self.scope == keyscope.WAITING:
            return self._scoped()
        try:
            claim: Claim | LedgerError = self.services.ledger.calls.claim(self.record)
        except LedgerError as err:
            claim = err
        return self.claimed(claim)

    def _go(self, attempts: int) -> Next:
        assert self.span is not None and self.record is not None
        self.record.attempts = attempts
        self.span.set_attribute(semconv.CALL_ATTEMPT, attempts)
        if self.compensates is not None:
            self.span.add_event(
                semconv.EVENT_COMPENSATION,
                {
                    semconv.FORWARD_CALL_ID: self.compensates.call_id,
                    semconv.FORWARD_TOOL: self.compensates.forward.name,
                },
            )
        return _GO if self.spec.global_key is None or self.phase is not Phase.FORWARD else self._scoped()

    def _scoped(self) -> Next:
        """Hold the call's global key (``keyscope``): run the body, serve another run's result, or wait."""
        step = keyscope.claim(self)
        if isinstance(step, keyscope.Served):
            return Done(step.value)
        return _GO if step == keyscope.HELD else Poll(_POLL_S)

    def _in_progress(self) -> CallInProgressError:
        return CallInProgressError(tool_name=self.spec.name, run_id=self.run.run_id, idempotency_key=self.key)

    def wait(self, wait: Wait) -> None:
        """Block until the identical call in flight ends (bounded by the runtime's wait timeout)."""
        wait.flight.wait(
            self.services.wait_timeout_s, tool_name=self.spec.name, run_id=self.run.run_id, key=self.key
        )

    async def wait_async(self, wait: Wait) -> None:
        await wait.flight.wait_async(
            self.services.wait_timeout_s, tool_name=self.spec.name, run_id=self.run.run_id, key=self.key
        )

    # --- usage and cost --------------------------------------------------------------------------------
    def add_usage(self, usage: TokenUsage, cost: Decimal | None) -> None:
        """Count model usage against this call (its row, its span); the run is told when it ends."""
        record = self.record
        assert record is not None
        record.input_tokens = (record.input_tokens or 0) + usage.input_tokens
        record.output_tokens = (record.output_tokens or 0) + usage.output_tokens
        record.model = usage.model or record.model
        self.services.instruments.usage(
            usage.model,
            usage.provider,
            usage.input_tokens,
            usage.output_tokens,
            cost,
            agent=self.run.name,
            tool=self.spec.name,
        )
        if cost is None:
            record.cost_unknown = True  # cost_usd stays the known part: a lower bound
        else:
            self.usage_cost += cost

    def _settle_cost(self, tool_cost: Decimal | None) -> Decimal | None:
        """Put the call's cost (usage plus the tool's own) on its row and span; return it."""
        record, span = self.record, self.span
        assert record is not None and span is not None
        priced = self.usage_cost != 0 or (record.input_tokens is not None and not record.cost_unknown)
        if tool_cost is not None or priced:  # (usage without a price is unknown, not free: no cost)
            record.cost_usd = self.usage_cost + (tool_cost or 0)
        if record.cost_usd is not None or record.model:  # (most calls have neither: skip the span call)
            span.set_attributes(
                spans.outcome_attributes(
                    cost_usd=record.cost_usd,
                    input_tokens=record.input_tokens,
                    output_tokens=record.output_tokens,
                    model=record.model,
                )
            )
        return record.cost_usd

    # --- running -------------------------------------------------------------------------------------
    def enter(self) -> tuple[Token[CallInfo | None], Token[Invocation | None], object]:
        """Make the call's span current and ``current_call()`` answer, for the tool body; undo with
        ``leave``. (Not a context manager: this runs on every live call, and ``with`` costs more.)"""
        record, span = self.record, self.span
        assert record is not None and span is not None
        info = CallInfo(
            run_id=record.run_id,
            call_id=record.call_id,
            tool_name=record.tool_name,
            phase=record.phase,
            idempotency_key=record.idempotency_key,
            attempt=record.attempts,
            seq=record.seq,
        )
        return info.enter(), _active.set(self), otel_context.attach(trace.set_span_in_context(span))

    @staticmethod
    def leave(tokens: tuple[Token[CallInfo | None], Token[Invocation | None], object]) -> None:
        call, active, span = tokens
        otel_context.detach(span)  # type: ignore[arg-type]
        _active.reset(active)
        CallInfo.leave(call)

    def succeeded(self, result: Any) -> Any:
        """Record the result (or fail the call if it cannot be recorded); return the live result."""
        cost = self.outcome(result)
        assert self.span is not None and self.bound is not None
        self.span.end()
        try:
            self.bound.finished()
        except LedgerError as err:
            return self.settled(result, cost, err)
        return self.settled(result, cost, None)

    def outcome(self, result: Any) -> Decimal | None:
        """Put the result, usage and cost on the row and span; the call's cost. A result that cannot be
        recorded fails the call (recorded) and raises."""
        record, spec = self.record, self.spec
        assert record is not None
        try:
            output = encode(
                result,
                root="result",
                error=OutputEncodingError,
                tool_name=spec.name,
                what=f"tool {spec.name!r} ran, but its result at",
                then=" The call is recorded as failed.",
            )
        except OutputEncodingError as err:
            self.failed(err)
            raise
        try:
            tool_cost = spec.cost_of(result)
            if spec.kind == "llm":
                usage = usage_from_result(result)
                if usage is None and self.model is not None:  # a model call that reported no usage:
                    self.add_usage(TokenUsage(self.model, spec.provider, 0, 0), None)  # cost unknown, not 0
                elif usage is not None:
                    self.add_usage(usage, self.services.prices.cost(usage))
                if self.model is not None and self.span is not None:
                    self.span.set_attributes(spans.response_attributes(response_facts(result)))
        except Exception as exc:
            self.failed(exc)
            raise
        record.status, record.output = CallStatus.SUCCEEDED, spec.content.for_ledger(output)
        if spec.content.capture and self.span is not None:
            self.span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, spec.content.span_text(output))
        self.output_json = output
        return self._settle_cost(tool_cost)

    def settled(self, result: Any, cost: Decimal | None, error: LedgerError | None) -> Any:
        """After the row is written (or not: ``error``): count the call and return its result."""
        record = self.record
        assert record is not None
        self.metric(CallStatus.SUCCEEDED, Origin.LIVE, record)
        error = error or keyscope.finished(self)
        if error is not None:
            self.release()
            raise error
        self.hold = None  # settled by the outcome's write
        self.release(self.output_json, succeeded=True)
        self.count(cost)
        return result

    def failed(self, exc: BaseException) -> None:
        """Record the failure; raise ``LedgerError`` (chained to ``exc``) if it could not be recorded."""
        record, bound = self.record, self.bound
        assert record is not None and bound is not None
        if record.status is not CallStatus.PENDING:
            return  # already recorded (a result that could not be encoded, then raised on)
        cost = self.failing(exc)
        error: LedgerError | None = None
        try:
            bound.finished()
        except LedgerError as err:
            error = err
        self.failure_settled(exc, cost, error)

    def failing(self, exc: BaseException) -> Decimal | None:
        """Put the failure on the row and span (ending it); the call's cost. Then the outcome is written,
        and ``failure_settled`` says how that went (``failed`` does all three)."""
        record, span = self.record, self.span
        assert record is not None and span is not None
        if record.durability is Durability.OUTCOME:  # the next try's number (no pending row counts them)
            self.run.table.failed_try(self.phase, self.key, record.attempts)
        record.status = CallStatus.FAILED
        record.error_type = spans.error_type_name(exc)
        message = scrub(str(exc), self.secrets) if self.secrets else str(exc)
        record.error_message = safe_text(message[:MAX_ERROR_MESSAGE])
        cost = self._settle_cost(None)
        spans.end_span(span, exc, self.secrets)
        return cost

    def failure_settled(self, exc: BaseException, cost: Decimal | None, error: LedgerError | None) -> None:
        """After the failure's row is written (or not: ``error``, raised chained to ``exc``)."""
        self.metric(CallStatus.FAILED, Origin.LIVE, self.record)
        if error is None:
            self.hold = None  # settled by the outcome's write
        self.release()
        keyscope.released(self)
        if error is not None:
            raise error from exc
        self.count(cost, raise_budget=False)
