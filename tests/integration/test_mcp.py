"""MCP tool calls with the real ``mcp`` package, against a real MCP server process over stdio
(``mcp_server_app.py``), whose side effects are counted in files: the client's calls are recorded,
deduplicated and replayed without a request; a server tool recorded with AgentRelay lands in a child run of
the caller's run, a retried ``tools/call`` with the caller's key does not run it again, and its spans
continue the caller's trace. ``mcp`` is in the ``frameworks`` extra (installed by ``.ci/run``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

pytest.importorskip("mcp", reason="mcp is in agent-relay[frameworks], which .ci/run installs")

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent

from agent_relay import AgentRuntime, ArgumentEncodingError, ConfigurationError, tool
from agent_relay.integrations.mcp import META_KEY, durable_mcp_tool, durable_session
from agent_relay.ledger import agent_runs, tool_calls
from agent_relay.testing import SpanCapture
from tests.support import calls_of, dead_owner, run_row

SERVER = Path(__file__).with_name("mcp_server_app.py")
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "frameworks" / "mcp_example.py"


@contextlib.asynccontextmanager
async def mcp_server(state: Path, *, global_provider: bool = False) -> AsyncIterator[ClientSession]:
    """A fresh server process (its own SQLite ledger in ``state``), connected and initialised."""
    env = {**os.environ, "MCP_TEST_STATE": str(state), "MCP_TEST_LEDGER": server_ledger(state)}
    if global_provider:
        env["MCP_TEST_GLOBAL_PROVIDER"] = "1"
    params = StdioServerParameters(command=sys.executable, args=[str(SERVER)], env=env)
    with (state / "server.log").open("w") as errlog:
        async with (
            stdio_client(params, errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def server_ledger(state: Path) -> str:
    return f"sqlite:///{state / 'server.db'}"


def counted(state: Path, name: str) -> int:
    """How often the server ran a side effect."""
    path = state / name
    return int(path.read_text()) if path.exists() else 0


def text(result: CallToolResult) -> str:
    [block] = result.content
    assert isinstance(block, TextContent)
    return block.text


@pytest.fixture
def state(tmp_path: Path) -> Path:
    path = tmp_path / "server"
    path.mkdir()
    return path


@pytest.mark.asyncio
async def test_client_calls_recorded_deduplicated_and_replayed(
    runtime: AgentRuntime, spans: SpanCapture, state: Path
) -> None:
    async with mcp_server(state) as raw:
        session = durable_session(runtime, raw, session_id="session-1")
        with runtime.agent_session(name="mcp_client") as source:
            first = await session.call_tool("bump", {"label": "a"})
            again = await session.call_tool("bump", arguments={"label": "a"}, read_timeout_seconds=30)
        assert text(first) == "a #1" and again == first
        assert counted(state, "a") == 1  # the repeat was served: the server ran it once

        [row] = calls_of(runtime, source.run_id)
        assert (row["tool_name"], row["status"], row["arguments"]) == (
            "mcp.bump",
            "succeeded",
            {"label": "a"},
        )
        assert row["output"]["isError"] is False  # the result as it went over the wire
        assert row["output"]["content"] == [{"type": "text", "text": "a #1"}]
        live = next(s for s in spans.tool_spans() if s.name == "execute_tool mcp.bump")
        assert live.attributes is not None
        assert live.attributes["mcp.method.name"] == "tools/call"
        assert live.attributes["mcp.session.id"] == "session-1"

        with runtime.agent_session(name="mcp_client", replay=True, replay_run_id=source.run_id) as replay:
            replayed = await session.call_tool("bump", {"label": "a"})
        assert isinstance(replayed, CallToolResult) and replayed == first
        assert counted(state, "a") == 1  # no request reached the server
        assert [r["origin"] for r in calls_of(runtime, replay.run_id)] == ["replayed"]

        outside = await session.call_tool("bump", {"label": "a"})  # no session: straight to the server
        assert text(outside) == "a #2"


@pytest.mark.asyncio
async def test_a_tool_error_result_is_a_failed_call(runtime: AgentRuntime, state: Path) -> None:
    async with mcp_server(state) as raw:
        session = durable_session(runtime, raw)
        with runtime.agent_session(name="mcp_errors") as source:
            result = await session.call_tool("refuse", {"reason": "closed"})
            assert result.is_error and "refused: closed" in text(result)  # handed back as it came
            await session.call_tool("refuse", {"reason": "closed"})  # a failed call runs again
        assert counted(state, "refusals") == 2
        [row] = calls_of(runtime, source.run_id)
        assert (row["status"], row["error_type"]) == ("failed", "agent_relay.integrations.mcp.McpToolError")
        assert row["attempts"] == 2 and "refused: closed" in row["error_message"]

        with runtime.agent_session(name="mcp_errors", replay=True, replay_run_id=source.run_id):
            replayed = await session.call_tool("refuse", {"reason": "closed"})
        assert replayed.is_error and text(replayed) == text(result)
        assert counted(state, "refusals") == 2


@pytest.mark.asyncio
async def test_bad_calls_are_refused_before_a_request(runtime: AgentRuntime, state: Path) -> None:
    async with mcp_server(state) as raw:
        session = durable_session(runtime, raw)
        with runtime.agent_session(name="mcp_bad"):
            with pytest.raises(ArgumentEncodingError, match=r"mcp\.bump: argument 'arguments\.label'"):
                await session.call_tool("bump", {"label": object()})
            with pytest.raises(ConfigurationError, match="must be a dict of the tool's arguments"):
                await session.call_tool("bump", ["a"])  # type: ignore[arg-type]
        assert counted(state, "a") == 0

        @tool(runtime, name="mcp.taken")
        def taken() -> None: ...

        with runtime.agent_session(name="mcp_bad"), pytest.raises(ConfigurationError, match="server="):
            await session.call_tool("taken", {})
    with pytest.raises(ConfigurationError, match="ClientSession"):
        durable_session(runtime, object())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="MCPServer"):
        durable_mcp_tool(runtime, object())  # type: ignore[arg-type]
    server = MCPServer("shop")
    with pytest.raises(ConfigurationError, match="must be a tuple of parameter names"):

        @durable_mcp_tool(runtime, server, exclude="ctx")
        def refund(order: str, ctx: Context) -> str:
            return order

    assert await server.list_tools() == [] and "refund" not in runtime.tools  # refused before registering


@pytest.mark.asyncio
async def test_server_tool_records_under_the_callers_run_once_per_key(
    runtime: AgentRuntime, state: Path
) -> None:
    arguments: dict[str, Any] = {"order": "A-1", "amount": 5}
    async with mcp_server(state) as raw:
        session = durable_session(runtime, raw, server="shop")
        with runtime.agent_session(name="checkout") as caller:
            result = await session.call_tool("charge", arguments)
        assert text(result) == "charged A-1: 5" and counted(state, "charges") == 1
        [sent] = [json.loads(line) for line in (state / "requests.jsonl").read_text().splitlines()]
        assert sent[META_KEY]["run_id"] == caller.run_id and "traceparent" in sent

        # the same tools/call again, with the caller's _meta (a retry after a lost response): served
        retried = await raw.call_tool("charge", arguments, meta=sent)
        assert text(retried) == text(result) and counted(state, "charges") == 1

        with runtime.agent_session(name="checkout", replay=True, replay_run_id=caller.run_id):
            assert await session.call_tool("charge", arguments) == result
        assert counted(state, "charges") == 1  # the client's replay sent nothing

        with runtime.agent_session(name="checkout"):  # another run of the caller: another call
            await session.call_tool("charge", arguments)
        assert counted(state, "charges") == 2

    [client_row] = calls_of(runtime, caller.run_id)
    assert client_row["tool_name"] == "mcp.shop.charge"
    server = AgentRuntime(server_ledger(state), use_global_provider=False)
    try:
        [(child_id, _)] = server.ledger.child_runs(caller.run_id)  # the retry opened no other run
        child = run_row(server, child_id)
        assert (child["name"], child["status"]) == ("charge", "succeeded")
        [server_row] = calls_of(server, child["run_id"])
        assert (server_row["tool_name"], server_row["status"]) == ("charge", "succeeded")
        assert server_row["attempts"] == 1
        assert server_row["arguments"] == arguments  # MCP's Context left out
        assert child["trace_id"] == client_row["trace_id"]  # one trace, across the processes
    finally:
        server.shutdown()

    server_spans = [json.loads(line) for line in (state / "spans.jsonl").read_text().splitlines()]
    first = next(s for s in server_spans if s["name"] == "invoke_agent charge")
    assert first["trace_id"] == client_row["trace_id"]
    assert first["parent_span_id"] == client_row["span_id"]  # under the client's execute_tool span
    assert first["attributes"]["mcp.method.name"] == "tools/call"
    assert first["attributes"]["jsonrpc.request.id"]
    assert first["attributes"]["agent_relay.run.parent_id"] == caller.run_id


def test_the_example_runs_a_client_and_a_server_process(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "mcp.shop.charge succeeded, 'charged A-1: 5'" in proc.stdout
    assert "the card was charged 1 time(s)" in proc.stdout
    assert "(charge, succeeded): a child of the client run, in its trace" in proc.stdout


@pytest.mark.asyncio
async def test_a_call_left_in_doubt_is_sent_again_on_resume_and_served_by_the_server(
    runtime: AgentRuntime, state: Path
) -> None:
    arguments: dict[str, Any] = {"order": "B-2", "amount": 7}
    async with mcp_server(state) as raw:
        session = durable_session(runtime, raw, server="shop", idempotent=True)
        with runtime.agent_session(name="checkout") as caller:
            await session.call_tool("charge", arguments)
        # the client's process died after the server charged, before it recorded the answer
        with runtime.ledger.engine.begin() as conn:
            conn.execute(
                sa.update(tool_calls)
                .where(tool_calls.c.run_id == caller.run_id)
                .values(status="pending", output=None, owner=dead_owner(), ended_at=None)
            )
            conn.execute(
                sa.update(agent_runs).where(agent_runs.c.run_id == caller.run_id).values(status="running")
            )
        with runtime.agent_session(name="checkout", resume_run_id=caller.run_id):
            result = await session.call_tool("charge", arguments)  # in doubt, idempotent: sent again
        assert text(result) == "charged B-2: 7"
        assert counted(state, "charges") == 1  # the server served the repeated key from its ledger
        assert len((state / "requests.jsonl").read_text().splitlines()) == 1  # its body ran once
    [row] = calls_of(runtime, caller.run_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)


@pytest.mark.asyncio
async def test_the_mcp_sdks_server_span_and_ours_are_one_story(runtime: AgentRuntime, state: Path) -> None:
    async with mcp_server(state, global_provider=True) as raw:  # the server application set up OTel itself
        with runtime.agent_session(name="checkout") as caller:
            await durable_session(runtime, raw).call_tool("charge", {"order": "C-3", "amount": 1})
    [client_row] = calls_of(runtime, caller.run_id)
    spans = {s["name"]: s for s in map(json.loads, (state / "spans.jsonl").read_text().splitlines())}
    sdk, ours = spans["tools/call charge"], spans["invoke_agent charge"]
    assert sdk["kind"] == "SERVER" and sdk["parent_span_id"] == client_row["span_id"]  # the client's call
    assert ours["parent_span_id"] == sdk["span_id"]  # our run inside the SDK's server span
    assert {sdk["trace_id"], ours["trace_id"]} == {client_row["trace_id"]}
    assert spans["execute_tool charge"]["parent_span_id"] == ours["span_id"]
