"""Tracer provider and span exporters, from arguments or from the standard OpenTelemetry variables.

Export is on when ``OTEL_TRACES_EXPORTER`` names an exporter, or when it is unset and an OTLP endpoint
is (``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); otherwise nothing is
exported and the ledger still records. Exporters run behind a ``BatchSpanProcessor``: a collector that is
down or slow costs a tool call nothing, and spans it cannot take are dropped, never retried on the
caller's thread. AgentRelay never sets the global tracer provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

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

DEFAULT_SERVICE_NAME: Final = "agent-relay"
PROTOCOLS: Final = ("http/protobuf", "grpc")
EXPORTERS: Final = ("otlp", "console", "none")


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


def _otlp_exporter(environ: Mapping[str, str]) -> SpanExporter:
    var = (
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL
        if environ.get(OTEL_EXPORTER_OTLP_TRACES_PROTOCOL)
        else OTEL_EXPORTER_OTLP_PROTOCOL
    )
    protocol = environ.get(var, "http/protobuf").strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ConfigurationError(f"{var}={protocol!r} is not supported; use one of {', '.join(PROTOCOLS)}.")


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
