"""The framework adapters (``agent_relay.integrations``) over tool objects the real frameworks built, driven
as a user drives them: the Agents SDK's ``Runner`` against the fake LLM server, pydantic-ai agents on its
own test models, LangChain tools invoked with the tool calls a model makes. Each wrapped tool keeps its
schema; its calls are recorded without the framework's context, a repeat in the run is served, and a
replay runs no body. The frameworks are an optional extra (``agent-relay[frameworks]``, installed by
``.ci/run``); each test skips without its framework.

(No ``from __future__ import annotations`` here: the frameworks read the annotations of the tools these
tests define inside their bodies.)
"""

import asyncio
import json
import os
from typing import Annotated, Any

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, BudgetExceededError, ConfigurationError, DuplicateToolError, tool
from agent_relay.ledger import tool_calls
from agent_relay.testing import FakeLLMServer, SpanCapture
from tests.support import calls_of

CALL_ID = "agent_relay.call.id"  # the ledger's id, beside the model's own tool-call id
KEY = "agent_relay.idempotency_key"  # on AgentRelay's execute_tool spans (a framework's own have none)


def ours(spans: SpanCapture) -> list[Any]:
    return [s for s in spans.tool_spans() if KEY in (s.attributes or {})]


# --- OpenAI Agents SDK ------------------------------------------------------------------------------------


def test_openai_agents_function_tools_are_durable_in_an_agent_loop(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    agents = pytest.importorskip("agents")
    openai = pytest.importorskip("openai")
    from agent_relay.integrations.openai_agents import durable_tools

    ran: list[str] = []

    @agents.function_tool
    async def get_weather(ctx: agents.RunContextWrapper[Any], city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    (weather,) = durable_tools(runtime, [get_weather])
    assert (weather.name, weather.description, weather.strict_json_schema) == (
        get_weather.name,
        get_weather.description,
        get_weather.strict_json_schema,
    )
    assert weather.params_json_schema == get_weather.params_json_schema
    assert list(weather.params_json_schema["properties"]) == ["city"]

    with FakeLLMServer(tool_arguments={"city": "Rome"}) as llm:
        client = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="local")
        model = agents.OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)
        agent = agents.Agent(name="weather", model=model, tools=[weather])
        config = agents.RunConfig(tracing_disabled=True)

        async def main() -> tuple[str, str]:
            async with runtime.agent_session(name="agents") as source:
                first = await agents.Runner.run(agent, "weather in Rome?", run_config=config)
                await agents.Runner.run(agent, "weather in Rome?", run_config=config)  # the same call again
            assert ran == ["Rome"]  # the repeat was served
            async with runtime.agent_session(
                name="agents", replay=True, replay_run_id=source.run_id
            ) as replay:
                again = await agents.Runner.run(agent, "weather in Rome?", run_config=config)
            assert first.final_output == again.final_output
            return source.run_id, replay.run_id

        source_id, replay_id = asyncio.run(main())
        model_call_ids = [
            call["id"]
            for _, body in llm.requests
            for message in body["messages"]
            for call in message.get("tool_calls") or []
        ]
    assert ran == ["Rome"]  # the replay ran no body
    (row,) = calls_of(runtime, source_id)
    assert (row["tool_name"], row["arguments"], row["output"], row["status"]) == (
        "get_weather",
        {"city": "Rome"},
        "sunny in Rome",
        "succeeded",
    )
    (replayed,) = calls_of(runtime, replay_id)
    assert (replayed["origin"], replayed["output"]) == ("replayed", "sunny in Rome")
    # each span names the model's own tool-call id (the ToolContext's), the ledger's id beside it
    assert [s.attributes["gen_ai.tool.call.id"] for s in ours(spans)] == list(dict.fromkeys(model_call_ids))
    assert ours(spans)[0].attributes[CALL_ID] == row["call_id"]


