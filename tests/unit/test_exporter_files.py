"""The collector and compose files, checked by parsing since Docker does not run on CI machines."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_every_pipeline_names_defined_components() -> None:
    config = load("otel-collector.yaml")
    pipelines = config["service"]["pipelines"]
    assert "traces" in pipelines
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"pipeline {name} uses undefined {kind[:-1]} {component}"


def test_collector_listens_on_the_otlp_default_ports_the_compose_file_publishes() -> None:
    protocols = load("otel-collector.yaml")["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    compose = load("exporters/docker-compose.yaml")
    published = {p.split(":")[0] for p in compose["services"]["otel-collector"]["ports"]}
    assert {"4317", "4318"} <= published


def test_collector_exports_to_services_the_compose_file_starts() -> None:
    config = load("otel-collector.yaml")
    services = load("exporters/docker-compose.yaml")["services"]
    for name, exporter in config["exporters"].items():
        endpoint = exporter.get("endpoint") if isinstance(exporter, dict) else None
        if endpoint:
            host = endpoint.split("://")[-1].split(":")[0]
            assert host in services, f"exporter {name} points at {host}, which compose does not start"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / "exporters" / source).resolve().exists(), source
