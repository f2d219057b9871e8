"""Which exporters the standard OTEL_* variables select."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult

from agent_relay import AgentRuntime
from agent_relay.errors import ConfigurationError
from agent_relay.telemetry import StoppableExporter, metric_readers_from_env, span_exporters_from_env


def kinds(env: dict[str, str]) -> list[type]:
    exporters = span_exporters_from_env(env)
    try:
        return [type(e) for e in exporters]
    finally:
        for e in exporters:
            e.shutdown()


def test_nothing_is_exported_unless_asked() -> None:
    assert kinds({}) == []
    assert kinds({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}) == []


def test_an_endpoint_alone_turns_otlp_on_over_http() -> None:
    assert kinds({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) == [HttpExporter]
    assert kinds({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}) == [HttpExporter]


def test_protocol_selects_grpc_and_signal_specific_wins() -> None:
    assert kinds({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == [GrpcExporter]
    assert kinds(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        }
    ) == [HttpExporter]


def test_several_exporters_at_once() -> None:
    assert kinds({"OTEL_TRACES_EXPORTER": "console, otlp"}) == [ConsoleSpanExporter, HttpExporter]


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"OTEL_TRACES_EXPORTER": "jaeger"}, "'jaeger'.*otlp_proto_http"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ),
    ],
)
def test_unknown_settings_are_named(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        span_exporters_from_env(env)


def test_exporter_names_resolve_through_the_sdks_entry_points() -> None:
    # the names the SDK's own configuration accepts, registered by the exporter packages
    assert kinds({"OTEL_TRACES_EXPORTER": "otlp_proto_grpc"}) == [GrpcExporter]
    assert kinds({"OTEL_TRACES_EXPORTER": "console,otlp_proto_http"}) == [ConsoleSpanExporter, HttpExporter]
    readers = metric_readers_from_env({"OTEL_METRICS_EXPORTER": "otlp_proto_http"})
    assert [type(r._exporter).__module__ for r in readers] == [
        "opentelemetry.exporter.otlp.proto.http.metric_exporter"
    ]
    for reader in readers:
        reader.shutdown()


@pytest.mark.parametrize(
    ("env", "service", "extra"),
    [
        ({"OTEL_RESOURCE_ATTRIBUTES": "service.name=billing,deployment.environment=prod"}, "billing", "prod"),
        (
            {
                "OTEL_RESOURCE_ATTRIBUTES": "service.name=billing,deployment.environment=a%2Cb",
                "OTEL_SERVICE_NAME": "api",
            },
            "api",
            "a,b",
        ),
        ({}, "agent-relay", None),
    ],
)
def test_the_resource_is_resolved_as_the_sdk_does(
    env: dict[str, str], service: str, extra: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in {"AGENT_RELAY_DATABASE_URL": "sqlite://", **env}.items():
        monkeypatch.setenv(name, value)
    runtime = AgentRuntime.from_env()
    try:
        attributes = runtime.tracer_provider.resource.attributes
    finally:
        runtime.shutdown()
    assert attributes["service.name"] == service
    assert attributes.get("deployment.environment") == extra


class _ClosingChannelExporter(SpanExporter):
    """Fails every export as an OTLP gRPC exporter does when its shutdown closed the channel under it."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ValueError("Cannot invoke RPC on closed channel!")

    def shutdown(self) -> None:
        pass


def test_an_export_racing_shutdown_drops_its_spans_in_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """Before shutdown an exporter's error is the SDK's to log (with its traceback); an export that fails
    because shutdown closed its channel meanwhile is one warning line, and its spans are dropped."""
    exporter = StoppableExporter(_ClosingChannelExporter())
    with pytest.raises(ValueError, match="closed channel"):
        exporter.export([])
    exporter.shutdown()
    with caplog.at_level(logging.WARNING, logger="agent_relay.telemetry"):
        assert exporter.export([]) is SpanExportResult.FAILURE
    assert [r.getMessage() for r in caplog.records] == [
        "span export stopped by shutdown, 0 spans dropped: Cannot invoke RPC on closed channel!"
    ]
    assert all(r.exc_info is None for r in caplog.records)
