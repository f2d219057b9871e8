"""Tracer provider and span exporters, from arguments or from the standard OpenTelemetry variables.

Export is on when ``OTEL_TRACES_EXPORTER`` names an exporter, or when it is unset and an OTLP endpoint
is (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); otherwise nothing is
exported and the ledger still records. Exporters run behind a ``BatchSpanProcessor``: a collector that is
down or slow costs a tool call nothing, and spans it cannot take are dropped, never retried on the
caller's thread. AgentRelay never sets the global tracer provider.
"""

from __future__ import annotations

import importlib.metadata
import logging
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry import trace
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

_log = logging.getLogger(__name__)

# The variables AgentRelay reads itself. The OTLP exporters read the rest of the OTEL_EXPORTER_OTLP_*
# family (headers, timeout, certificates) on their own, as the specification says.
DATABASE_URL_ENV: Final = "AGENT_RELAY_DATABASE_URL"
DEFAULT_DATABASE_URL: Final = "sqlite:///agent_relay.db"
OTEL_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES: Final = "OTEL_RESOURCE_ATTRIBUTES"
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
            exporters.append(_installed_exporter(TRACES_EXPORTER_GROUP, OTEL_TRACES_EXPORTER, raw, name)())
    return exporters


TRACES_EXPORTER_GROUP: Final = "opentelemetry_traces_exporter"
METRICS_EXPORTER_GROUP: Final = "opentelemetry_metrics_exporter"


def _installed_exporter(group: str, variable: str, raw: str, name: str) -> Any:
    """An exporter class another package registers under ``name`` (the entry points the SDK's own
    configuration resolves ``OTEL_*_EXPORTER`` names through: ``otlp_proto_http``, ``zipkin_json``...)."""
    found = importlib.metadata.entry_points(group=group, name=name)
    for entry in found:
        return entry.load()
    known = sorted({*EXPORTERS, *(e.name for e in importlib.metadata.entry_points(group=group))})
    raise ConfigurationError(
        f"{variable}={raw!r}: unknown exporter {name!r}; use a comma-separated list of {', '.join(known)} "
        f"(names other packages register as {group!r} entry points, once installed)."
    )


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
            exporter = _installed_exporter(METRICS_EXPORTER_GROUP, OTEL_METRICS_EXPORTER, raw, name)()
            readers.append(PeriodicExportingMetricReader(exporter))
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
        try:
            return self._inner.export(spans)
        except Exception as exc:
            if not self._stopped:
                raise  # (the SDK's batch processor logs it)
            # an export racing the shutdown that closed its channel (gRPC: "Cannot invoke RPC on closed
            # channel"): the spans are dropped as any export after shutdown is, in one line, no traceback
            _log.warning("span export stopped by shutdown, %d spans dropped: %s", len(spans), exc)
            return SpanExportResult.FAILURE

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
    # The runtime shuts its provider down itself, bounded (the SDK's own atexit hook would wait for the
    # exporter's full retry schedule against a collector that is down).
    provider = TracerProvider(resource=service_resource(service_name, environ), shutdown_on_exit=False)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def service_resource(service_name: str | None, environ: Mapping[str, str]) -> Resource:
    """The resource spans are exported under: ``OTEL_RESOURCE_ATTRIBUTES``, and the service named as the
    SDK resolves it — ``service_name``, then ``OTEL_SERVICE_NAME``, then ``service.name`` in
    ``OTEL_RESOURCE_ATTRIBUTES``, then ``agent-relay``."""
    attributes = resource_attributes(environ)
    name = service_name or environ.get(OTEL_SERVICE_NAME) or attributes.get(SERVICE_NAME)
    return Resource.create({**attributes, SERVICE_NAME: name or DEFAULT_SERVICE_NAME})


def resource_attributes(environ: Mapping[str, str]) -> dict[str, str]:
    """``OTEL_RESOURCE_ATTRIBUTES`` (``key=value,key2=value2``, values percent-encoded) as a dict."""
    attributes: dict[str, str] = {}
    for item in environ.get(OTEL_RESOURCE_ATTRIBUTES, "").split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip():
            attributes[key.strip()] = urllib.parse.unquote(value.strip())
    return attributes


def sdk_provider(provider: object) -> TracerProvider | None:
    """``provider`` as an SDK ``TracerProvider``: itself, or the one a proxy wraps (``.provider``, as
    Logfire's ``ProxyTracerProvider`` exposes it); ``None`` when it has none."""
    for candidate in (provider, getattr(provider, "provider", None)):
        if isinstance(candidate, TracerProvider):
            return candidate
    return None


def global_sdk_provider() -> TracerProvider | None:
    """The SDK provider the application set globally (``trace.set_tracer_provider``), if it set one:
    the runtime records on it, so its spans join the application's traces and exporters."""
    return sdk_provider(trace.get_tracer_provider())


def stoppable(exporters: Sequence[SpanExporter]) -> list[StoppableExporter]:
    return [e if isinstance(e, StoppableExporter) else StoppableExporter(e) for e in exporters]
