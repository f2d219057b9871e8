"""MCP tool calls, durable on both sides of the wire: ``python docs/frameworks/mcp_example.py`` (offline).

The script starts itself again as an MCP server over stdio (``MCPServer``, with a ledger of its own), then,
as the client, calls the server's ``charge`` tool from a session of its runtime:

- the client records the call (``mcp.shop.charge``), serves the repeat, and replays it without a request;
- the server records it under a child run of the client's run (``parent_run_id``), in the same trace;
- a retried ``tools/call`` carrying the same ``_meta`` (a response lost on the way back, say) is served by
  the server from its ledger: the card is charged once.

Needs ``mcp>=2.3`` (``pip install 'agent-relay[frameworks]'``).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.server.mcpserver import Context, MCPServer

from agent_relay import AgentRuntime
from agent_relay.integrations.mcp import META_KEY, durable_mcp_tool, durable_session


def serve(workdir: Path) -> None:
    """The MCP server: one tool, recorded in the server's own ledger."""
    runtime = AgentRuntime(f"sqlite:///{workdir / 'server.db'}", use_global_provider=False)
    server = MCPServer("shop")

    @durable_mcp_tool(runtime, server)
    def charge(order: str, amount: int, ctx: Context) -> str:
        """Charge an order's card."""
        (workdir / "last_meta.json").write_text(json.dumps(ctx.request_context.meta))  # (to retry with)
        with (workdir / "charges.log").open("a") as log:  # the side effect
            log.write(f"{order} {amount}\n")
        return f"charged {order}: {amount}"

    try:
        server.run()  # stdio, until the client hangs up
    finally:
        runtime.shutdown()


async def client(workdir: Path) -> None:
    runtime = AgentRuntime(f"sqlite:///{workdir / 'client.db'}", use_global_provider=False)
    server = [__file__, "serve", str(workdir)]
    params = StdioServerParameters(command=sys.executable, args=server, env=dict(os.environ))
    order = {"order": "A-1", "amount": 5}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as mcp_session:
        await mcp_session.initialize()
        shop = durable_session(runtime, mcp_session, server="shop")

        with runtime.agent_session(name="checkout") as run:
            first = await shop.call_tool("charge", order)
            again = await shop.call_tool("charge", order)  # the same call in the run: served
        sent = json.loads((workdir / "last_meta.json").read_text())
        retried = await mcp_session.call_tool("charge", order, meta=sent)  # the request, sent again
        with runtime.agent_session(name="checkout", replay=True, replay_run_id=run.run_id):
            replayed = await shop.call_tool("charge", order)  # no request at all

    charges = (workdir / "charges.log").read_text().splitlines()
    assert first == again == replayed and retried.content == first.content and charges == ["A-1 5"]
    [call] = runtime.ledger.list_calls(run.run_id)
    print(f"client run {run.run_id}: {call.tool_name} {call.status}, {first.content[0].text!r}")
    print(f"the card was charged {len(charges)} time(s); _meta carried {sorted(sent[META_KEY])}")
    runtime.shutdown()

    server_ledger = AgentRuntime(f"sqlite:///{workdir / 'server.db'}", use_global_provider=False)
    [(child_id, name)] = server_ledger.ledger.child_runs(run.run_id)
    child = server_ledger.ledger.get_run(child_id)
    assert child is not None and child.trace_id == call.trace_id
    print(f"server run {child_id} ({name}, {child.status}): a child of the client run, in its trace")
    server_ledger.shutdown()


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(Path(sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(client(Path(tmp)))
