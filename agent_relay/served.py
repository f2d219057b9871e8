"""``ServedCall``: the paths of a call served without running its body — from this run (deduplicated or
resumed: the one ending ``served``), or from the run a replay serves (``replayed``, ``diverge``)."""

from __future__ import annotations

import time
from typing import Any, NoReturn

from opentelemetry.trace import Span

from . import semconv, spans
from .callbase import MAX_ERROR_MESSAGE, CallBase
from .calltable import Diverge, Replay
from .ledger.processor import span_ids
from .ledger.records import CallRecord
from .replay import rebuild_error
from .states import CallStatus, Origin
from .usage import response_facts


class ServedCall(CallBase):
    """A call's served paths; every one records a span, and none runs the tool body."""

    __slots__ = ()

    def served(self, span: Span, output: Any, event: str, origin: str) -> Any:
        """The one ending of a call served from a recorded success: event, span, metric, release."""
        span.add_event(event)
        span.end()
        self.metric(CallStatus.SUCCEEDED, origin)
        if self.record is not None:  # it was reserved
            self.release(output, succeeded=True)
        return self.spec.decode(output)

    def served_record(self, span: Span, seq: int, origin: Origin, **outcome: Any) -> CallRecord:
        """The complete row of a call a replay served (or refused) without running a body."""
        trace_id, span_id = span_ids(span.get_span_context())
        now = time.time_ns()
        record = CallRecord(
            run_id=self.run.run_id,
            call_id=self.call_id,
            seq=seq,
            tool_name=self.spec.name,
            phase=self.phase,
            idempotency_key=self.key,
            arguments=self.spec.content.for_ledger(self.args_json),
            owner=self.services.owner,
            trace_id=trace_id,
            span_id=span_id,
            started_ns=now,
            ended_ns=now,
            origin=origin,
            **outcome,
        )
        if record.arguments is self.args_json:
            record.arguments_text = self.args_text
        return record

    def diverge(self, fate: Diverge) -> NoReturn:
        """A replayed run asked for a call its source does not have: record where, then raise."""
        run, spec = self.run, self.spec
        assert run.replay is not None
        error = run.replay.divergence(
            tool_name=spec.name,
            arguments=self.args_json,
            position=fate.position,
            run_id=run.run_id,
            redact=spec.content.redactor,
        )
        span = self.start_span()
        record = self.served_record(
            span,
            fate.seq,
            Origin.DIVERGED,
            status=CallStatus.FAILED,
            error_type=spans.error_type_name(error),
            error_message=str(error)[:MAX_ERROR_MESSAGE],
        )
        spans.end_span(span, error)
        self.metric(CallStatus.FAILED, Origin.DIVERGED)
        try:
            self.services.ledger.calls.insert_rows([record])
        except Exception as exc:
            error.add_note(f"agent-relay: the divergence could not be recorded: {exc}")
        raise error

    def replayed(self, fate: Replay) -> Any:
        """Serve a call from the replayed run: record it (origin ``replayed``), count its recorded cost,
        and return its output — or raise its recorded failure. No tool body runs."""
        run, spec, row = self.run, self.spec, fate.row
        span = self.start_span(fate.seq, spans.REPLAYED_ATTRIBUTES)
        span.add_event(semconv.EVENT_REPLAYED, {semconv.REPLAY_OF: run.replay_of or ""})
        status = CallStatus.SUCCEEDED if row.status == CallStatus.SUCCEEDED else CallStatus.FAILED
        record = self.record = self.served_record(
            span,
            fate.seq,
            Origin.REPLAYED,
            status=status,
            output=row.output,
            error_type=row.error_type,
            error_message=row.error_message,
            cost_usd=row.cost_usd,
            cost_unknown=bool(row.cost_unknown),
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            model=row.model,
        )
        if row.status == CallStatus.PENDING:
            record.error_type, record.error_message = "in-doubt", "the call's outcome was never recorded"
        if self.model is not None:  # an inference span: what the recorded response said
            span.set_attributes(spans.response_attributes(response_facts(row.output)))
        if record.cost_usd is not None or record.input_tokens is not None:
            span.set_attributes(
                spans.outcome_attributes(
                    cost_usd=record.cost_usd,
                    input_tokens=record.input_tokens,
                    output_tokens=record.output_tokens,
                )
            )
        try:
            run.served.add(record)
        except Exception as exc:
            self.span = span
            self.abandon(exc)
        self.metric(record.status, Origin.REPLAYED, record)
        if record.status == CallStatus.SUCCEEDED:
            span.end()
            self.release(row.output, succeeded=True)
            self.count(record.cost_usd)
            return spec.decode(row.output)
        error = rebuild_error(spec.name, record.error_type, record.error_message, spec.raises)
        spans.end_span(span, error)
        self.release()
        self.count(record.cost_usd, raise_budget=False)
        raise error
