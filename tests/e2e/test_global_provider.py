"""An application that set up OpenTelemetry itself: AgentRuntime records on the global SDK provider, so
tool spans land in the application's own exporters and traces (a subprocess: the global provider can be
set once per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

APP = textwrap.dedent(
    """
    import sys
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from agent_relay import AgentRuntime, tool

    class Proxy:  # what Logfire and others hand out: a proxy exposing the SDK provider as .provider
        def __init__(self, provider): self.provider = provider
        def get_tracer(self, *args, **kwargs): return self.provider.get_tracer(*args, **kwargs)

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    trace.set_tracer_provider(Proxy(provider) if sys.argv[2] == "proxy" else provider)

    runtime = AgentRuntime.from_env({"AGENT_RELAY_DATABASE_URL": sys.argv[1]})
    assert runtime.tracer_provider is provider

    @tool(runtime)
    def send(to: str) -> str:
        return "sent"

    with trace.get_tracer("app").start_as_current_span("handle request") as request:
        with runtime.agent_session(name="mail"):
            send("a@example.com")
    runtime.shutdown()
    with trace.get_tracer("app").start_as_current_span("after shutdown"):
        pass  # the application's provider is still its own: not shut down by the runtime
    names = [s.name for s in exported.get_finished_spans()]
    assert names == ["execute_tool send", "invoke_agent mail", "handle request", "after shutdown"], names
    tool_span = exported.get_finished_spans()[0]
    assert tool_span.context.trace_id == request.get_span_context().trace_id  # one trace
    own = AgentRuntime("sqlite://", use_global_provider=False)
    assert own.tracer_provider is not provider
    own.shutdown()
    print("ok")
    """
)


@pytest.mark.parametrize("kind", ["sdk", "proxy"])
def test_the_applications_global_provider_is_used(tmp_path: Path, kind: str) -> None:
    app = tmp_path / "app.py"
    app.write_text(APP)
    done = subprocess.run(
        [sys.executable, str(app), f"sqlite:///{tmp_path / 'ledger.db'}", kind],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
