"""The path one tool call takes inside a session, shared by the sync and async wrappers.

``Invocation`` holds the call's encoded arguments and key (computed before anything else happens), then
``begin()`` decides: serve the stored output (deduplicated), wait for an identical call in flight, refuse
(budget spent), or run live — which starts the ``execute_tool`` span whose processor claims the pending
row. ``execute`` / ``execute_async`` run the body between ``enter()`` and ``leave()`` and report
``succeeded(result)`` or ``failed(exc)``, which end the span (the processor completes the row) and raise
any ledger failure. Only the awaiting differs between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar, Token
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, format_span_id, format_trace_id

from . import semconv
from .batching import batcher_for
from .context import CallInfo, Flight, _current_call, current_session, error_type_name
from .encoding import JSONValue, canonical_dumps, encode
from .errors import (
    AgentRelayError,
    CallInDoubtError,
    CallInProgressError,
    ConfigurationError,
    IdempotencyKeyReuseError,
    OutputEncodingError,
)
from .keys import COMPENSATION, FORWARD, call_id, encode_arguments, idempotency_key
from .ledger.processor import bind, claim, complete, unbind
from .ledger.records import CLAIMED, FAILED, OUTCOME, PENDING, SUCCEEDED, CallRecord
from .ledger.store import owner_is_gone
from .replay import argument_diff, rebuild_error
from .usage import TokenUsage, usage_from_result

if TYPE_CHECKING:
    from .batching import LoopBatcher
    from .compensation import Step
    from .session import AgentSession
    from .tooling import ToolSpec

SERVED: Final = "served"
WAIT: Final = "wait"
RUN: Final = "run"
CLAIM: Final = "claim"  # run, once the claim the caller batches with others is written (then ``claimed``)

_MAX_ERROR_MESSAGE = 4000
_POLL_S = 0.05  # how often a call waits on a row another live worker holds

_active: ContextVar[Invocation | None] = ContextVar("agent_relay_active_invocation", default=None)


def active_invocation() -> Invocation | None:
    """The live tool call whose body is running in this context, if any."""
    return _active.get()


class Invocation:
    """One call of a tool inside a session. Not shared between threads."""

    __slots__ = (
        "args_json",
        "args_text",
        "compensates",
        "flight",
        "key",
        "manual",
        "model",
        "phase",
        "record",
        "served",
        "session",
        "span",
        "span_name",
        "spec",
        "usage_cost",
        "user_key",
    )

    def __init__(
        self,
        spec: ToolSpec,
        session: AgentSession,
        phase: str,
        args_json: dict[str, JSONValue],
        *,
        user_key: str | None = None,
        occurrence: int | None = None,
    ):
        if session.runtime is not spec.runtime:
            raise ConfigurationError(
                f"tool {spec.name!r} is registered on another runtime than the one running session "
                f"{session.name!r}; register it with @tool(<that session's runtime>, ...)."
            )
        self.spec = spec
        self.session = session
        self.phase = phase
        self.args_json = args_json
        self.user_key = user_key
        self.compensates: Step | None = None
        model = args_json.get("model") if spec.kind == "llm" else None
        # a model call (an llm tool given a model) has an inference span, as the GenAI conventions say
        self.model = model if isinstance(model, str) else None
        self.span_name = f"{semconv.OPERATION_CHAT} {self.model}" if self.model else spec.span_name
        # the arguments' canonical text makes the key and, unless redacted, the ledger's arguments column
        self.args_text = canonical_dumps(args_json) if user_key is None else None
        self.key = idempotency_key(
            spec.name,
            phase,
            args_json,
            user_key=user_key,
            occurrence=occurrence,
            arguments_text=self.args_text,
        )
        self.flight: Flight | None = None
        self.record: CallRecord | None = None
        self.span: Span | None = None
        self.served: Any = None
        self.manual = False
        self.usage_cost = Decimal(0)

    @staticmethod
    def forward(spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Invocation | None:
        """A forward call in the current session, or ``None`` outside any session (a plain call)."""
        session = current_session()
        if session is None:
            return None
        bound = spec.bind(args, kwargs)
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
            occurrence = session._occurrence(
                idempotency_key(spec.name, FORWARD, args_json, user_key=user_key)
            )
        return Invocation(spec, session, FORWARD, args_json, user_key=user_key, occurrence=occurrence)

    @staticmethod
    def compensating(step: Step, session: AgentSession) -> Invocation:
        """The compensation of a recorded forward call: keyed by the compensating tool's name, phase
        ``compensation`` and the forward call's arguments."""
        call = Invocation(step.compensation, session, COMPENSATION, dict(step.arguments))
        call.compensates = step
        return call

    def _attributes(self, cid: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_EXECUTE_TOOL,
            semconv.GEN_AI_TOOL_NAME: self.spec.name,
            semconv.GEN_AI_TOOL_TYPE: semconv.TOOL_TYPE_FUNCTION,
            semconv.GEN_AI_TOOL_CALL_ID: cid,
            semconv.RUN_ID: self.session.run_id,
            semconv.IDEMPOTENCY_KEY: self.key,
            semconv.TOOL_PHASE: self.phase,
        }
        if self.model:  # an inference span, not a tool span
            for key in (semconv.GEN_AI_TOOL_NAME, semconv.GEN_AI_TOOL_TYPE, semconv.GEN_AI_TOOL_CALL_ID):
                del attributes[key]
            attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OPERATION_CHAT
            attributes[semconv.LLM_CALL] = self.spec.name
            attributes[semconv.CALL_ID] = cid
            if self.spec.provider:
                attributes[semconv.GEN_AI_PROVIDER_NAME] = self.spec.provider
            attributes[semconv.GEN_AI_REQUEST_MODEL] = self.model
        if self.spec.content.capture:  # opt-in, redacted and truncated before it reaches the span
            attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = self.spec.content.span_text(self.args_json)
        if self.compensates is not None:
            step = self.compensates
            attributes[semconv.FORWARD_CALL_ID] = step.call_id
            attributes[semconv.FORWARD_SEQ] = step.seq
            attributes[semconv.FORWARD_TOOL] = step.forward.name
        return attributes

    def _metric(self, status: str, origin: str, record: CallRecord | None = None) -> None:
        if not self.spec.runtime._instruments.recording:
            return
        duration = None
        if record is not None and record.started_ns and record.ended_ns and origin == "live":
            duration = (record.ended_ns - record.started_ns) / 1e9
        self.spec.runtime._instruments.call(
            self.spec.name,
            self.phase,
            status,
            origin,
            duration_s=duration,
            cost=record.cost_usd if record is not None else None,
            model=record.model if record else None,
        )

    # --- deciding ------------------------------------------------------------------------------------
    def begin(self, *, batch: bool = False) -> str:
        """``SERVED`` (value in ``self.served``), ``WAIT`` (on ``self.flight``) or ``RUN``; with ``batch``,
        ``CLAIM`` instead of ``RUN``: the caller writes the claim (with other calls') and asks ``claimed``."""
        session, spec = self.session, self.spec
        cid = call_id(session.run_id, self.phase, self.key)
        fate, payload = session._reserve(self.phase, self.key, spec.name)
        if fate == "refuse":
            span = spec.runtime._tracer.start_span(self.span_name, attributes=self._attributes(cid))
            _end_span(span, payload)
            self._metric("refused", "live")
            raise payload
        if fate == "diverge":
            self._diverged(cid, *payload)
        if fate == "serve":
            self._check_user_key(payload[0])
            self.served = self._serve(cid, payload[1])
            return SERVED
        if fate == "wait":
            self.flight = payload
            return WAIT
        seq, row = payload
        if fate == "replay":
            self.served = self._replayed(cid, seq, row)
            return SERVED
        runtime = spec.runtime
        record = CallRecord(
            ledger=runtime.ledger,
            run_id=session.run_id,
            call_id=cid,
            seq=seq,
            tool_name=spec.name,
            phase=self.phase,
            idempotency_key=self.key,
            arguments=spec.content.for_ledger(self.args_json),
            owner=runtime.owner,
        )
        if record.arguments is self.args_json:  # not redacted: store the text the key was made from
            record.arguments_text = self.args_text
        if spec.durability == OUTCOME and self.phase == FORWARD and session.mode != "resume":
            record.pending_row = False  # the row is written when the call ends, with its outcome
            record.attempts = session._tries.get((self.phase, self.key), 0) + 1
            if session._maybe_evicted(self.key):  # no pending row will meet an earlier row: look for it
                try:
                    runtime.ledger.find_succeeded(record)
                except BaseException:
                    session._release(self.phase, self.key)
                    raise
        record.batch_claim = batch and record.pending_row  # (without a pending row there is no claim)
        attributes = self._attributes(cid)
        attributes[semconv.CALL_SEQ] = record.seq
        try:
            token = bind(record)  # the processor claims the row as the span starts
            try:
                span = runtime._tracer.start_span(self.span_name, attributes=attributes)
            finally:
                unbind(token)
            if record.span_id is None:  # no processor saw the span (sampled out): claim it ourselves
                self.manual = True
                record.batch_claim = False
                ctx = span.get_span_context()
                record.trace_id = format_trace_id(ctx.trace_id) if ctx.is_valid else None
                record.started_ns = time.time_ns()
                claim(runtime.ledger, record)
        except BaseException:
            session._release(self.phase, self.key)
            raise
        self.record, self.span = record, span
        parent = getattr(span, "parent", None)
        if self.model is not None and parent is not None:
            session._model_call_parents.add(parent.span_id)  # another instrumentation's span around it
        if record.batch_claim and record.claim is None:
            return CLAIM
        return self.claimed()

    def claimed(self) -> str:
        """Go on once the claim is written: ``RUN``, or what the row already holding the key says."""
        record, span = self.record, self.span
        assert record is not None and span is not None
        record.batch_claim = False  # written: any further claim (waiting on another worker) is our own
        if record.ledger_error is not None:
            self._abandon(record.ledger_error)
        if record.claim != CLAIMED:
            return self._existing(record, span)
        span.set_attribute(semconv.CALL_ATTEMPT, record.attempts)
        if self.compensates is not None:
            span.add_event(
                semconv.EVENT_COMPENSATION,
                {
                    semconv.FORWARD_CALL_ID: self.compensates.call_id,
                    semconv.FORWARD_TOOL: self.compensates.forward.name,
                },
            )
        return RUN

    def _existing(self, record: CallRecord, span: Span) -> str:
        """A row already holds this key: serve it once it succeeded (waiting, bounded, while another live
        worker holds it), run it again once it failed, take it over if its owner is gone."""
        deadline = time.monotonic() + self.spec.runtime.wait_timeout_s
        while record.existing_status == PENDING and not owner_is_gone(record.existing_owner):
            if time.monotonic() > deadline:
                self._abandon(
                    CallInProgressError(
                        tool_name=self.spec.name, run_id=self.session.run_id, idempotency_key=self.key
                    )
                )
            time.sleep(_POLL_S)
            claim(self.spec.runtime.ledger, record)
            if record.ledger_error is not None:
                self._abandon(record.ledger_error)
            if record.claim == CLAIMED:  # it failed meanwhile: ours to run again
                span.set_attribute(semconv.CALL_ATTEMPT, record.attempts)
                return RUN
        if record.existing_status == SUCCEEDED:
            self._check_user_key(record.existing_arguments)
            resumed = self.session.mode == "resume"
            span.set_attribute(semconv.RESUMED if resumed else semconv.DEDUPLICATED, True)
            span.add_event(semconv.EVENT_RESUMED if resumed else semconv.EVENT_DEDUPLICATED)
            span.end()
            self._metric(SUCCEEDED, "resumed" if resumed else "deduplicated")
            self.session._release(self.phase, self.key, self._done_entry(record.existing_output))
            self.served = self.spec.decode(record.existing_output)
            return SERVED
        if not self.spec.idempotent:
            self._abandon(
                CallInDoubtError(
                    tool_name=self.spec.name,
                    run_id=self.session.run_id,
                    call_id=record.call_id,
                    owner=record.existing_owner,
                )
            )
        try:
            taken = self.spec.runtime.ledger.take_over(record)
        except Exception as exc:
            self._abandon(exc)
        if not taken:
            self._abandon(
                CallInProgressError(
                    tool_name=self.spec.name, run_id=self.session.run_id, idempotency_key=self.key
                )
            )
        span.set_attribute(semconv.CALL_ATTEMPT, record.attempts)
        return RUN

    def _done_entry(self, output: Any) -> tuple[Any, Any]:
        """What the session keeps to serve this call again: its output, and its arguments only when a
        caller-supplied key must be checked against them (the index grows with every call of a run)."""
        return (self.args_json if self.user_key is not None else None), output

    def _check_user_key(self, recorded_arguments: Any) -> None:
        """Stripe's rule: a caller-supplied key may only be reused with the same arguments."""
        if self.user_key is None or recorded_arguments == self.args_json:
            return
        err = IdempotencyKeyReuseError(
            tool_name=self.spec.name,
            user_key=self.user_key,
            run_id=self.session.run_id,
            difference=argument_diff(recorded_arguments or {}, self.args_json),
        )
        if self.span is not None and self.span.is_recording() and self.record is not None:
            self._abandon(err)
        raise err

    def _complete_record(self, cid: str, seq: int, span: Span, **outcome: Any) -> CallRecord:
        """The row of a call of a replay that ran no tool body: complete from the start."""
        spec, ctx = self.spec, span.get_span_context()
        record = CallRecord(
            ledger=spec.runtime.ledger,
            run_id=self.session.run_id,
            call_id=cid,
            seq=seq,
            tool_name=spec.name,
            phase=self.phase,
            idempotency_key=self.key,
            arguments=spec.content.for_ledger(self.args_json),
            owner=spec.runtime.owner,
            trace_id=format_trace_id(ctx.trace_id) if ctx.is_valid else None,
            span_id=format_span_id(ctx.span_id) if ctx.is_valid else None,
            started_ns=time.time_ns(),
            **outcome,
        )
        if record.arguments is self.args_json:
            record.arguments_text = self.args_text
        return record

    def _diverged(self, cid: str, seq: int, position: int) -> None:
        """A replayed run asked for a call its source does not have: record where, then raise."""
        session, spec = self.session, self.spec
        assert session._replay is not None
        error = session._replay.divergence(
            tool_name=spec.name,
            arguments=self.args_json,
            position=position,
            run_id=session.run_id,
            redact=spec.content.redactor,
        )
        span = spec.runtime._tracer.start_span(self.span_name, attributes=self._attributes(cid))
        record = self._complete_record(
            cid,
            seq,
            span,
            status=FAILED,
            error_type=error_type_name(error),
            error_message=str(error)[:_MAX_ERROR_MESSAGE],
        )
        _end_span(span, error)
        self._metric(FAILED, "diverged")
        record.origin = "diverged"
        try:
            session._record_replayed(record, flush=True)
        except Exception as exc:
            error.add_note(f"agent-relay: the divergence could not be recorded: {exc}")
        raise error

    def _replayed(self, cid: str, seq: int, row: Any) -> Any:
        """Serve a call from the replayed run: record it (origin ``replayed``), count its recorded cost,
        and return its output — or raise its recorded failure. No tool body runs."""
        session, spec = self.session, self.spec
        attributes = self._attributes(cid)
        attributes[semconv.CALL_SEQ] = seq
        attributes[semconv.REPLAYED] = True
        span = spec.runtime._tracer.start_span(self.span_name, attributes=attributes)
        span.add_event(semconv.EVENT_REPLAYED, {semconv.REPLAY_OF: session.replay_of or ""})
        record = self._complete_record(
            cid,
            seq,
            span,
            status=row.status if row.status in (SUCCEEDED, FAILED) else FAILED,
            output=row.output,
            error_type=row.error_type,
            error_message=row.error_message,
            cost_usd=row.cost_usd,
            cost_unknown=row.cost_unknown,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            model=row.model,
        )
        self.record, self.span = record, span
        if row.status == PENDING:
            record.error_type, record.error_message = "in-doubt", "the call's outcome was never recorded"
        if record.cost_usd is not None:
            span.set_attribute(semconv.COST_USD, float(record.cost_usd))
        if record.input_tokens is not None:
            span.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, record.input_tokens)
            span.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, record.output_tokens or 0)
        record.origin, record.ended_ns = "replayed", record.started_ns
        try:
            session._record_replayed(record)
        except Exception as exc:
            self._abandon(exc)
        self._metric(record.status, "replayed", record)
        if record.status == SUCCEEDED:
            span.end()
            session._release(self.phase, self.key, self._done_entry(row.output))
            session._after_call(record, record.cost_usd)
            return spec.decode(row.output)
        error = rebuild_error(spec.name, record.error_type, record.error_message, spec.raises)
        _end_span(span, error)
        session._release(self.phase, self.key)
        session._after_call(record, record.cost_usd, raise_budget=False)
        raise error

    def _abandon(self, exc: BaseException) -> None:
        """End the span with ``exc``, release the reservation and raise ``exc``; the tool does not run."""
        assert self.span is not None
        self.manual = False  # nothing of ours to complete
        _end_span(self.span, exc)
        self.session._release(self.phase, self.key)
        raise exc

    def wait(self) -> None:
        """Block until the identical call in flight ends (bounded by the runtime's wait timeout)."""
        assert self.flight is not None
        self.flight.wait(
            self.spec.runtime.wait_timeout_s,
            tool_name=self.spec.name,
            run_id=self.session.run_id,
            key=self.key,
        )

    async def wait_async(self) -> None:
        assert self.flight is not None
        await self.flight.wait_async(
            self.spec.runtime.wait_timeout_s,
            tool_name=self.spec.name,
            run_id=self.session.run_id,
            key=self.key,
        )

    def _serve(self, cid: str, output: Any) -> Any:
        attributes = self._attributes(cid)
        attributes[semconv.DEDUPLICATED] = True
        span = self.spec.runtime._tracer.start_span(self.span_name, attributes=attributes)
        span.add_event(semconv.EVENT_DEDUPLICATED)
        span.end()
        self._metric(SUCCEEDED, "deduplicated")
        return self.spec.decode(output)

    # --- usage and cost ------------------------------------------------------------------------------
    def add_usage(self, usage: TokenUsage, cost: Decimal | None) -> None:
        """Count model usage against this call (its row, its span); the session is told at the end."""
        record = self.record
        assert record is not None
        record.input_tokens = (record.input_tokens or 0) + usage.input_tokens
        record.output_tokens = (record.output_tokens or 0) + usage.output_tokens
        record.model = usage.model or record.model
        self.spec.runtime._instruments.usage(
            usage.model, usage.provider, usage.input_tokens, usage.output_tokens, cost, tool=self.spec.name
        )
        if cost is None:
            record.cost_unknown = True  # cost_usd stays the known part: a lower bound
        else:
            self.usage_cost += cost

    def _settle_cost(self, tool_cost: Decimal | None) -> Decimal | None:
        """Put the call's cost (usage plus the tool's own) on its row and span; return it."""
        record, span = self.record, self.span
        assert record is not None and span is not None
        if tool_cost is not None or record.input_tokens is not None:
            record.cost_usd = self.usage_cost + (tool_cost or 0)
            span.set_attribute(semconv.COST_USD, float(record.cost_usd))
        if record.input_tokens is not None:
            span.set_attribute(semconv.GEN_AI_USAGE_INPUT_TOKENS, record.input_tokens)
            span.set_attribute(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, record.output_tokens or 0)
        if record.model:
            span.set_attribute(semconv.GEN_AI_REQUEST_MODEL, record.model)
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
        return (
            _current_call.set(info),
            _active.set(self),
            otel_context.attach(trace.set_span_in_context(span)),
        )

    @staticmethod
    def leave(tokens: tuple[Token[CallInfo | None], Token[Invocation | None], object]) -> None:
        call, active, span = tokens
        otel_context.detach(span)  # type: ignore[arg-type]
        _active.reset(active)
        _current_call.reset(call)

    def succeeded(self, result: Any) -> Any:
        """Record the result (or fail the call if it cannot be recorded); return the live result."""
        output, cost = self._outcome(result)
        self._end(None)
        return self._settled(result, output, cost)

    async def succeeded_batched(self, result: Any, batcher: LoopBatcher) -> Any:
        """``succeeded``, its row written by ``batcher`` with other calls' (the span ends first)."""
        output, cost = self._outcome(result)
        record = self.record
        assert record is not None
        record.batch_complete = not self.manual
        self._end(None)
        if record.batch_complete:
            try:
                await batcher.complete(record)
            except asyncio.CancelledError as cancelled:  # the row was written before it went on
                try:
                    self._settled(result, output, cost)
                except AgentRelayError as err:  # a ledger or budget failure still reaches the caller
                    cancelled.add_note(f"agent-relay: {type(err).__name__}: {err}")
                raise
        return self._settled(result, output, cost)

    def _outcome(self, result: Any) -> tuple[JSONValue, Decimal | None]:
        """Put the result, usage and cost on the row and span: (the encoded result, the call's cost).
        A result that cannot be recorded fails the call (recorded) and raises."""
        record = self.record
        assert record is not None
        try:
            output = encode(
                result,
                root="result",
                error=OutputEncodingError,
                tool_name=self.spec.name,
                what=f"tool {self.spec.name!r} ran, but its result at",
                then=" The call is recorded as failed.",
            )
        except OutputEncodingError as err:
            self.failed(err)
            raise
        try:
            tool_cost = self.spec.cost_of(result)
            if self.spec.kind == "llm":
                usage = usage_from_result(result)
                if usage is None and self.model is not None:  # a model call that reported no usage:
                    usage = TokenUsage(self.model, self.spec.provider, 0, 0)  # its cost is unknown, not 0
                    self.add_usage(usage, None)
                elif usage is not None:
                    self.add_usage(usage, self.spec.runtime.prices.cost(usage))
        except Exception as exc:
            self.failed(exc)
            raise
        record.status, record.output = SUCCEEDED, self.spec.content.for_ledger(output)
        if self.spec.content.capture and self.span is not None:
            self.span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, self.spec.content.span_text(output))
        return output, self._settle_cost(tool_cost)

    def _settled(self, result: Any, output: JSONValue, cost: Decimal | None) -> Any:
        """After the row is written: raise its failure, or count the call and return its result."""
        record = self.record
        assert record is not None
        self._metric(SUCCEEDED, "live", record)
        if record.ledger_error is not None:
            self.session._release(self.phase, self.key)
            raise record.ledger_error
        self.session._release(self.phase, self.key, self._done_entry(output))
        self.session._after_call(record, cost)
        return result

    def failed(self, exc: BaseException) -> None:
        """Record the failure; raise ``LedgerError`` (chained to ``exc``) if it could not be recorded."""
        record = self.record
        assert record is not None
        if record.status == PENDING:
            if not record.pending_row:  # the next try's attempt number (no pending row counts them)
                self.session._tries[(self.phase, self.key)] = record.attempts
            record.status = FAILED
            record.error_type = error_type_name(exc)
            record.error_message = str(exc)[:_MAX_ERROR_MESSAGE]
            cost = self._settle_cost(None)
            self._end(exc)
            self._metric(FAILED, "live", record)
            self.session._release(self.phase, self.key)
            if record.ledger_error is None:
                self.session._after_call(record, cost, raise_budget=False)
        if record.ledger_error is not None:
            raise record.ledger_error from exc

    def _end(self, exc: BaseException | None) -> None:
        span, record = self.span, self.record
        assert span is not None and record is not None
        _end_span(span, exc)
        if self.manual:
            record.ended_ns = time.time_ns()
            complete(self.spec.runtime.ledger, record)


