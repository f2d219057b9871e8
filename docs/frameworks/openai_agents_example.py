"""OpenAI Agents SDK tools made durable with one line, run offline (a local server plays the model).

    python docs/frameworks/openai_agents_example.py

The agent books a flight through a ``@function_tool``; the same request again in the run is served from
the ledger, and a replay of the run books nothing.
"""

import asyncio

from agents import Agent, OpenAIChatCompletionsModel, RunConfig, Runner, function_tool
from openai import AsyncOpenAI

from agent_relay.integrations.openai_agents import durable_tools
from agent_relay.testing import FakeLLMServer, in_memory_runtime

runtime = in_memory_runtime()
bookings: list[str] = []


@function_tool
def book_flight(passenger: str, flight: str) -> str:
    """Book a seat on a flight."""
    bookings.append(flight)
    return f"PNR-{flight}"


async def main(llm: FakeLLMServer) -> None:
    client = AsyncOpenAI(base_url=llm.openai_url, api_key="local")
    model = OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)
    agent = Agent(name="travel", model=model, tools=durable_tools(runtime, [book_flight]))  # the one line
    config = RunConfig(tracing_disabled=True)

    async with runtime.agent_session(name="travel") as session:
        result = await Runner.run(agent, "Book LH400 for Ada", run_config=config)
        await Runner.run(agent, "Book LH400 for Ada", run_config=config)  # the same call: served
    async with runtime.agent_session(name="travel", replay=True, replay_run_id=session.run_id):
        await Runner.run(agent, "Book LH400 for Ada", run_config=config)  # replayed: no booking

    print(f"agent: {result.final_output}")
    for call in runtime.ledger.list_calls(session.run_id):
        print(f"ledger: {call.tool_name}({call.arguments}) -> {call.output!r} [{call.status}]")
    print(f"bookings made: {bookings}")
    assert bookings == ["LH400"]


with FakeLLMServer(tool_arguments={"passenger": "Ada", "flight": "LH400"}) as llm:
    asyncio.run(main(llm))
runtime.shutdown()
