"""``agent-relay export --format otlp``: a recorded run re-emitted as the spans it was recorded with.

The spans keep their trace and span ids and their timing, so a run recorded while no collector was up
lands in Jaeger or Tempo as if it had been exported live (``otlp`` as set by the OTEL_* variables).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from .. import semconv, spans
from ..errors import ConfigurationError
from ..keyring import span_key_chars
from ..states import CallStatus, Origin, RunStatus
from ..telemetry import service_resource, span_exporters_from_env
from ..usage import response_facts

_BATCH = 512


def _ns(value: dt.datetime | None) -> int | None:
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)  # the ledger stores UTC
    return int(value.timestamp() * 1e9)


def _context(trace_id: str, span_id: str) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=TraceFlags(1))


def spans_of(
    run: Mapping[str, Any],
    calls: Sequence[Mapping[str, Any]],
    resource: Resource,
    key_chars: int | None = None,
) -> Iterator[ReadableSpan]:
    """The run's session span, then one span per recorded call that has ids, built as they were live
    (``agent_relay.spans``); with as much of each key as ``key_chars`` says (default: as
    ``AGENT_RELAY_SPAN_KEY`` says, as a runtime does)."""
    if not run["trace_id"] or not run["span_id"]:
        return
    if key_chars is None:
        key_chars = span_key_chars(None)
    root = _context(run["trace_id"], run["span_id"])
    failed = run["status"] not in (RunStatus.SUCCEEDED, RunStatus.RUNNING)
    attributes = (
        spans.session_attributes(
            run["name"],
            run["run_id"],
            parent_run_id=run.get("parent_run_id"),
            budget_limit=run.get("budget_limit_usd"),
            replay_of=run.get("replay_of"),
        )
        | {semconv.RUN_STATUS: run["status"]}
        | spans.outcome_attributes(cost_usd=run["cost_usd"] or 0)
    )
    if run["error_type"]:
        attributes[semconv.ERROR_TYPE] = run["error_type"]
    yield ReadableSpan(
        name=spans.session_span_name(run["name"]),
        context=root,
        parent=None,
        resource=resource,
        attributes=attributes,
        kind=SpanKind.INTERNAL,
        start_time=_ns(run["started_at"]),
        end_time=_ns(run["ended_at"] or run["started_at"]),
        status=spans.error_status(run["error_type"], run["error_message"])
        if failed
        else Status(StatusCode.UNSET),
    )
    for call in calls:
        if not call["trace_id"] or not call["span_id"]:
            continue
        arguments = call["arguments"] if isinstance(call["arguments"], dict) else {}
        requested = arguments.get("model")
        # a model call (its request names the model it used) gets an inference span, as it did live
        model = requested if isinstance(requested, str) and call["model"] else None
        attrs = spans.call_attributes(
            call["tool_name"],
            call["phase"],
            call["idempotency_key"][:key_chars],
            call["run_id"],
            call["call_id"],
            model=model,
            seq=call["seq"],
        )
        attrs[semconv.CALL_ATTEMPT] = call["attempts"]
        if model:
            attrs |= spans.response_attributes(response_facts(call["output"]))
        if call["origin"] == Origin.REPLAYED:
            attrs |= spans.served_attributes(Origin.REPLAYED)
        elif call["origin"] == Origin.DEDUPLICATED:  # served from another run's call of a global key
            attrs |= spans.DEDUPLICATED_ATTRIBUTES
        attrs |= spans.outcome_attributes(
            cost_usd=call["cost_usd"],
            input_tokens=call["input_tokens"],
            output_tokens=call["output_tokens"],
            model=call["model"],
        )
        if call["error_type"]:
            attrs[semconv.ERROR_TYPE] = call["error_type"]
        yield ReadableSpan(
            name=spans.call_span_name(call["tool_name"], model),
            context=_context(call["trace_id"], call["span_id"]),
            parent=root,
            resource=resource,
            attributes=attrs,
            kind=spans.call_span_kind(model),
            start_time=_ns(call["started_at"]),
            end_time=_ns(call["ended_at"] or call["started_at"]),
            status=spans.error_status(call["error_type"], call["error_message"])
            if call["status"] == CallStatus.FAILED
            else Status(StatusCode.UNSET),
        )


def export_otlp(
    run: Mapping[str, Any],
    calls: Sequence[Mapping[str, Any]],
    environ: Mapping[str, str],
    progress: Callable[[Iterable[Any], int, str], Iterable[Any]],
) -> int:
    """Send the run's spans with the OTLP exporter the environment configures; the number sent."""
    env = dict(environ)
    env.setdefault("OTEL_TRACES_EXPORTER", "otlp")
    exporters = [e for e in span_exporters_from_env(env) if type(e).__name__ == "OTLPSpanExporter"]
    if not exporters:
        raise ConfigurationError(
            "export --format otlp needs OTLP: set OTEL_EXPORTER_OTLP_ENDPOINT "
            "(and OTEL_TRACES_EXPORTER=otlp if you set it to something else)."
        )
    exporter = exporters[0]
    resource = service_resource(None, environ)
    spans = list(spans_of(run, calls, resource))
    sent, batch = 0, []
    try:
        for span in progress(spans, len(spans), "exporting spans"):
            batch.append(span)
            if len(batch) == _BATCH:
                sent += _send(exporter, batch)
                batch = []
        if batch:
            sent += _send(exporter, batch)
    finally:
        exporter.shutdown()
    return sent


def _send(exporter: Any, batch: list[ReadableSpan]) -> int:
    if exporter.export(batch) is not SpanExportResult.SUCCESS:
        raise ConfigurationError(
            f"the OTLP endpoint refused or did not answer the export ({json.dumps(len(batch))} spans); check "
            f"OTEL_EXPORTER_OTLP_ENDPOINT and that the collector is up."
        )
    return len(batch)
