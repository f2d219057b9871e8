"""``LedgerSpanProcessor``: the OpenTelemetry span processor that writes the ``tool_calls`` ledger.

The tool wrapper hands the processor the call's record by binding it to the next span it starts
(``bind(record)``). ``on_start`` claims the call (the pending row, committed) and ``on_end`` completes
it (output, status, cost, timings); both run synchronously on the thread that starts or ends the span, so
the row is durable before the wrapper returns. A processor must not raise into the SDK, so a failed write
is left on ``record.ledger_error`` and the wrapper raises it; the wrapper also checks that the claim
happened at all, and makes it itself through the store when no processor saw the span (a sampler dropped
it, or the provider is not recording). Spans that carry no bound record are offered to ``usage_sink``
(the runtime counts other GenAI instrumentations' token usage against the session's budget).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

from ..errors import LedgerError
from .records import CLAIMED, CallRecord
from .store import LedgerStore

_log = logging.getLogger(__name__)

_binding: ContextVar[CallRecord | None] = ContextVar("agent_relay_span_binding", default=None)


def bind(record: CallRecord) -> Token[CallRecord | None]:
    """Bind ``record`` to the next span started in this context, until ``unbind``."""
    return _binding.set(record)


def unbind(token: Token[CallRecord | None]) -> None:
    _binding.reset(token)


class LedgerSpanProcessor(SpanProcessor):
    """Persists tool-call spans as ledger rows. Thread-safe; never raises into the SDK."""

    def __init__(self, store: LedgerStore, usage_sink: Callable[[ReadableSpan], None] | None = None) -> None:
        self._store = store
        self._usage_sink = usage_sink
        self._open: dict[int, CallRecord] = {}
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        record = _binding.get()
        if record is None or record.ledger is not self._store or record.span_id is not None:
            return
        ctx = span.get_span_context()
        record.trace_id = format_trace_id(ctx.trace_id)
        record.span_id = format_span_id(ctx.span_id)
        record.started_ns = span.start_time or time.time_ns()
        with self._lock:
            self._open[ctx.span_id] = record
        claim(self._store, record)

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        with self._lock:
            record = self._open.pop(ctx.span_id, None)
        if record is not None:
            record.ended_ns = span.end_time or time.time_ns()
            complete(self._store, record)
        elif self._usage_sink is not None:
            try:
                self._usage_sink(span)
            except Exception:  # another instrumentation's span must never break the host
                _log.debug("agent-relay: counting a span's usage failed", exc_info=True)

    def shutdown(self) -> None:
        with self._lock:
            self._open.clear()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every write is committed synchronously; nothing is buffered


def claim(store: LedgerStore, record: CallRecord) -> None:
    """Claim the call, keeping any failure on the record. A call without a pending row (durability
    ``outcome``) is held by this worker at once; its row is written when it ends. A batched claim is
    left to the wrapper."""
    if record.batch_claim:
        return
    if not record.pending_row:
        if record.claim is None:  # (EXISTS when the wrapper found the call already recorded)
            record.claim = CLAIMED
        return
    try:
        store.claim(record)
    except LedgerError as exc:
        record.ledger_error = exc
    except Exception as exc:  # a bug or driver surprise must still reach the caller, never vanish
        record.ledger_error = _unexpected(store, record, exc)


def complete(store: LedgerStore, record: CallRecord) -> None:
    """Complete a claimed call, keeping any failure on the record."""
    if record.claim != CLAIMED or record.completed or record.batch_complete:
        return
    try:
        store.complete(record)
    except LedgerError as exc:
        record.ledger_error = exc
    except Exception as exc:
        record.ledger_error = _unexpected(store, record, exc)


def write_batch(store: LedgerStore, claims: list[CallRecord], completions: list[CallRecord]) -> None:
    """Claim and complete several calls in one transaction, keeping each failure on its record."""
    try:
        failed = store.write_batch(claims, completions)
    except LedgerError as exc:
        failed = {id(r): exc for r in claims + completions}
    except Exception as exc:
        failed = {id(r): _unexpected(store, r, exc) for r in claims + completions}
    for record in claims + completions:
        record.ledger_error = failed.get(id(record), record.ledger_error)


def _unexpected(store: LedgerStore, record: CallRecord, exc: Exception) -> LedgerError:
    err = LedgerError(
        f"unexpected error writing tool {record.tool_name!r} of run {record.run_id} to the ledger at "
        f"{store.database}: {type(exc).__name__}: {exc}",
        database=store.database,
        run_id=record.run_id,
        tool_name=record.tool_name,
    )
    err.__cause__ = exc
    return err
