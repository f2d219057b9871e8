"""``opentelemetry-instrument python app.py`` picks AgentRelay up: the distro configures the global SDK from
the OTEL_* variables and loads the ``agent_relay`` instrumentor entry point, so an application that never
calls ``agent_relay.instrument()`` has its OpenAI calls recorded in its sessions' ledger, replayed without
a request, and its spans exported by the distro's exporter (real subprocesses, the real CLI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent_relay.testing import FakeLLMServer

pytest.importorskip("opentelemetry.distro")
pytest.importorskip("opentelemetry.instrumentation.auto_instrumentation")

pytestmark = pytest.mark.e2e

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")

APP = textwrap.dedent(
    """
    import json, os, sys
    import openai
    from agent_relay import AgentRuntime

    runtime = AgentRuntime.from_env()  # no agent_relay.instrument() anywhere in the application
    client = openai.OpenAI(base_url=os.environ["LLM_URL"], api_key="local")
    ask = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with runtime.agent_session(name="ask") as live:
        reply = client.chat.completions.create(**ask)
    with runtime.agent_session(name="ask", replay=True, replay_run_id=live.run_id) as replay:
        again = client.chat.completions.create(**ask)
    calls = [c for s in (live, replay) for c in runtime.ledger.list_calls(s.run_id)]
    rows = [(c.tool_name, c.status, c.origin) for c in calls]
    costs = [str(live.cost_usd), str(calls[0].cost_usd) if calls else None]  # (others loaded: charged once)
    result = {"rows": rows, "same": again == reply, "costs": costs}
    runtime.shutdown()
    with open(sys.argv[1], "w") as out:
        json.dump(result, out)
    """
)


def spans_printed(stdout: str) -> list[dict[str, Any]]:
    """The spans the console exporter printed (one JSON object each)."""
    decoder, found, position = json.JSONDecoder(), [], 0
    while (start := stdout.find("{", position)) != -1:
        span, position = decoder.raw_decode(stdout, start)
        found.append(span)
    return found


def run_instrumented(tmp_path: Path, llm: FakeLLMServer, **extra_env: str) -> tuple[dict[str, Any], str]:
    app, result = tmp_path / "app.py", tmp_path / "result.json"
    app.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
    env.update(
        LLM_URL=llm.openai_url,
        AGENT_RELAY_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        OTEL_TRACES_EXPORTER="console",  # the distro's global provider prints the spans it exports
        OTEL_METRICS_EXPORTER="none",
        OTEL_LOGS_EXPORTER="none",
        OTEL_SERVICE_NAME="checkout-agent",
        **extra_env,
    )
    done = subprocess.run(
        [str(INSTRUMENT), sys.executable, str(app), str(result)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "agent_relay" not in done.stderr, done.stderr  # loaded without an error or a warning
    return json.loads(result.read_text()), done.stdout


def test_opentelemetry_instrument_records_the_apps_model_calls(tmp_path: Path) -> None:
    with FakeLLMServer() as llm:
        result, stdout = run_instrumented(tmp_path, llm)
        assert len(llm.requests) == 1  # the replay was served from the ledger
    assert result["rows"] == [
        ["openai.chat.completions.create", "succeeded", "live"],
        ["openai.chat.completions.create", "succeeded", "replayed"],
    ]
    assert result["same"] is True
    run_cost, call_cost = result["costs"]
    assert run_cost == call_cost != "None"  # the run paid for its one model call once
    spans = spans_printed(stdout)  # AgentRelay's spans went out through the distro's exporter
    chat = [s for s in spans if s["name"] == "chat gpt-4o-mini"]
    sessions = [s for s in spans if s["name"] == "invoke_agent ask"]
    assert len(chat) == len(sessions) == 2
    assert chat[0]["context"]["trace_id"] == sessions[0]["context"]["trace_id"]
    assert all(s["resource"]["attributes"]["service.name"] == "checkout-agent" for s in chat)


def test_the_instrumentor_can_be_disabled_like_any_other(tmp_path: Path) -> None:
    with FakeLLMServer() as llm:
        result, _ = run_instrumented(tmp_path, llm, OTEL_PYTHON_DISABLED_INSTRUMENTATIONS="agent_relay")
        assert len(llm.requests) == 2  # nothing recorded, nothing replayed: both calls went out
    assert result["rows"] == []
