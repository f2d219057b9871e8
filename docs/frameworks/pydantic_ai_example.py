"""pydantic-ai tools made durable with one line, run offline on pydantic-ai's own ``TestModel``.

    python docs/frameworks/pydantic_ai_example.py

``durable_tools`` turns tools (functions or ``Tool`` objects) into a toolset whose calls are recorded
without the ``RunContext``; ``durable_toolset`` does the same for any toolset (an MCP server's, say).
"""

import asyncio

from pydantic_ai import Agent, RunContext, Tool
from pydantic_ai.models.test import TestModel

from agent_relay.integrations.pydantic_ai import durable_tools
from agent_relay.testing import in_memory_runtime

runtime = in_memory_runtime()
lookups: list[str] = []


def order_status(ctx: RunContext[str], order_id: str) -> str:
    """The shipping status of an order."""
    lookups.append(order_id)
    return f"order {order_id} for {ctx.deps}: shipped"


agent = Agent(
    TestModel(), deps_type=str, toolsets=[durable_tools(runtime, [Tool(order_status)])]
)  # the one line


async def main() -> None:
    async with runtime.agent_session(name="support") as session:
        result = await agent.run("Where is my order?", deps="ada")
        await agent.run("Where is my order?", deps="ada")  # the same call: served
    async with runtime.agent_session(name="support", replay=True, replay_run_id=session.run_id):
        await agent.run("Where is my order?", deps="ada")  # replayed: no lookup

    print(f"agent: {result.output}")
    for call in runtime.ledger.list_calls(session.run_id):
        print(f"ledger: {call.tool_name}({call.arguments}) -> {call.output!r} [{call.status}]")
    print(f"lookups made: {lookups}")
    assert len(lookups) == 1


asyncio.run(main())
runtime.shutdown()
