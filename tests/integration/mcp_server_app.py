"""An MCP server over stdio (the real ``mcp`` package's ``MCPServer``), started as a subprocess by
``tests/integration/test_mcp.py``. Its side effects are counted in files of ``MCP_TEST_STATE``, so the test
sees how often a tool body really ran; its spans go, one JSON line each, to ``spans.jsonl`` there (with
``MCP_TEST_GLOBAL_PROVIDER`` set, through a global SDK provider, so the MCP SDK's own spans are there too).

- ``charge``: an AgentRelay tool (``durable_mcp_tool``), recorded in the server's own ledger
  (``MCP_TEST_LEDGER``); it also writes the ``_meta`` each request brought, so the test can send it again.
- ``bump``: a plain MCP tool (no AgentRelay): the client side alone makes it durable.
- ``refuse``: a plain MCP tool that fails, so its result comes back with ``is_error`` set.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import format_span_id, format_trace_id

from agent_relay import AgentRuntime
from agent_relay.integrations.mcp import durable_mcp_tool

STATE = Path(os.environ["MCP_TEST_STATE"])


class JsonLinesExporter(SpanExporter):
    """Each ended span as a JSON line: the test reads the server's side of the trace from it."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with (STATE / "spans.jsonl").open("a") as out:
            for span in spans:
                context, parent = span.get_span_context(), span.parent
                line = {
                    "name": span.name,
                    "trace_id": format_trace_id(context.trace_id),
                    "span_id": format_span_id(context.span_id),
                    "parent_span_id": format_span_id(parent.span_id) if parent is not None else None,
                    "kind": span.kind.name,
                    "attributes": dict(span.attributes or {}),
                }
                out.write(json.dumps(line, default=str) + "\n")
        return SpanExportResult.SUCCESS


def bump_counter(name: str) -> int:
    path = STATE / name
    count = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(count))
    return count


if os.environ.get("MCP_TEST_GLOBAL_PROVIDER"):  # the application's own OTel setup: the MCP SDK's spans too
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))
    trace.set_tracer_provider(provider)
    runtime = AgentRuntime(os.environ["MCP_TEST_LEDGER"])  # records on that provider
else:
    runtime = AgentRuntime(os.environ["MCP_TEST_LEDGER"], use_global_provider=False)
    runtime.tracer_provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter()))
server = MCPServer("shop")


@durable_mcp_tool(runtime, server)
def charge(order: str, amount: int, ctx: Context) -> str:
    """Charge an order once."""
    with (STATE / "requests.jsonl").open("a") as out:
        out.write(json.dumps(ctx.request_context.meta or {}) + "\n")
    bump_counter("charges")
    return f"charged {order}: {amount}"


@server.tool()
def bump(label: str) -> str:
    """Count a call (a side effect the client makes durable on its own)."""
    return f"{label} #{bump_counter(label)}"


@server.tool()
def refuse(reason: str) -> str:
    """Always fails: its result has is_error set."""
    bump_counter("refusals")
    raise ToolError(f"refused: {reason}")


if __name__ == "__main__":
    try:
        server.run()
    finally:
        runtime.shutdown()
