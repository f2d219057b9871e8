"""``AgentSession``: one recorded run, from ``agent_session(...)`` entry to exit.

A session is carried by a context variable, so it is visible to every tool called in its ``with`` block,
in threads started with ``contextvars.copy_context()`` and in every asyncio task created inside it.
It is thread-safe: parallel tool calls in one session are recorded without loss, and two concurrent calls
with one idempotency key run the tool once (the second waits and is served).

Nesting: a session opened inside another records its own run, linked to the outer run by
``parent_run_id``, with its span a child of the outer session's span; tools called inside belong to the
inner run until it exits.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import threading
import time
import uuid
from contextvars import ContextVar
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, format_span_id, format_trace_id

from . import semconv
from .encoding import JSONValue, _Unencodable, to_json_value
from .errors import (
    CallInProgressError,
    EncodingError,
    LedgerError,
    OutputEncodingError,
    SessionStateError,
)

if TYPE_CHECKING:
    from .runtime import AgentRuntime

RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"

_current_session: ContextVar[AgentSession | None] = ContextVar("agent_relay_session", default=None)

_MISSING: Any = object()


def current_session() -> AgentSession | None:
    """The session open in this context, if any."""
    return _current_session.get()


def error_type_name(exc: BaseException) -> str:
    """``error.type`` as OpenTelemetry spells it: the qualified class name (no module for builtins)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class Flight:
    """A live call other callers with the same key wait for (threads block, tasks poll)."""

    __slots__ = ("done", "thread_id")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.thread_id = threading.get_ident()

    def wait(self, timeout: float, *, tool_name: str, run_id: str, key: str) -> None:
        if self.thread_id == threading.get_ident() or not self.done.wait(timeout):
            raise CallInProgressError(tool_name=tool_name, run_id=run_id, idempotency_key=key)

    async def wait_async(self, timeout: float, *, tool_name: str, run_id: str, key: str) -> None:
        deadline = time.monotonic() + timeout
        while not self.done.is_set():
            if time.monotonic() > deadline:
                raise CallInProgressError(tool_name=tool_name, run_id=run_id, idempotency_key=key)
            await asyncio.sleep(0.001)


