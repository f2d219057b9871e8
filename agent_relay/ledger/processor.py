"""``LedgerSpanProcessor``: the OpenTelemetry span processor that persists tool calls in the ledger.

A thin adapter between a tool call's span and the ledger's ``CallWriter``. The wrapper binds the call
(``BoundCall``) to the next span it starts; ``on_start`` claims the call (``writer.start``: the pending row,
committed) and ``on_end`` finishes it (``writer.finish``: output, status, cost, timings, committed). Both
run synchronously on the thread that starts or ends the span, so the row is durable before the wrapper
goes on. A processor must not raise into the SDK, so the outcome of each write is kept on the binding and
the wrapper collects it (``BoundCall.claimed()`` / ``finished()`` raise its ``LedgerError``). When no
processor saw the span (a sampler dropped it, or the provider is not recording), the wrapper makes the same
writes through the same binding. Spans that carry no binding are offered to ``usage_sink`` (the runtime
counts other GenAI instrumentations' token usage against the session's budget).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import SpanContext, format_span_id, format_trace_id

from ..errors import LedgerError
from .records import CallRecord, Claim, Held
from .writer import CallWriter

_log = logging.getLogger(__name__)

_binding: ContextVar[BoundCall | None] = ContextVar("agent_relay_span_binding", default=None)


def span_ids(ctx: SpanContext) -> tuple[str | None, str | None]:
    """The (trace id, span id) a row stores for its span, as OTLP backends show them. A span nobody
    samples is never exported: the row then names no span a backend could show (its trace id stays)."""
    if not ctx.is_valid:
        return None, None
    return format_trace_id(ctx.trace_id), format_span_id(ctx.span_id) if ctx.trace_flags.sampled else None


class BoundCall:
    """A live call's ledger writes, tied to the span that records it. Each write happens once, made by
    whichever sees the span's moment first: the processor, or the wrapper (for a span no processor saw).
    The row's outcome is written only while this worker holds the call (its latest claim is ``Held``).
    """

    __slots__ = ("_claim", "_ended", "_error", "_started", "record", "writer")

    def __init__(self, writer: CallWriter, record: CallRecord) -> None:
        self.writer = writer
        self.record = record
        self._claim: Claim | None = None
        self._error: LedgerError | None = None
        self._started = False
        self._ended = False

    def bind(self) -> Token[BoundCall | None]:
        """Tie this call to the next span started in this context, until ``unbind``."""
        return _binding.set(self)

    @staticmethod
    def unbind(token: Token[BoundCall | None]) -> None:
        _binding.reset(token)

    def note(self, ctx: SpanContext, start_ns: int | None) -> None:
        """Where and when the call's span started."""
        record = self.record
        record.trace_id, record.span_id = span_ids(ctx)
        record.started_ns = start_ns or time.time_ns()

    def started(self, ctx: SpanContext, start_ns: int | None) -> None:
        """The span started: note it, and claim the call (a failure is kept for ``claimed``)."""
        if self._started:
            return
        self._started = True
        self.note(ctx, start_ns)
        try:
            self._claim = self.writer.start(self.record)
        except LedgerError as err:
            self._error = err

    def ended(self, end_ns: int | None) -> None:
        """The span ended: write the outcome of a call this worker holds (a failure is kept for
        ``finished``)."""
        if self._ended or self._error is not None or not isinstance(self._claim, Held):
            return
        self._ended = True
        self.record.ended_ns = end_ns or time.time_ns()
        try:
            self.writer.finish(self.record)
        except LedgerError as err:
            self._error = err

    def claimed(self, ctx: SpanContext) -> Claim:
        """The claim the span's start made (made here if no processor saw the span); raises its
        ``LedgerError``."""
        if not self._started:  # (no processor saw the span)
            self.started(ctx, None)
        if self._error is not None:
            raise self._error
        assert self._claim is not None
        return self._claim

    def hold(self, claim: Claim) -> Claim:
        """A claim made another way (with other calls' writes, again after waiting, a take-over): from
        now on, what the row says."""
        self._started = True
        self._claim = claim
        return claim

    def finished(self) -> None:
        """After the span ended: the outcome's write (made here if no processor saw the span); raises its
        ``LedgerError``."""
        if not self._ended:  # (no processor saw the span end, or the call is not held: ended decides)
            self.ended(None)
        if self._error is not None:
            raise self._error


class LedgerSpanProcessor(SpanProcessor):
    """Persists tool-call spans as ledger rows through ``writer``. Thread-safe; never raises into the
    SDK."""

    def __init__(
        self,
        writer: CallWriter,
        usage_sink: Callable[[ReadableSpan], None] | None = None,
        *,
        own_scope: str | None = None,
    ) -> None:
        self._writer = writer
        self._usage_sink = usage_sink  # given the spans of other instrumentations (not ``own_scope``'s)
        self._own_scope = own_scope
        self._open: dict[int, BoundCall] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        bound = _binding.get()
        if bound is None or bound.writer is not self._writer:  # (a provider may carry several runtimes)
            return
        ctx = span.get_span_context()
        with self._lock:
            self._open[ctx.span_id] = bound
        bound.started(ctx, span.start_time)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        bound = None
        if self._open:  # (served calls' spans were never bound: no lock for them)
            with self._lock:
                bound = self._open.pop(ctx.span_id, None)
        if bound is not None:
            bound.ended(span.end_time)
            return
        scope = span.instrumentation_scope
        if self._usage_sink is not None and (scope is None or scope.name != self._own_scope):
            try:
                self._usage_sink(span)
            except Exception:  # another instrumentation's span must never break the host
                _log.debug("agent-relay: counting a span's usage failed", exc_info=True)

    def shutdown(self) -> None:
        with self._lock:
            self._open.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every write is committed synchronously; nothing is buffered
