"""An OTLP collector that is not there never affects a tool call, and shutdown stays bounded.

What is asserted is what happened: every call returned and was recorded, the program exited cleanly, no
error reached it, and the demo did exactly what it does without a collector. The one bound kept is the
promise itself, ``runtime.shutdown()`` returning within its ``timeout_s`` (5 s) even with the collector
down, asserted with room for a loaded machine: the exporters here are told to retry for two minutes
(``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT``), so a shutdown or an exit that waited for them would take over
30 s (their backoff: 1 + 2 + 4 + 8 + 16 s), far past the bound.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e

# The exporters' own retry schedule: what the runtime must not wait out.
EXPORTER_RETRIES_FOR_S = "120"
# runtime.shutdown(timeout_s=5.0) returns within 5 s (the README's promise); 10 s more for a loaded machine.
SHUTDOWN_BOUND_S = 15.0

CHILD = textwrap.dedent(
    """
    import sys, time
    from agent_relay import AgentRuntime, tool

    runtime = AgentRuntime.from_env()

    @tool(runtime)
    def notify(user: int) -> str:
        return f"sent-{user}"

    with runtime.agent_session(name="notify_all") as session:
        results = [notify(i) for i in range(200)]
    assert results == [f"sent-{i}" for i in range(200)]
    print(session.run_id, flush=True)
    if sys.argv[1] == "shutdown":
        started = time.monotonic()
        runtime.shutdown()
        print(time.monotonic() - started, flush=True)
    # else: left to the interpreter's exit (the runtime's exit hook), which must not hang on the exporter
    print(time.time(), flush=True)  # the script's end: what follows is the exit
    """
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block exits: nothing listens there


def _collector_down(env: dict[str, str]) -> dict[str, str]:
    return {
        **env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_closed_port()}",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": EXPORTER_RETRIES_FOR_S,
    }


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
@pytest.mark.parametrize("ending", ["shutdown", "exit"])
def test_unreachable_collector_costs_calls_nothing(tmp_path: Path, protocol: str, ending: str) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    env = _collector_down({**os.environ, "AGENT_RELAY_DATABASE_URL": url})
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = protocol
    env["OTEL_BSP_SCHEDULE_DELAY"] = "50"  # export attempts start while the calls are still running
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, ending], env=env, capture_output=True, text=True, timeout=300
    )
    finished = time.time()
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr  # the exporter's failures stayed on its own thread, as log lines
    run_id, *shutdown_s, script_end = proc.stdout.split()
    if shutdown_s:
        assert float(shutdown_s[0]) < SHUTDOWN_BOUND_S
    assert finished - float(script_end) < SHUTDOWN_BOUND_S  # nor did the exit wait for the exporter
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        statuses = conn.exec_driver_sql(
            "SELECT status, count(*) FROM tool_calls WHERE run_id = ? GROUP BY status", (run_id,)
        ).all()
    engine.dispose()
    assert statuses == [("succeeded", 200)]


def _ids_masked(output: str) -> str:
    """The demo's output without what differs between any two runs: run ids, trace and call ids, and what
    is made from idempotency keys (keyed by each ledger's own secret: the key column, the mail API's ids)."""
    output = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<run id>", output)
    output = re.sub(r"\b[0-9a-f]{32}\b", "<trace id>", output)
    output = re.sub(r"\bmsg-[0-9a-f]{8}\b", "msg-<key>", output)
    return re.sub(r"\b[0-9a-f]{12}\b", "<key>", output)


def test_demo_with_the_collector_down_runs_as_without_one(tmp_path: Path) -> None:
    def run(collector_down: bool) -> tuple[float, subprocess.CompletedProcess[str]]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
        work = tmp_path / ("down" if collector_down else "off")
        work.mkdir()
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, str(ROOT / "demo" / "agent.py")],
            cwd=work,
            env=_collector_down(env) if collector_down else env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return time.monotonic() - started, proc

    quiet_s, quiet = run(collector_down=False)
    down_s, down = run(collector_down=True)
    assert quiet.returncode == down.returncode == 0, down.stderr
    assert "Traceback" not in down.stderr
    assert down.stdout.count("trace id:") >= 5  # every flow ran ...
    assert _ids_masked(down.stdout) == _ids_masked(quiet.stdout)  # ... and did what it does without export
    # The calls were not slowed and the demo's one shutdown returned within its timeout; a wait for the
    # exporters' retries would add over 30 s.
    assert down_s - quiet_s < SHUTDOWN_BOUND_S, (down_s, quiet_s)