def _end_span(span: Span, exc: BaseException | None) -> None:
    if exc is not None:
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        span.set_attribute(semconv.ERROR_TYPE, error_type_name(exc))
        span.record_exception(exc)
    span.end()


def execute(
    call: Invocation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    live: Callable[[Any], Any] | None = None,
    served: Callable[[Any], Any] | None = None,
) -> Any:
    """Run ``call`` to its end: served, or ``func`` run live and recorded.

    ``live`` takes over a live result instead of recording it at once (a stream records itself when it
    has been read to its end); ``served`` shapes a served value (a recorded stream, replayed).
    """
    while (fate := call.begin()) == WAIT:
        call.wait()
    if fate == SERVED:
        return served(call.served) if served else call.served
    tokens = call.enter()
    try:
        result = func(*args, **kwargs)
    except BaseException as exc:
        Invocation.leave(tokens)
        call.failed(exc)
        raise
    Invocation.leave(tokens)
    return live(result) if live else call.succeeded(result)


async def execute_async(
    call: Invocation,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    live: Callable[[Any], Any] | None = None,
    served: Callable[[Any], Any] | None = None,
) -> Any:
    """``execute`` for coroutine functions: the span lasts until the awaited body ends. While other calls
    are in flight on the loop, the claim and the outcome are written together with theirs (see
    ``agent_relay.batching``)."""
    batcher = batcher_for(call.spec.runtime.ledger)
    if batcher is None:
        return await _execute_async(call, func, args, kwargs, live, served, None)
    batcher.in_flight += 1
    try:
        return await _execute_async(call, func, args, kwargs, live, served, batcher)
    finally:
        batcher.in_flight -= 1