def test_openai_agents_failures_are_recorded_not_served_and_worded_for_the_model(
    runtime: AgentRuntime,
) -> None:
    agents = pytest.importorskip("agents")
    from agents.tool_context import ToolContext

    from agent_relay.integrations.openai_agents import durable_tool

    tries: list[str] = []

    @agents.function_tool
    def flaky(city: str) -> str:
        """Fails the first time."""
        tries.append(city)
        if len(tries) == 1:
            raise RuntimeError("upstream timeout")
        return f"ok {city}"

    durable = durable_tool(runtime, flaky)
    arguments = json.dumps({"city": "Rome"})

    def invoke(call_id: str) -> Any:
        context = ToolContext(context=None, tool_name="flaky", tool_call_id=call_id, tool_arguments=arguments)
        return asyncio.run(durable.on_invoke_tool(context, arguments))

    with runtime.agent_session(name="flaky") as session:
        failed = invoke("call_1")
        assert failed.startswith("An error occurred while running the tool")  # the SDK's own words
        assert invoke("call_2") == "ok Rome"  # a failed call is not served: it runs again
    (row,) = calls_of(runtime, session.run_id)
    assert (row["status"], row["attempts"], row["output"]) == ("succeeded", 2, "ok Rome")
    assert tries == ["Rome", "Rome"]


def test_openai_agents_budget_and_compensation(runtime: AgentRuntime) -> None:
    agents = pytest.importorskip("agents")
    from agents.tool_context import ToolContext

    from agent_relay.integrations.openai_agents import durable_tool

    cancelled: list[tuple[str, str]] = []

    @agents.function_tool
    def book_hotel(city: str) -> str:
        """Book a hotel."""
        return f"H-{city}"

    @tool(runtime)
    def cancel_hotel(city: str, forward_result: str) -> None:
        cancelled.append((city, forward_result))

    booking = durable_tool(runtime, book_hotel, compensation="cancel_hotel", cost=2)

    def invoke(city: str) -> Any:
        arguments = json.dumps({"city": city})
        context = ToolContext(
            context=None, tool_name="book_hotel", tool_call_id=city, tool_arguments=arguments
        )
        return asyncio.run(booking.on_invoke_tool(context, arguments))

    # a budget passed stops the run (not words for the model), and the saga undoes the booking
    with pytest.raises(BudgetExceededError), runtime.agent_session(name="trip", budget_limit=3) as session:
        assert invoke("Rome") == "H-Rome"
        invoke("Oslo")  # refused before it runs: 2 + 2 could pass the limit
    assert session.status == "compensated"
    assert cancelled == [("Rome", "H-Rome")]


def test_openai_agents_bad_input_is_refused_before_anything_runs(runtime: AgentRuntime) -> None:
    agents = pytest.importorskip("agents")
    from agent_relay.integrations.openai_agents import durable_tool, durable_tools

    @agents.function_tool
    def lookup(q: str) -> str:
        """Look up."""
        return q

    with pytest.raises(ConfigurationError, match="FunctionTool"):
        durable_tool(runtime, lambda q: q)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="'name'"):
        durable_tool(runtime, lookup, name="other")
    with pytest.raises(ConfigurationError, match="'nope'"):
        durable_tool(runtime, lookup, exclude=("nope",))

    def build() -> Any:  # an agent's tools built per request: new objects, the same tool
        @agents.function_tool
        def lookup(q: str) -> str:
            """Look up."""
            return q

        return lookup

    durable_tools(runtime, [build()])
    spec = runtime.tools["lookup"]
    durable_tools(runtime, [build()])  # reuses the registration
    assert runtime.tools["lookup"] is spec

    @agents.function_tool(name_override="lookup")
    def other(q: str, limit: int) -> str:
        """Another tool of the same name."""
        return q

    with pytest.raises(DuplicateToolError) as raised:
        durable_tool(runtime, other)
    assert "rename one of the tools named 'lookup' in the framework" in raised.value.__notes__[0]


# --- LangChain --------------------------------------------------------------------------------------------


