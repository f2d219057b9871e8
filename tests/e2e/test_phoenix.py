"""End to end against a real OTLP backend: the demo exports to Arize Phoenix over HTTP and over gRPC,
and its spans are read back through Phoenix's REST API with the ids the ledger recorded."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PHOENIX = shutil.which("phoenix", path=str(Path(sys.executable).parent)) or shutil.which("phoenix")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    if PHOENIX is None:
        pytest.skip(
            "Arize Phoenix is not installed: pip install -e '.[dev]' installs it (the e2e OTLP backend)"
        )
    work = tmp_path_factory.mktemp("phoenix")
    ports = {"http": _free_port(), "grpc": _free_port()}
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(ports["http"]),
        "PHOENIX_GRPC_PORT": str(ports["grpc"]),
    }
    log = (work / "phoenix.log").open("w")
    proc = subprocess.Popen([PHOENIX, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports['http']}/healthz", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"phoenix serve did not start: {(work / 'phoenix.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield ports
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _spans(port: int, project: str, want: int) -> list[dict]:
    """All spans of a project, polling until ``want`` arrived (export is batched) or 30 s passed."""
    deadline = time.monotonic() + 30
    while True:
        spans: list[dict] = []
        cursor = None
        try:
            while True:
                query = f"?limit=1000{f'&cursor={cursor}' if cursor else ''}"
                page = _get(f"http://127.0.0.1:{port}/v1/projects/{project}/spans{query}")
                spans += page["data"]
                cursor = page.get("next_cursor")
                if not cursor:
                    break
        except OSError:
            spans = []
        if len(spans) >= want or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_demo_spans_reach_phoenix_with_the_ledgers_ids(
    phoenix: dict[str, int], protocol: str, tmp_path: Path
) -> None:
    project = f"agent-relay-{protocol.split('/')[0]}"
    endpoint = f"http://127.0.0.1:{phoenix['grpc' if protocol == 'grpc' else 'http']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_SERVICE_NAME": "agent-relay-demo",
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
        }
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "agent.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'agent_relay.db'}")
    with engine.connect() as conn:
        runs = conn.exec_driver_sql("SELECT run_id, name, trace_id, span_id FROM agent_runs").all()
        calls = conn.exec_driver_sql(
            "SELECT tool_name, phase, status, idempotency_key, trace_id, span_id FROM tool_calls"
        ).all()
    engine.dispose()
    spans = _spans(phoenix["http"], project, want=len(runs) + len(calls))
    by_id = {s["context"]["span_id"]: s for s in spans}

    for run_id, name, trace_id, span_id in runs:
        span = by_id[span_id]
        assert span["name"] == f"invoke_agent {name}" and span["context"]["trace_id"] == trace_id
        assert span["attributes"]["agent_relay.run.id"] == run_id and span["parent_id"] is None
    for tool_name, phase, status, key, trace_id, span_id in calls:
        span = by_id[span_id]
        if span["attributes"].get("agent_relay.llm.call"):  # a model call: an inference span, "chat <model>"
            assert span["attributes"]["agent_relay.llm.call"] == tool_name and span["name"].startswith(
                "chat "
            )
        else:
            assert span["name"] == f"execute_tool {tool_name}"
        assert span["context"]["trace_id"] == trace_id
        # the whole tree: every call hangs under the session span of its run, in its trace (a resumed
        # run's later calls are in the trace of the session that resumed it)
        parent = by_id[span["parent_id"]]
        assert parent["name"].startswith("invoke_agent ") and parent["context"]["trace_id"] == trace_id
        assert parent["attributes"]["agent_relay.run.id"] == span["attributes"]["agent_relay.run.id"]
        assert span["attributes"]["agent_relay.idempotency_key"] == key
        assert span["attributes"]["agent_relay.tool.phase"] == phase
        assert (span["status_code"] == "ERROR") == (status == "failed")
    costs = [s["attributes"]["agent_relay.cost.usd"] for s in spans if s["name"] == "execute_tool web_search"]
    assert costs and all(c == 0.0255 or c == 0.01 for c in costs)
    # served calls have spans of their own (no row): the deduplicated send and the replayed calls
    assert any(s["attributes"].get("agent_relay.deduplicated") for s in spans)
    assert any(s["attributes"].get("agent_relay.replayed") for s in spans)


SECRET_SCRIPT = """
from agent_relay import AgentRuntime, tool
runtime = AgentRuntime.from_env()

@tool(runtime, name="login")
def login(user: str, password: str, profile: dict) -> dict:
    return {"session": "sess-1", "echo": {"password": password}}

with runtime.agent_session(name="secret_flow") as session:
    login("ada", "s3cr3t-Passw0rd", {"api": {"token": "tok-SECRET-42"}, "plan": "pro"})
print(session.run_id)
runtime.shutdown()
"""


def test_redacted_secrets_reach_no_exported_span(phoenix: dict[str, int], tmp_path: Path) -> None:
    project = "agent-relay-redaction"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
    env.update(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{phoenix['http']}",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_RESOURCE_ATTRIBUTES": f"openinference.project.name={project}",
            "AGENT_RELAY_CAPTURE_CONTENT": "true",
            "AGENT_RELAY_REDACT": "password,api.token",
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", SECRET_SCRIPT],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    spans = _spans(phoenix["http"], project, want=2)
    received = json.dumps(spans)
    assert "s3cr3t-Passw0rd" not in received and "tok-SECRET-42" not in received
    (tool_span,) = [s for s in spans if s["name"] == "execute_tool login"]
    arguments = json.loads(tool_span["attributes"]["gen_ai.tool.call.arguments"])
    assert arguments == {
        "user": "ada",
        "password": "[REDACTED]",
        "profile": {"api": {"token": "[REDACTED]"}, "plan": "pro"},
    }
    result = json.loads(tool_span["attributes"]["gen_ai.tool.call.result"])
    assert result == {"session": "sess-1", "echo": {"password": "[REDACTED]"}}
    # the ledger keeps the values whole, as configured (ContentPolicy(redact_ledger=False), the default)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'agent_relay.db'}")
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT arguments FROM tool_calls").scalar_one()
    engine.dispose()
    assert json.loads(stored)["password"] == "s3cr3t-Passw0rd"