async def _execute_async(
    call: Invocation,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    live: Callable[[Any], Any] | None,
    served: Callable[[Any], Any] | None,
    batcher: LoopBatcher | None,
) -> Any:
    while (fate := call.begin(batch=batcher is not None and batcher.shared)) == WAIT:
        await call.wait_async()
    if fate == CLAIM:
        assert batcher is not None and call.record is not None
        try:
            await batcher.claim(call.record)
        except BaseException as exc:  # cancelled: its claim was written before the cancellation went on
            call.record.batch_claim = False
            call.failed(exc)  # so the row says it failed (the body never ran), and the key is free
            raise
        fate = call.claimed()
    if fate == SERVED:
        return served(call.served) if served else call.served
    tokens = call.enter()
    try:
        result = await func(*args, **kwargs)
    except BaseException as exc:
        Invocation.leave(tokens)
        call.failed(exc)
        raise
    Invocation.leave(tokens)
    if live:
        return live(result)
    if batcher is not None and batcher.shared:
        return await call.succeeded_batched(result, batcher)
    return call.succeeded(result)


@contextlib.contextmanager
def plain_call(spec: ToolSpec) -> Iterator[None]:
    """A tool called outside any session: a span, no ledger row, the function's own behaviour."""
    attributes = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_EXECUTE_TOOL,
        semconv.GEN_AI_TOOL_NAME: spec.name,
        semconv.GEN_AI_TOOL_TYPE: semconv.TOOL_TYPE_FUNCTION,
    }
    with spec.runtime._tracer.start_as_current_span(
        spec.span_name, attributes=attributes, record_exception=True, set_status_on_exception=True
    ) as span:
        try:
            yield
        except BaseException as exc:
            span.set_attribute(semconv.ERROR_TYPE, error_type_name(exc))
            raise