class AgentSession:
    """One run of an agent, recorded as an ``agent_runs`` row and an ``invoke_agent`` span.

    Use it once, as ``with runtime.agent_session(...) as session`` or ``async with``. On exit the run is
    marked ``succeeded`` or, when the block raised, ``failed`` with the error's type and message; the
    exception propagates unchanged. ``set_output`` stores the run's result.
    """

    def __init__(self, runtime: AgentRuntime, name: str, input_payload: Any = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise SessionStateError(f"agent_session(name=...) must be a non-empty string, not {name!r}.")
        self._runtime = runtime
        self.name = name
        self._input = _encode(input_payload, "input_payload", what="agent_session", error=EncodingError)
        self.run_id = str(uuid.uuid4())
        self.parent_run_id: str | None = None
        self.trace_id: str | None = None
        self.status = "new"
        self._output: JSONValue = None
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._done: dict[tuple[str, str], JSONValue] = {}
        self._inflight: dict[tuple[str, str], Flight] = {}
        self._cost = Decimal(0)
        self._input_tokens = 0
        self._output_tokens = 0
        self._span: trace.Span | None = None
        self._tokens: tuple[Any, Any] | None = None

    # --- public --------------------------------------------------------------------------------------
    @property
    def runtime(self) -> AgentRuntime:
        return self._runtime

    @property
    def cost_usd(self) -> Decimal:
        """What the run's calls have cost so far, in USD."""
        return self._cost

    def set_output(self, value: Any) -> None:
        """Store the run's result (canonical JSON) on its ``agent_runs`` row when the session exits."""
        if self.status != RUNNING:
            raise SessionStateError(
                f"set_output() on session {self.name!r} (run {self.run_id}) which is {self.status}; call it "
                f"inside the session's with-block."
            )
        self._output = _encode(value, "output", what="set_output", error=OutputEncodingError)

    def __enter__(self) -> AgentSession:
        self._start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish(exc)

    async def __aenter__(self) -> AgentSession:
        self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._finish(exc)

    def __repr__(self) -> str:
        return f"<AgentSession {self.name!r} run_id={self.run_id} status={self.status}>"

    # --- lifecycle -----------------------------------------------------------------------------------
    def _start(self) -> None:
        if self.status != "new":
            raise SessionStateError(
                f"session {self.name!r} (run {self.run_id}) was already entered; open a new one with "
                f"runtime.agent_session(...)."
            )
        runtime = self._runtime
        runtime._check_open()
        parent = _current_session.get()
        if parent is not None:
            self.parent_run_id = parent.run_id
        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_INVOKE_AGENT,
            semconv.GEN_AI_AGENT_NAME: self.name,
            semconv.RUN_ID: self.run_id,
        }
        if self.parent_run_id:
            attributes[semconv.PARENT_RUN_ID] = self.parent_run_id
        span = runtime._tracer.start_span(
            f"{semconv.OPERATION_INVOKE_AGENT} {self.name}", attributes=attributes
        )
        ctx = span.get_span_context()
        self.trace_id = format_trace_id(ctx.trace_id) if ctx.is_valid else None
        try:
            runtime.ledger.insert_run(
                run_id=self.run_id,
                name=self.name,
                status=RUNNING,
                mode="live",
                parent_run_id=self.parent_run_id,
                input_payload=self._input,
                trace_id=self.trace_id,
                span_id=format_span_id(ctx.span_id) if ctx.is_valid else None,
                started_at=dt.datetime.now(dt.UTC),
            )
        except LedgerError as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.set_attribute(semconv.ERROR_TYPE, error_type_name(exc))
            span.end()
            self.status = FAILED
            raise
        self._span = span
        self._tokens = (
            otel_context.attach(trace.set_span_in_context(span)),
            _current_session.set(self),
        )
        self.status = RUNNING

    def _finish(self, exc: BaseException | None) -> None:
        assert self._span is not None and self._tokens is not None
        span, (otel_token, session_token) = self._span, self._tokens
        self.status = FAILED if exc is not None else SUCCEEDED
        ledger_error: LedgerError | None = None
        try:
            self._runtime.ledger.finish_run(
                self.run_id,
                status=self.status,
                output=self._output,
                error_type=error_type_name(exc) if exc is not None else None,
                error_message=str(exc) if exc is not None else None,
                cost_usd=self._cost,
                input_tokens=self._input_tokens,
                output_tokens=self._output_tokens,
                ended_at=dt.datetime.now(dt.UTC),
            )
        except LedgerError as err:
            ledger_error = err
        if exc is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.set_attribute(semconv.ERROR_TYPE, error_type_name(exc))
            span.record_exception(exc)
        if self._cost:
            span.set_attribute(semconv.COST_USD, float(self._cost))
        span.end()
        _current_session.reset(session_token)
        otel_context.detach(otel_token)
        if ledger_error is not None:
            if exc is None:
                raise ledger_error
            exc.add_note(f"agent-relay: the end of run {self.run_id} was not recorded: {ledger_error}")

    # --- used by tool calls --------------------------------------------------------------------------
    def _reserve(self, phase: str, key: str) -> tuple[str, Any]:
        """Decide a call's fate: ("serve", output json) | ("wait", Flight) | ("run", seq)."""
        with self._lock:
            if self.status != RUNNING:
                raise SessionStateError(
                    f"session {self.name!r} (run {self.run_id}) is {self.status}; tools can only be called "
                    f"inside its with-block."
                )
            done = self._done.get((phase, key), _MISSING)
            if done is not _MISSING:
                return "serve", done
            flight = self._inflight.get((phase, key))
            if flight is not None:
                return "wait", flight
            self._inflight[(phase, key)] = Flight()
            return "run", next(self._seq)

    def _release(
        self, phase: str, key: str, output: JSONValue = _MISSING, cost: Decimal | None = None
    ) -> None:
        """Settle a reserved call: succeeded (``output`` given) or not; wake its waiters."""
        with self._lock:
            if output is not _MISSING:
                self._done[(phase, key)] = output
            if cost:
                self._cost += cost
            flight = self._inflight.pop((phase, key), None)
        if flight is not None:
            flight.done.set()


def _encode(value: Any, root: str, *, what: str, error: type[EncodingError]) -> JSONValue:
    try:
        return to_json_value(value, root=root)
    except _Unencodable as exc:
        raise error(
            f"{what}: {exc.path!r} ({exc.type_name}) cannot be recorded: {exc.reason}. Pass JSON-compatible "
            f"values (str, numbers, bools, None, lists, str-keyed dicts, dataclasses, Pydantic models).",
            tool_name=None,
            path=exc.path,
            type_name=exc.type_name,
        ) from None