def test_langchain_tools_keep_their_schema_and_leave_injected_args_out(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    lc_tools = pytest.importorskip("langchain_core.tools")
    from langchain_core.runnables import RunnableConfig

    from agent_relay.integrations.langchain import durable_tools

    ran: list[str] = []
    configs: list[Any] = []

    @lc_tools.tool
    def weather(
        city: str, config: RunnableConfig, tool_call_id: Annotated[str, lc_tools.InjectedToolCallId]
    ) -> str:
        """The weather in a city."""
        ran.append(city)
        configs.append(config.get("metadata", {}).get("user"))
        return f"sunny in {city} ({tool_call_id})"

    (durable,) = durable_tools(runtime, [weather])
    assert (durable.name, durable.description, durable.args_schema) == (
        weather.name,
        weather.description,
        weather.args_schema,
    )
    assert durable.tool_call_schema.model_json_schema() == weather.tool_call_schema.model_json_schema()
    assert list(durable.args) == ["city"]

    def call(call_id: str) -> dict[str, Any]:
        return {"type": "tool_call", "name": "weather", "args": {"city": "Rome"}, "id": call_id}

    config = {"metadata": {"user": "ada"}}
    with runtime.agent_session(name="langchain") as source:
        first = durable.invoke(call("call_1"), config)
        again = durable.invoke(call("call_2"), config)  # a fresh model-side id: the same call, served
        from_async = asyncio.run(durable.ainvoke(call("call_3"), config))
    assert (first.tool_call_id, again.tool_call_id, from_async.tool_call_id) == ("call_1", "call_2", "call_3")
    assert first.content == again.content == from_async.content == "sunny in Rome (call_1)"
    assert ran == ["Rome"] and configs == ["ada"]  # the original got the injected config and id
    with runtime.agent_session(name="langchain", replay=True, replay_run_id=source.run_id) as replay:
        served = durable.invoke(call("call_4"))
    assert served.content == "sunny in Rome (call_1)" and ran == ["Rome"]
    (row,) = calls_of(runtime, source.run_id)
    assert (row["tool_name"], row["arguments"], row["status"]) == ("weather", {"city": "Rome"}, "succeeded")
    assert [r["origin"] for r in calls_of(runtime, replay.run_id)] == ["replayed"]
    assert [s.attributes["gen_ai.tool.call.id"] for s in ours(spans)] == [
        "call_1",
        "call_2",
        "call_3",
        "call_4",
    ]


def test_langchain_custom_and_async_only_tools(runtime: AgentRuntime) -> None:
    lc_tools = pytest.importorskip("langchain_core.tools")
    from pydantic import BaseModel

    from agent_relay.integrations.langchain import durable_tools

    ran: list[str] = []

    class SearchInput(BaseModel):
        query: str
        limit: int = 3

    class Search(lc_tools.BaseTool):  # a toolkit-style tool: its own class, sync and async paths
        name: str = "search"
        description: str = "Search the docs."
        args_schema: type[BaseModel] = SearchInput

        def _run(self, query: str, limit: int = 3) -> list[str]:
            ran.append(f"sync {query}")
            return [f"{query}-{i}" for i in range(limit)]

        async def _arun(self, query: str, limit: int = 3) -> list[str]:
            ran.append(f"async {query}")
            return [f"{query}-{i}" for i in range(limit)]

    async def translate(text: str) -> str:
        ran.append(f"translate {text}")
        return text.upper()

    only_async = lc_tools.StructuredTool.from_function(
        coroutine=translate, name="translate", description="Translate."
    )
    search, durable_translate = durable_tools(runtime, [Search(), only_async])
    assert search.tool_call_schema.model_json_schema() == Search().tool_call_schema.model_json_schema()

    async def main() -> None:
        assert await search.ainvoke({"query": "otel"}) == ["otel-0", "otel-1", "otel-2"]
        assert await durable_translate.ainvoke({"text": "hi"}) == "HI"

    with runtime.agent_session(name="custom") as source:
        assert search.invoke({"query": "otel", "limit": 3}) == ["otel-0", "otel-1", "otel-2"]
        asyncio.run(main())  # the async path of a call already made: served
        with pytest.raises(NotImplementedError):  # async-only, as the original is
            durable_translate.invoke({"text": "hi"})
    assert ran == ["sync otel", "translate hi"]
    rows = calls_of(runtime, source.run_id)
    assert [(r["tool_name"], r["arguments"]) for r in rows] == [
        ("search", {"query": "otel", "limit": 3}),
        ("translate", {"text": "hi"}),
    ]
    with runtime.agent_session(name="custom", replay=True, replay_run_id=source.run_id):
        asyncio.run(main())
    assert ran == ["sync otel", "translate hi"]


def test_langchain_tool_errors_are_recorded_then_handled_as_configured(runtime: AgentRuntime) -> None:
    lc_tools = pytest.importorskip("langchain_core.tools")
    from agent_relay.integrations.langchain import durable_tool

    tries: list[str] = []

    def pay(amount: int) -> str:
        tries.append("pay")
        if len(tries) == 1:
            raise lc_tools.ToolException("card declined")
        return f"paid {amount}"

    original = lc_tools.StructuredTool.from_function(
        pay, name="pay", description="Pay.", handle_tool_error=True
    )
    durable = durable_tool(runtime, original)
    with runtime.agent_session(name="pay") as session:
        assert durable.invoke({"amount": 5}) == "card declined"  # handled for the model, as before
        assert durable.invoke({"amount": 5}) == "paid 5"  # not served: the failed call runs again
    (row,) = calls_of(runtime, session.run_id)
    assert (row["status"], row["attempts"]) == ("succeeded", 2)


# --- pydantic-ai ------------------------------------------------------------------------------------------


def test_pydantic_ai_toolsets_are_durable_and_keep_their_definitions(runtime: AgentRuntime) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    from pydantic_ai.messages import ModelResponse, ToolCallPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from agent_relay.integrations.pydantic_ai import durable_tools

    ran: list[str] = []

    def weather(ctx: pydantic_ai.RunContext[None], city: str) -> str:
        """The weather in a city."""
        ran.append(city)
        return f"sunny in {city}"

    async def forecast(city: str, days: int = 3) -> str:
        """A forecast."""
        ran.append(f"forecast {city}")
        return f"{days} days of sun in {city}"

    seen: list[list[Any]] = []

    def model(messages: list[Any], info: AgentInfo) -> ModelResponse:
        seen.append(info.function_tools)
        if len(messages) == 1:  # the prompt: call both tools, then answer with what came back
            return ModelResponse(
                parts=[
                    ToolCallPart("weather", {"city": "Rome"}, tool_call_id="call_1"),
                    ToolCallPart("forecast", {"city": "Rome"}, tool_call_id="call_2"),
                ]
            )
        returns = [p.content for p in messages[-1].parts]
        return ModelResponse(parts=[pydantic_ai.messages.TextPart(" / ".join(returns))])

    plain = pydantic_ai.Agent(
        FunctionModel(model), toolsets=[pydantic_ai.FunctionToolset([weather, forecast])]
    )
    durable = pydantic_ai.Agent(FunctionModel(model), toolsets=[durable_tools(runtime, [weather, forecast])])
    asyncio.run(plain.run("weather?"))
    ran.clear()

    async def main() -> tuple[str, str]:
        async with runtime.agent_session(name="pydantic-ai") as source:
            first = await durable.run("weather?")
            await durable.run("weather?")  # the same calls again in the run: served
        assert sorted(ran) == ["Rome", "forecast Rome"]
        async with runtime.agent_session(
            name="pydantic-ai", replay=True, replay_run_id=source.run_id
        ) as replay:
            again = await durable.run("weather?")
        assert first.output == again.output == "sunny in Rome / 3 days of sun in Rome"
        return source.run_id, replay.run_id

    source_id, replay_id = asyncio.run(main())
    assert sorted(ran) == ["Rome", "forecast Rome"]  # the replay ran no body
    assert seen[0] == seen[1]  # the model saw the same tool definitions (names, schemas) as without us
    rows = sorted(calls_of(runtime, source_id), key=lambda r: r["tool_name"])
    assert [(r["tool_name"], r["arguments"]) for r in rows] == [
        ("forecast", {"city": "Rome", "days": 3}),
        ("weather", {"city": "Rome"}),  # no RunContext
    ]
    assert {r["origin"] for r in calls_of(runtime, replay_id)} == {"replayed"}


def test_pydantic_ai_tool_span_is_the_parent_of_ours(runtime: AgentRuntime, spans: SpanCapture) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.instrumented import InstrumentationSettings
    from pydantic_ai.models.test import TestModel

    from agent_relay.integrations.pydantic_ai import durable_toolset

    toolset = pydantic_ai.FunctionToolset()

    @toolset.tool_plain
    def weather(city: str) -> str:
        return f"sunny in {city}"

    agent = pydantic_ai.Agent(TestModel(), toolsets=[durable_toolset(runtime, toolset)])
    agent.instrument = InstrumentationSettings(tracer_provider=runtime.tracer_provider)
    with runtime.agent_session(name="traced"):
        asyncio.run(agent.run("weather?"))
    (span,) = ours(spans)
    by_id = {s.context.span_id: s for s in spans.spans()}
    parent = by_id[span.parent.span_id]
    assert KEY not in parent.attributes  # pydantic-ai's own tool span, not ours
    assert (parent.attributes["gen_ai.tool.name"], parent.attributes["gen_ai.tool.call.id"]) == (
        "weather",
        span.attributes["gen_ai.tool.call.id"],
    )
    assert parent.context.trace_id == span.context.trace_id


def test_pydantic_ai_model_retry_is_recorded_and_runs_again(runtime: AgentRuntime) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.test import TestModel

    from agent_relay.integrations.pydantic_ai import durable_tools

    tries: list[str] = []

    def lookup(ctx: pydantic_ai.RunContext[None], order: str) -> str:
        tries.append(order)
        if len(tries) == 1:
            raise pydantic_ai.ModelRetry("order not found yet, try again")
        return f"order {order}: shipped"

    agent = pydantic_ai.Agent(TestModel(), toolsets=[durable_tools(runtime, [lookup])])
    with runtime.agent_session(name="retry") as session:
        asyncio.run(agent.run("status?"))
    assert len(tries) == 2
    (row,) = calls_of(runtime, session.run_id)
    assert (row["tool_name"], row["status"], row["attempts"]) == ("lookup", "succeeded", 2)
    assert list(row["arguments"]) == ["order"]


def test_framework_tools_compensate_and_exclude_arguments(runtime: AgentRuntime) -> None:
    agents = pytest.importorskip("agents")
    lc_tools = pytest.importorskip("langchain_core.tools")
    from agents.tool_context import ToolContext

    from agent_relay.integrations import langchain, openai_agents

    done: list[str] = []

    @lc_tools.tool
    def reserve_seat(flight: str, request_id: str) -> str:
        """Reserve a seat (request_id: the caller's trace id, not part of the request)."""
        done.append(f"reserve {flight} {request_id}")
        return f"seat on {flight}"

    @lc_tools.tool
    def release_seat(flight: str) -> str:
        """Release a reserved seat."""
        done.append(f"release {flight}")
        return "released"

    @agents.function_tool
    def hold_room(city: str) -> str:
        """Hold a hotel room."""
        done.append(f"hold {city}")
        return f"room in {city}"

    @agents.function_tool
    def free_room(city: str) -> str:
        """Free a held room."""
        done.append(f"free {city}")
        return "freed"

    # framework tools as compensations: called with the forward arguments, without a model or a context
    reserve = langchain.durable_tool(
        runtime, reserve_seat, compensation="release_seat", exclude=("request_id",)
    )
    langchain.durable_tool(runtime, release_seat)
    hold = openai_agents.durable_tool(runtime, hold_room, compensation="free_room")
    openai_agents.durable_tool(runtime, free_room)
    arguments = json.dumps({"city": "Oslo"})
    context = ToolContext(context=None, tool_name="hold_room", tool_call_id="c1", tool_arguments=arguments)

    with pytest.raises(RuntimeError, match="payment declined"), runtime.agent_session(name="trip") as session:
        reserve.invoke({"flight": "LH400", "request_id": "r-1"})
        reserve.invoke({"flight": "LH400", "request_id": "r-2"})  # another request id: the same call
        assert asyncio.run(hold.on_invoke_tool(context, arguments)) == "room in Oslo"
        raise RuntimeError("payment declined")
    assert session.status == "compensated"
    assert done == ["reserve LH400 r-1", "hold Oslo", "free Oslo", "release LH400"]
    rows = calls_of(runtime, session.run_id)
    assert [(r["tool_name"], r["phase"], r["arguments"]) for r in rows] == [
        ("reserve_seat", "forward", {"flight": "LH400"}),
        ("hold_room", "forward", {"city": "Oslo"}),
        ("free_room", "compensation", {"city": "Oslo"}),
        ("release_seat", "compensation", {"flight": "LH400"}),
    ]


def test_pydantic_ai_tool_options_and_a_context_tool_that_cannot_compensate(runtime: AgentRuntime) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.test import TestModel

    from agent_relay.integrations.pydantic_ai import durable_tools

    cancelled: list[str] = []

    def book(code: str) -> str:
        return f"booked {code}"

    @tool(runtime)
    def cancel_booking(code: str) -> None:
        cancelled.append(code)

    def note(ctx: pydantic_ai.RunContext[None], text: str) -> str:
        return text

    def undo_note(ctx: pydantic_ai.RunContext[None], text: str) -> str:
        return text

    toolset = durable_tools(
        runtime,
        [book, note, undo_note],
        tool_options={"book": {"compensation": "cancel_booking"}, "note": {"compensation": "undo_note"}},
    )
    agent = pydantic_ai.Agent(TestModel(call_tools=["book"]), toolsets=[toolset])
    with pytest.raises(RuntimeError), runtime.agent_session(name="book") as session:
        asyncio.run(agent.run("book it"))
        raise RuntimeError("later step failed")
    assert session.status == "compensated" and cancelled == ["a"]  # TestModel's argument

    noting = pydantic_ai.Agent(TestModel(call_tools=["note"]), toolsets=[toolset])
    with pytest.raises(RuntimeError), runtime.agent_session(name="note") as session:
        asyncio.run(noting.run("note it"))
        raise RuntimeError("later step failed")
    assert session.status == "compensation_failed"  # undo_note needs a RunContext: named, not skipped
    assert "RunContext" in str(session.compensation_errors[0])
    with pytest.raises(ConfigurationError, match="'name'"):
        durable_tools(runtime, [book], tool_options={"book": {"name": "other"}})
    with pytest.raises(ConfigurationError, match="'bok'"):  # a typo, not silently ignored
        durable_tools(runtime, [book], tool_options={"bok": {"compensation": "cancel_booking"}})


def test_langchain_content_and_artifact_and_pydantic_ai_any_toolset(runtime: AgentRuntime) -> None:
    lc_tools = pytest.importorskip("langchain_core.tools")
    pydantic_ai = pytest.importorskip("pydantic_ai")
    from pydantic_ai.models.test import TestModel

    from agent_relay.integrations.langchain import durable_tool
    from agent_relay.integrations.pydantic_ai import durable_toolset

    @lc_tools.tool(response_format="content_and_artifact")
    def fetch(url: str) -> tuple[str, dict[str, Any]]:
        """Fetch a page: a summary for the model, the page as an artifact."""
        return f"{url}: 2 links", {"links": ["a", "b"]}

    durable = durable_tool(runtime, fetch)
    call = {"type": "tool_call", "name": "fetch", "args": {"url": "x.org"}, "id": "call_1"}
    with runtime.agent_session(name="fetch") as source:
        live = durable.invoke(call)
    with runtime.agent_session(name="fetch", replay=True, replay_run_id=source.run_id):
        replayed = durable.invoke(call)
    assert (
        (live.content, live.artifact)
        == (replayed.content, replayed.artifact)
        == ("x.org: 2 links", {"links": ["a", "b"]})
    )

    # a toolset that is not a FunctionToolset: its tools are registered when first called, by their names
    ran: list[str] = []

    def stock(item: str) -> int:
        ran.append(item)
        return 3

    shop = durable_toolset(runtime, pydantic_ai.FunctionToolset([stock]).prefixed("shop"))
    assert "shop_stock" not in runtime.tools
    agent = pydantic_ai.Agent(TestModel(), toolsets=[shop])
    with runtime.agent_session(name="shop") as session:
        asyncio.run(agent.run("in stock?"))
        asyncio.run(agent.run("in stock?"))
    assert len(ran) == 1 and "shop_stock" in runtime.tools
    (row,) = calls_of(runtime, session.run_id)
    assert row["tool_name"] == "shop_stock"


def test_a_hand_built_function_tool_with_argument_names_python_cannot_take(runtime: AgentRuntime) -> None:
    agents = pytest.importorskip("agents")
    from agents.tool_context import ToolContext

    from agent_relay.integrations.openai_agents import durable_tool

    seen: list[str] = []

    async def invoke(ctx: Any, input_json: str) -> str:
        seen.append(input_json)
        return "ok"

    schema = {
        "type": "object",
        "properties": {"first-name": {"type": "string"}, "class": {"type": "string"}},
        "required": ["first-name", "class"],
        "additionalProperties": False,
    }
    hand_built = agents.FunctionTool(
        name="enroll", description="Enroll a student.", params_json_schema=schema, on_invoke_tool=invoke
    )
    durable = durable_tool(runtime, hand_built)
    arguments = json.dumps({"first-name": "Ada", "class": "math"})
    context = ToolContext(context=None, tool_name="enroll", tool_call_id="c1", tool_arguments=arguments)
    with runtime.agent_session(name="enroll") as session:
        assert asyncio.run(durable.on_invoke_tool(context, arguments)) == "ok"
        assert asyncio.run(durable.on_invoke_tool(context, arguments)) == "ok"
    assert seen == [arguments]  # the original got the model's JSON as it came; the repeat was served
    (row,) = calls_of(runtime, session.run_id)
    assert row["arguments"] == {"arguments": {"first-name": "Ada", "class": "math"}}  # kept as they came


def test_langchain_injected_state_reaches_the_tool_but_not_the_key(runtime: AgentRuntime) -> None:
    lc_tools = pytest.importorskip("langchain_core.tools")
    from agent_relay.integrations.langchain import durable_tool

    seen: list[Any] = []

    @lc_tools.tool
    def remember(fact: str, state: Annotated[dict, lc_tools.InjectedToolArg]) -> str:
        """Remember a fact (state: injected by the graph, as LangGraph's InjectedState is)."""
        seen.append(state["user"])
        return f"noted for {state['user']}"

    durable = durable_tool(runtime, remember)
    assert list(durable.tool_call_schema.model_json_schema()["properties"]) == ["fact"]
    with runtime.agent_session(name="memory") as session:
        # what a ToolNode sends: the model's arguments plus the injected state
        assert durable.invoke({"fact": "likes tea", "state": {"user": "ada", "step": 1}}) == "noted for ada"
        assert durable.invoke({"fact": "likes tea", "state": {"user": "ada", "step": 2}}) == "noted for ada"
    assert seen == ["ada"]  # another state, the same call: served
    (row,) = calls_of(runtime, session.run_id)
    assert row["arguments"] == {"fact": "likes tea"}


def test_openai_agents_tool_span_is_a_child_of_the_sdks_own_tool_span(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    agents = pytest.importorskip("agents")
    openai = pytest.importorskip("openai")
    openinference = pytest.importorskip("openinference.instrumentation.openai_agents")
    from agent_relay.integrations.openai_agents import durable_tools

    @agents.function_tool
    def book_flight(passenger: str, flight: str) -> str:
        """Book a seat on a flight."""
        return f"PNR-{flight}"

    # The SDK's traces as OpenTelemetry spans (OpenInference's bridge), on the runtime's provider; none
    # exported to OpenAI from a test.
    agents.set_trace_processors([])
    instrumentor = openinference.OpenAIAgentsInstrumentor()
    instrumentor.instrument(tracer_provider=runtime.tracer_provider)
    try:
        with FakeLLMServer(tool_arguments={"passenger": "Ada", "flight": "LH400"}) as llm:
            client = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="local")
            model = agents.OpenAIChatCompletionsModel(model="gpt-4o-mini", openai_client=client)
            agent = agents.Agent(name="travel", model=model, tools=durable_tools(runtime, [book_flight]))

            async def main() -> None:
                async with runtime.agent_session(name="travel"):
                    await agents.Runner.run(agent, "Book LH400 for Ada")

            asyncio.run(main())
    finally:
        instrumentor.uninstrument()
    (span,) = ours(spans)
    by_id = {s.context.span_id: s for s in spans.spans()}
    parent = by_id[span.parent.span_id]
    assert (parent.name, parent.attributes["openinference.span.kind"]) == ("book_flight", "TOOL")
    assert parent.context.trace_id == span.context.trace_id


def test_langchain_tool_span_of_an_instrumentation_is_the_parent_of_ours(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    lc_tools = pytest.importorskip("langchain_core.tools")
    openinference = pytest.importorskip("openinference.instrumentation.langchain")
    from agent_relay.integrations.langchain import durable_tools

    @lc_tools.tool
    def lookup(order: str) -> str:
        """Look up an order."""
        return f"{order}: shipped"

    (durable,) = durable_tools(runtime, [lookup])
    instrumentor = openinference.LangChainInstrumentor()
    instrumentor.instrument(tracer_provider=runtime.tracer_provider)
    try:
        with runtime.agent_session(name="orders"):
            durable.invoke({"type": "tool_call", "name": "lookup", "args": {"order": "A-1"}, "id": "call_1"})
            asyncio.run(
                durable.ainvoke(
                    {"type": "tool_call", "name": "lookup", "args": {"order": "B-2"}, "id": "call_2"}
                )
            )
    finally:
        instrumentor.uninstrument()
    by_id = {s.context.span_id: s for s in spans.spans()}
    parents = [by_id[s.parent.span_id] for s in ours(spans)]
    # the instrumentation's span of the durable tool's run (sync and async), not the session's
    assert [(p.name, p.attributes["openinference.span.kind"]) for p in parents] == [("lookup", "TOOL")] * 2


def test_outside_a_session_the_wrapped_tools_run_as_the_originals(runtime: AgentRuntime) -> None:
    agents = pytest.importorskip("agents")
    lc_tools = pytest.importorskip("langchain_core.tools")
    from agents.tool_context import ToolContext

    from agent_relay.integrations import langchain, openai_agents

    ran: list[str] = []

    @agents.function_tool
    def ping(host: str) -> str:
        """Ping a host."""
        ran.append(f"agents {host}")
        return "pong"

    @lc_tools.tool
    def echo(text: str) -> str:
        """Echo."""
        ran.append(f"langchain {text}")
        return text

    durable_ping = openai_agents.durable_tool(runtime, ping)
    durable_echo = langchain.durable_tool(runtime, echo)
    arguments = json.dumps({"host": "a"})
    context = ToolContext(context=None, tool_name="ping", tool_call_id="c1", tool_arguments=arguments)
    for _ in range(2):  # no run: nothing served, nothing recorded
        assert asyncio.run(durable_ping.on_invoke_tool(context, arguments)) == "pong"
        assert durable_echo.invoke({"text": "hi"}) == "hi"
    assert ran == ["agents a", "langchain hi"] * 2
    with runtime.ledger.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tool_calls)).scalar() == 0


