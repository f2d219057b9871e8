"""Tools of the real agent frameworks, stacked over ``@tool(runtime)``: the context and injected parameters
each framework passes in are left out of the record and the key, so the tool runs, a repeat under a new
context (or a fresh tool-call id) is served, and a replay runs no body. The frameworks are an optional
extra (``agent-relay[frameworks]``, installed by ``.ci/run``)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import pytest

from agent_relay import AgentRuntime, tool
from agent_relay.testing import SpanCapture
from tests.support import calls_of

# (imported here, not inside the tests: the frameworks resolve the tools' annotations in this module)
try:
    import agents
    from agents.tool_context import ToolContext
except ImportError:  # pragma: no cover - the extra is not installed
    agents = None
try:
    import pydantic_ai
    from pydantic_ai.models.test import TestModel
except ImportError:  # pragma: no cover
    pydantic_ai = None
try:
    from langchain_core import tools as lc_tools
    from langchain_core.runnables import RunnableConfig
except ImportError:  # pragma: no cover
    lc_tools = None

_EXTRA = "not installed: it is in agent-relay[frameworks], which .ci/run installs"


@pytest.mark.skipif(agents is None, reason=f"the OpenAI Agents SDK is {_EXTRA}")
def test_openai_agents_sdk_context_parameters(runtime: AgentRuntime, spans: SpanCapture) -> None:
    ran: list[str] = []

    @agents.function_tool
    @tool(runtime)
    def weather(ctx: agents.RunContextWrapper[Any], city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    assert list(weather.params_json_schema["properties"]) == ["city"]  # the framework's schema is kept

    def invoke(call_id: str) -> Any:
        context = ToolContext(context=None, tool_name="weather", tool_call_id=call_id,
                              tool_arguments=json.dumps({"city": "Rome"}))  # fmt: skip
        return asyncio.run(weather.on_invoke_tool(context, json.dumps({"city": "Rome"})))

    with runtime.agent_session(name="agents") as source:
        assert invoke("call_1") == "sunny in Rome"
        assert invoke("call_2") == "sunny in Rome"  # the same call under a new context: served
    with runtime.agent_session(name="agents", replay=True, replay_run_id=source.run_id):
        assert invoke("call_3") == "sunny in Rome"
    assert ran == ["Rome"]
    (row,) = calls_of(runtime, source.run_id)
    assert row["arguments"] == {"city": "Rome"}
    # the model's own tool-call id names each call on its span; the ledger's id stays beside it
    assert [s.attributes["gen_ai.tool.call.id"] for s in spans.tool_spans()] == ["call_1", "call_2", "call_3"]
    assert spans.tool_spans()[0].attributes["agent_relay.call.id"] == row["call_id"]


@pytest.mark.skipif(pydantic_ai is None, reason=f"pydantic-ai is {_EXTRA}")
def test_pydantic_ai_run_context(runtime: AgentRuntime) -> None:
    ran: list[str] = []
    agent = pydantic_ai.Agent(TestModel(call_tools=["weather"]))

    @agent.tool
    @tool(runtime)
    def weather(ctx: pydantic_ai.RunContext[None], city: str) -> str:
        ran.append(city)
        return f"sunny in {city}"

    # (agent.run in asyncio.run: run_sync leaves its own event loop open, which this suite counts as an error)
    with runtime.agent_session(name="pydantic-ai") as source:
        asyncio.run(agent.run("weather?"))
    ran_live = list(ran)
    with runtime.agent_session(name="pydantic-ai", replay=True, replay_run_id=source.run_id):
        asyncio.run(agent.run("weather?"))
    assert len(ran_live) == 1 and ran == ran_live  # the replay ran no body
    (row,) = calls_of(runtime, source.run_id)
    assert list(row["arguments"]) == ["city"]


@pytest.mark.skipif(lc_tools is None, reason=f"langchain-core is {_EXTRA}")
def test_langchain_injected_parameters(runtime: AgentRuntime, spans: SpanCapture) -> None:
    ran: list[str] = []

    @lc_tools.tool
    @tool(runtime)
    def weather(
        city: str, config: RunnableConfig, tool_call_id: Annotated[str, lc_tools.InjectedToolCallId]
    ) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city} ({tool_call_id})"

    assert list(weather.tool_call_schema.model_json_schema()["properties"]) == ["city"]

    def invoke(call_id: str) -> Any:
        return weather.invoke(
            {"type": "tool_call", "name": "weather", "args": {"city": "Rome"}, "id": call_id}
        )

    with runtime.agent_session(name="langchain") as source:
        first = invoke("call_1")
        again = invoke("call_2")  # a fresh model-side id: the same call, served
    assert first.content == again.content == "sunny in Rome (call_1)"
    assert ran == ["Rome"]
    assert [r["arguments"] for r in calls_of(runtime, source.run_id)] == [{"city": "Rome"}]
    assert [s.attributes["gen_ai.tool.call.id"] for s in spans.tool_spans()] == ["call_1", "call_2"]
