"""Tracer provider and span exporters, from arguments or from the standard OpenTelemetry variables.

Export is on when ``OTEL_TRACES_EXPORTER`` names an exporter, or when it is unset and an OTLP endpoint
is (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); otherwise nothing is
exported and the ledger still records. Exporters run behind a ``BatchSpanProcessor``: a collector that is
down or slow costs a tool call nothing, and spans it cannot take are dropped, never retried on the
caller's thread. AgentRelay never sets the global tracer provider.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from .errors import ConfigurationError

# The variables AgentRelay reads itself. The OTLP exporters read the rest of the OTEL_EXPORTER_OTLP_*
# family (headers, timeout, certificates) on their own, as the specification says.
DATABASE_URL_ENV: Final = "AGENT_RELAY_DATABASE_URL"
DEFAULT_DATABASE_URL: Final = "sqlite:///agent_relay.db"
OTEL_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
OTEL_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
OTEL_METRICS_EXPORTER: Final = "OTEL_METRICS_EXPORTER"
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
OTEL_EXPORTER_OTLP_METRICS_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"

DEFAULT_SERVICE_NAME: Final = "agent-relay"
PROTOCOLS: Final = ("http/protobuf", "grpc")
EXPORTERS: Final = ("otlp", "console", "none")
_METRIC_EXPORT_TIMEOUT_S: Final = 1.0


def span_exporters_from_env(environ: Mapping[str, str]) -> list[SpanExporter]:
    """The span exporters the OTEL_* variables in ``environ`` ask for (possibly none)."""
    endpoint = environ.get(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) or environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    raw = environ.get(OTEL_TRACES_EXPORTER, "").strip()
    names = (
        [n.strip().lower() for n in raw.split(",") if n.strip()] if raw else (["otlp"] if endpoint else [])
    )
    exporters: list[SpanExporter] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter(environ))
        else:
            raise ConfigurationError(
                f"{OTEL_TRACES_EXPORTER}={raw!r}: unknown exporter {name!r}; use a comma-separated list of "
                f"{', '.join(EXPORTERS)}."
            )
    return exporters


def _protocol(environ: Mapping[str, str], signal_var: str) -> tuple[str, str]:
    var = signal_var if environ.get(signal_var) else OTEL_EXPORTER_OTLP_PROTOCOL
    protocol = environ.get(var, "http/protobuf").strip().lower()
    if protocol == "http":
        protocol = "http/protobuf"
    if protocol not in PROTOCOLS:
        raise ConfigurationError(f"{var}={protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}.")
    return var, protocol


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    _, protocol = _protocol(environ, OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def metric_readers_from_env(environ: Mapping[str, str]) -> list[MetricReader]:
    """Metric readers the OTEL_* variables ask for: OTLP (periodic) when ``OTEL_METRICS_EXPORTER`` says
    ``otlp``, or when it is unset and an OTLP endpoint is; ``console`` prints; else none."""
    endpoint = environ.get(OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) or environ.get(OTEL_EXPORTER_OTLP_ENDPOINT)
    raw = environ.get(OTEL_METRICS_EXPORTER, "").strip()
    names = (
        [n.strip().lower() for n in raw.split(",") if n.strip()] if raw else (["otlp"] if endpoint else [])
    )
    readers: list[MetricReader] = []
    for name in names:
        if name == "none":
            continue
        if name == "console":
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        elif name == "otlp":
            _, protocol = _protocol(environ, OTEL_EXPORTER_OTLP_METRICS_PROTOCOL)
            if protocol == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[assignment]
                    OTLPMetricExporter,
                )
            # Metrics are aggregates sent periodically: one export lost to a slow collector costs little,
            # a long retry at exit costs the user's program, so the export timeout is short unless set.
            timeout = None if _timeout_set(environ) else _METRIC_EXPORT_TIMEOUT_S
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(timeout=timeout)))
        else:
            raise ConfigurationError(
                f"{OTEL_METRICS_EXPORTER}={raw!r}: unknown exporter {name!r}; use a comma-separated list of "
                f"{', '.join(EXPORTERS)}."
            )
    return readers


def _timeout_set(environ: Mapping[str, str]) -> bool:
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT") or environ.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    )


def build_meter_provider(resource: Resource, readers: Sequence[MetricReader]) -> MeterProvider:
    """A meter provider of the runtime's own (shut down by the runtime, bounded)."""
    return MeterProvider(resource=resource, metric_readers=list(readers), shutdown_on_exit=False)


class StoppableExporter(SpanExporter):
    """An exporter whose shutdown happens once and may come early: shutting it down while an export is
    retrying against an unreachable collector cuts the retries short (the OTLP exporters' backoff waits
    on their shutdown event), so a program's exit is not held by telemetry."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._stopped = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self._inner.export(spans)

    def shutdown(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


def build_tracer_provider(
    service_name: str | None, exporters: Sequence[SpanExporter], environ: Mapping[str, str]
) -> TracerProvider:
    """A provider of the runtime's own, exporting through batch processors."""
    name = service_name or environ.get(OTEL_SERVICE_NAME) or DEFAULT_SERVICE_NAME
    # The runtime shuts its provider down itself, bounded (the SDK's own atexit hook would wait for the
    # exporter's full retry schedule against a collector that is down).
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}), shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def stoppable(exporters: Sequence[SpanExporter]) -> list[StoppableExporter]:
    return [e if isinstance(e, StoppableExporter) else StoppableExporter(e) for e in exporters]