MCP_SERVER = '''
import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("inventory")


@server.tool()
def reserve(item: str, quantity: int) -> str:
    """Reserve stock."""
    with Path(os.environ["RESERVED_LOG"]).open("a") as log:
        log.write(item + "\\n")
    return f"reserved {quantity} x {item}"


server.run()
'''


def test_pydantic_ai_mcp_toolset_of_a_server_process(runtime: AgentRuntime, tmp_path: Any) -> None:
    pydantic_ai = pytest.importorskip("pydantic_ai")
    pytest.importorskip("mcp")
    fastmcp = pytest.importorskip("fastmcp")
    from fastmcp.client.transports import PythonStdioTransport
    from pydantic_ai.mcp import MCPToolset
    from pydantic_ai.models.test import TestModel

    from agent_relay.integrations.pydantic_ai import durable_toolset

    script, reserved = tmp_path / "inventory.py", tmp_path / "reserved.log"
    script.write_text(MCP_SERVER)
    reserved.touch()
    transport = PythonStdioTransport(script, env={**os.environ, "RESERVED_LOG": str(reserved)})
    server = MCPToolset(fastmcp.Client(transport))
    agent = pydantic_ai.Agent(TestModel(), toolsets=[durable_toolset(runtime, server)])

    async def main() -> str:
        async with agent:
            async with runtime.agent_session(name="inventory") as source:
                await agent.run("reserve some stock")
                await agent.run("reserve some stock")  # the same tools/call: served, not sent
            async with runtime.agent_session(name="inventory", replay=True, replay_run_id=source.run_id):
                await agent.run("reserve some stock")  # replayed: not sent either
        return source.run_id

    run_id = asyncio.run(main())
    assert len(reserved.read_text().split()) == 1  # the server's tool ran once
    (row,) = calls_of(runtime, run_id)
    assert (row["tool_name"], list(row["arguments"]), row["status"]) == (
        "reserve",
        ["item", "quantity"],
        "succeeded",
    )
