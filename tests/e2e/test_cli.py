"""The ``agent-relay`` command, run as a user runs it, against ledgers the demo produced."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.e2e.test_saga_recovery import CRASHING_RUN, TOOLS

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

DIVERGENT_REPLAY = textwrap.dedent(
    """
    import runpy, sys
    demo = runpy.run_path(sys.argv[1], run_name="demo")  # the demo's tools and agent, without main()
    runtime = demo["runtime"]
    try:
        with runtime.agent_session(name="email_flow", replay=True, replay_run_id=sys.argv[2]) as session:
            demo["agent_flow"]({"to": "user@example.com", "subject": "Hello!", "body": "Hi"})
    except Exception as exc:
        print(type(exc).__name__, file=sys.stderr)
    print(session.run_id)
    """
)


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_relay.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**_clean_env(), **(env or {})},
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A ledger made by running the demo, plus a divergent replay of its email run."""
    tmp = tmp_path_factory.mktemp("cli")
    subprocess.run(
        [sys.executable, str(ROOT / "demo" / "agent.py")],
        cwd=tmp,
        env=_clean_env(),
        check=True,
        capture_output=True,
        timeout=120,
    )
    runs = json.loads(cli("runs", "--json", cwd=tmp).stdout)
    by = {(r["name"], r["mode"]): r["run_id"] for r in runs}
    replay = subprocess.run(
        [sys.executable, "-c", DIVERGENT_REPLAY, str(ROOT / "demo" / "agent.py"), by[("email_flow", "live")]],
        cwd=tmp,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "ReplayDivergenceError" in replay.stderr
    yield {
        "dir": str(tmp),
        "email": by[("email_flow", "live")],
        "trip": by[("trip_booking", "live")],
        "research": by[("research", "live")],
        "divergent": replay.stdout.split()[-1],
    }


def test_runs_lists_newest_first_with_filters(ledger: dict[str, str]) -> None:
    tmp = Path(ledger["dir"])
    out = cli("runs", cwd=tmp)
    assert out.returncode == 0, out.stderr
    assert "trip_booking" in out.stdout and "compensated" in out.stdout and "research" in out.stdout
    rows = json.loads(cli("runs", "--json", cwd=tmp).stdout)
    assert len(rows) == 9  # the demo's eight runs and the divergent replay
    assert [r["started_at"] for r in rows] == sorted((r["started_at"] for r in rows), reverse=True)
    assert {r["name"] for r in rows} >= {"email_flow", "trip_booking", "research", "newsletter"}
    trip = next(r for r in rows if r["name"] == "trip_booking")
    assert trip["calls"] == 5 and trip["status"] == "compensated"
    compensated = json.loads(cli("runs", "--status", "compensated", "--json", cwd=tmp).stdout)
    assert [r["run_id"] for r in compensated] == [ledger["trip"]]
    assert [r["name"] for r in json.loads(cli("runs", "--name", "research", "--json", cwd=tmp).stdout)] == [
        "research"
    ]
    assert len(json.loads(cli("runs", "--since", "1h", "--json", cwd=tmp).stdout)) == 9
    assert json.loads(cli("runs", "--since", "2999-01-01", "--json", cwd=tmp).stdout) == []
    assert len(json.loads(cli("runs", "--limit", "2", "--json", cwd=tmp).stdout)) == 2


def test_show_draws_the_run_as_a_tree_by_id_prefix(ledger: dict[str, str]) -> None:
    tmp = Path(ledger["dir"])
    out = cli("show", ledger["trip"][:8], "--trace-url", "http://jaeger:16686/trace/{trace_id}", cwd=tmp)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"run {ledger['trip']}" in text and "trip_booking" in text and "compensated" in text
    for line in (
        "#1 book_flight  forward  succeeded",
        "#3 charge_card  forward  failed",
        "#4 cancel_hotel  compensation  succeeded",
        "PaymentDeclined: card of ada declined",
    ):
        assert line in text
    assert "trace  http://jaeger:16686/trace/" in text
    data = json.loads(cli("show", ledger["trip"], "--json", cwd=tmp).stdout)
    assert data["run"]["status"] == "compensated" and len(data["calls"]) == 5
    assert [c["phase"] for c in data["calls"]] == ["forward"] * 3 + ["compensation"] * 2


def test_diff_points_at_the_first_differing_call_and_argument(ledger: dict[str, str]) -> None:
    tmp = Path(ledger["dir"])
    out = cli("diff", ledger["email"], ledger["divergent"], cwd=tmp)
    assert out.returncode == 0, out.stderr
    assert (
        'first difference at call 1 (send_email): different arguments: subject: "Hello" -> "Hello!"'
        in out.stdout
    )
    data = json.loads(cli("diff", ledger["email"], ledger["divergent"], "--json", cwd=tmp).stdout)
    assert data["first_difference"] == 0
    first = data["calls"][0]
    assert first["kind"] == "arguments" and first["a"]["tool_name"] == first["b"]["tool_name"] == "send_email"
    same = json.loads(cli("diff", ledger["email"], ledger["email"], "--json", cwd=tmp).stdout)
    assert same["first_difference"] is None and {c["kind"] for c in same["calls"]} == {"same"}


def test_export_json_and_otlp_with_the_recorded_ids(ledger: dict[str, str]) -> None:
    tmp = Path(ledger["dir"])
    data = json.loads(cli("export", ledger["research"], cwd=tmp).stdout)
    assert data["run"]["run_id"] == ledger["research"] and len(data["calls"]) == 2

    received: list[ExportTraceServiceRequest] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.append(request)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = cli(
            "export",
            ledger["research"][:10],
            "--format",
            "otlp",
            cwd=tmp,
            env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}"},
        )
    finally:
        server.shutdown()
        server.server_close()
    assert out.returncode == 0, out.stderr
    assert "3 spans" in out.stdout
    spans = [s for r in received for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    calls = data["calls"]
    assert sorted(s.span_id.hex() for s in spans) == sorted(
        [data["run"]["span_id"]] + [c["span_id"] for c in calls]
    )
    assert {s.trace_id.hex() for s in spans} == {data["run"]["trace_id"]}
    session_span = next(s for s in spans if s.name == "invoke_agent research")
    assert all(s.parent_span_id == session_span.span_id for s in spans if s is not session_span)


def test_compensate_unwinds_a_dead_run_through_the_app(tmp_path: Path) -> None:
    (tmp_path / "trip_tools.py").write_text(TOOLS)
    env = {
        "PYTHONPATH": str(tmp_path),
        "WORLD": str(tmp_path / "world.txt"),
        "LEDGER": f"sqlite:///{tmp_path / 'ledger.db'}",
    }
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_RUN],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**_clean_env(), **env, "CRASH": "cancel_hotel", "HOTEL_IDEMPOTENT": "1"},
        timeout=120,
    )
    run_id = crashed.stdout.split()[0]
    out = cli(
        "--db",
        env["LEDGER"],
        "compensate",
        run_id[:8],
        "--app",
        "trip_tools:runtime",
        cwd=tmp_path,
        env={**env, "HOTEL_IDEMPOTENT": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert f"run {run_id}: compensated" in out.stdout
    assert (tmp_path / "world.txt").read_text().splitlines()[-2:] == ["cancel Adlon", "cancel LH400"]


def test_errors_are_one_line_and_exit_non_zero(ledger: dict[str, str], tmp_path: Path) -> None:
    tmp = Path(ledger["dir"])

    def one_line_error(out: subprocess.CompletedProcess[str], *needles: str) -> None:
        assert out.returncode == 1 and out.stdout == ""
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
        for needle in needles:
            assert needle in lines[0]

    one_line_error(cli("show", "nope", cwd=tmp), "no run 'nope'")
    copy = tmp_path / "ledger.db"
    shutil.copy(tmp / "agent_relay.db", copy)
    engine = sa.create_engine(f"sqlite:///{copy}")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE agent_runs SET run_id = 'abc-1' WHERE name = 'research'")
        conn.exec_driver_sql("UPDATE agent_runs SET run_id = 'abc-2' WHERE name = 'newsletter'")
    one_line_error(cli("--db", f"sqlite:///{copy}", "show", "abc", cwd=tmp), "ambiguous", "abc-1", "abc-2")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE agent_relay_schema SET version = 99")
    engine.dispose()
    one_line_error(cli("--db", f"sqlite:///{copy}", "runs", cwd=tmp), "schema version 99")
    one_line_error(cli("--db", f"sqlite:///{tmp_path / 'missing.db'}", "runs", cwd=tmp), "does not exist")
    assert not (tmp_path / "missing.db").exists()  # a read command never creates a ledger
    out = cli("--db", "postgresql+psycopg://agent:s3cret@127.0.0.1:1/ledger", "runs", cwd=tmp)
    one_line_error(out, "127.0.0.1:1", "***")
    assert "s3cret" not in out.stderr
    debug = cli("--debug", "show", "nope", cwd=tmp)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_db_upgrade_brings_an_old_ledger_up_to_date(tmp_path: Path) -> None:
    from agent_relay.ledger.schema import SCHEMA_VERSION
    from tests.integration.test_schema_upgrade import build_v1_ledger

    url = f"sqlite:///{tmp_path / 'old.db'}"
    build_v1_ledger(url)
    assert "schema version 1" in cli("--db", url, "runs", cwd=tmp_path).stderr
    out = cli("--db", url, "db", "upgrade", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"schema version 1 -> {SCHEMA_VERSION}" in out.stdout
    again = cli("--db", url, "db", "upgrade", cwd=tmp_path)
    assert f"already at schema version {SCHEMA_VERSION}" in again.stdout
    assert json.loads(cli("--db", url, "runs", "--json", cwd=tmp_path).stdout)[0]["run_id"] == "run-v1"


def test_db_rotate_key_adds_a_secret_new_runtimes_key_with(tmp_path: Path) -> None:
    from agent_relay import AgentRuntime

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    before = AgentRuntime(url)
    old_id = before.services.keys.current.key_id
    before.shutdown()
    out = cli("--db", url, "db", "rotate-key", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    after = AgentRuntime(url)
    new_id = after.services.keys.current.key_id
    after.shutdown()
    assert new_id != old_id and f"new key secret {new_id}" in out.stdout
    assert old_id is not None and old_id not in out.stdout  # (names only the new one)
