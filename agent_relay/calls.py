"""The path one tool call takes inside a session, shared by the sync and async wrappers.

``Invocation`` binds and encodes the arguments and derives the key (errors here happen before anything
else), then ``begin()`` decides: serve the stored output (deduplicated), wait for an identical call in
flight, or run live — which starts the ``execute_tool`` span whose processor claims the pending row.
The wrapper runs the body inside ``running()`` and reports ``succeeded(result)`` or ``failed(exc)``,
which end the span (the processor completes the row) and raise any ledger failure. Only the awaiting
differs between the sync and async wrappers.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode, format_trace_id

from . import semconv
from .context import CallInfo, _current_call
from .encoding import _Unencodable, to_json_value
from .errors import CallInProgressError, ConfigurationError, OutputEncodingError
from .keys import FORWARD, bind_arguments, call_id, encode_arguments, idempotency_key
from .ledger.processor import binding, claim, complete
from .ledger.records import CLAIMED, FAILED, PENDING, SUCCEEDED, CallRecord
from .session import AgentSession, Flight, current_session, error_type_name

if TYPE_CHECKING:
    from .tooling import ToolSpec

SERVED: Final = "served"
WAIT: Final = "wait"
RUN: Final = "run"

_MAX_ERROR_MESSAGE = 4000


class Invocation:
    """One call of a tool inside a session. Not shared between threads."""

    __slots__ = (
        "args_json",
        "flight",
        "key",
        "manual",
        "phase",
        "record",
        "served",
        "session",
        "span",
        "spec",
    )

    def __init__(self, spec: ToolSpec, session: AgentSession, args: tuple[Any, ...], kwargs: dict[str, Any]):
        if session.runtime is not spec.runtime:
            raise ConfigurationError(
                f"tool {spec.name!r} is registered on another runtime than the one running session "
                f"{session.name!r}; register it with @tool(<that session's runtime>, ...)."
            )
        self.spec = spec
        self.session = session
        self.phase = FORWARD
        self.args_json = encode_arguments(spec.name, bind_arguments(spec.signature, args, kwargs))
        self.key = idempotency_key(spec.name, self.phase, self.args_json)
        self.flight: Flight | None = None
        self.record: CallRecord | None = None
        self.span: Span | None = None
        self.served: Any = None
        self.manual = False

    @staticmethod
    def create(spec: ToolSpec, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Invocation | None:
        """An invocation for the current session, or ``None`` outside any session (plain call)."""
        session = current_session()
        return None if session is None else Invocation(spec, session, args, kwargs)

    def _attributes(self, cid: str) -> dict[str, Any]:
        return {
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_EXECUTE_TOOL,
            semconv.GEN_AI_TOOL_NAME: self.spec.name,
            semconv.GEN_AI_TOOL_TYPE: semconv.TOOL_TYPE_FUNCTION,
            semconv.GEN_AI_TOOL_CALL_ID: cid,
            semconv.RUN_ID: self.session.run_id,
            semconv.IDEMPOTENCY_KEY: self.key,
            semconv.TOOL_PHASE: self.phase,
        }

    # --- deciding ------------------------------------------------------------------------------------
    def begin(self) -> str:
        """``SERVED`` (value in ``self.served``), ``WAIT`` (on ``self.flight``) or ``RUN``."""
        session, spec = self.session, self.spec
        fate, payload = session._reserve(self.phase, self.key)
        cid = call_id(session.run_id, self.phase, self.key)
        if fate == "serve":
            self.served = self._serve(cid, payload)
            return SERVED
        if fate == "wait":
            self.flight = payload
            return WAIT
        runtime = spec.runtime
        record = CallRecord(
            ledger=runtime.ledger,
            run_id=session.run_id,
            call_id=cid,
            seq=payload,
            tool_name=spec.name,
            phase=self.phase,
            idempotency_key=self.key,
            arguments=self.args_json,
            owner=runtime.owner,
        )
        attributes = self._attributes(cid)
        attributes[semconv.CALL_SEQ] = record.seq
        try:
            with binding(record):
                span = runtime._tracer.start_span(spec.span_name, attributes=attributes)
            if record.span_id is None:  # no processor saw the span (sampled out): claim it ourselves
                self.manual = True
                ctx = span.get_span_context()
                record.trace_id = format_trace_id(ctx.trace_id) if ctx.is_valid else None
                record.started_ns = time.time_ns()
                claim(runtime.ledger, record)
        except BaseException:
            session._release(self.phase, self.key)
            raise
        self.record, self.span = record, span
        if record.ledger_error is not None:
            self._end(record.ledger_error)
            session._release(self.phase, self.key)
            raise record.ledger_error
        if record.claim != CLAIMED:
            return self._existing(record, span)
        span.set_attribute(semconv.CALL_ATTEMPT, record.attempts)
        return RUN

    def _existing(self, record: CallRecord, span: Span) -> str:
        """A row already holds this key: serve it if it succeeded, else another worker has it."""
        if record.existing_status == SUCCEEDED:
            span.set_attribute(semconv.DEDUPLICATED, True)
            span.end()
            self.session._release(self.phase, self.key, record.existing_output)
            self.served = self.spec.decode(record.existing_output)
            return SERVED
        err = CallInProgressError(
            tool_name=self.spec.name, run_id=self.session.run_id, idempotency_key=self.key
        )
        self._end(err)
        self.session._release(self.phase, self.key)
        raise err

    def _serve(self, cid: str, output: Any) -> Any:
        attributes = self._attributes(cid)
        attributes[semconv.DEDUPLICATED] = True
        self.spec.runtime._tracer.start_span(self.spec.span_name, attributes=attributes).end()
        return self.spec.decode(output)

    def wait(self) -> None:
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

    # --- running -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Make the call's span current and ``current_call()`` answer, around the tool body."""
        record, span = self.record, self.span
        assert record is not None and span is not None
        token = _current_call.set(
            CallInfo(
                run_id=record.run_id,
                call_id=record.call_id,
                tool_name=record.tool_name,
                phase=record.phase,
                idempotency_key=record.idempotency_key,
                attempt=record.attempts,
                seq=record.seq,
            )
        )
        try:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                yield
        finally:
            _current_call.reset(token)

    def succeeded(self, result: Any) -> Any:
        """Record the result (or fail the call if it cannot be recorded); return the live result."""
        record = self.record
        assert record is not None
        try:
            output = to_json_value(result, root="result")
        except _Unencodable as exc:
            err = OutputEncodingError(
                f"tool {self.spec.name!r} ran, but its result at {exc.path!r} ({exc.type_name}) cannot be "
                f"recorded: {exc.reason}. The call is recorded as failed. Return JSON-compatible values "
                f"(or a dataclass / Pydantic model of them).",
                tool_name=self.spec.name,
                path=exc.path,
                type_name=exc.type_name,
            )
            self.failed(err)
            raise err from None
        try:
            cost = self.spec.cost_of(result)
        except Exception as exc:
            self.failed(exc)
            raise
        record.status, record.output, record.cost_usd = SUCCEEDED, output, cost
        if cost is not None:
            self.span.set_attribute(semconv.COST_USD, float(cost))  # type: ignore[union-attr]
        self._end(None)
        if record.ledger_error is not None:
            self.session._release(self.phase, self.key)
            raise record.ledger_error
        self.session._release(self.phase, self.key, output, cost)
        return result

    def failed(self, exc: BaseException) -> None:
        """Record the failure; raise ``LedgerError`` (chained to ``exc``) if it could not be recorded."""
        record = self.record
        assert record is not None
        if record.status == PENDING:
            record.status = FAILED
            record.error_type = error_type_name(exc)
            record.error_message = str(exc)[:_MAX_ERROR_MESSAGE]
            self._end(exc)
            self.session._release(self.phase, self.key)
        if record.ledger_error is not None:
            raise record.ledger_error from exc

    def _end(self, exc: BaseException | None) -> None:
        span, record = self.span, self.record
        assert span is not None and record is not None
        if exc is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.set_attribute(semconv.ERROR_TYPE, error_type_name(exc))
            span.record_exception(exc)
        span.end()
        if self.manual:
            record.ended_ns = time.time_ns()
            complete(self.spec.runtime.ledger, record)


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


def to_cost(value: Any, tool_name: str) -> Decimal:
    """A USD cost as an exact Decimal; negative, NaN or non-numeric is a ConfigurationError."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ConfigurationError(f"tool {tool_name!r}: cost must be a number of USD, not {value!r}.")
    cost = value if isinstance(value, Decimal) else Decimal(str(value))
    if not cost.is_finite() or cost < 0:
        raise ConfigurationError(f"tool {tool_name!r}: cost must be a finite number >= 0, not {value!r}.")
    return cost
