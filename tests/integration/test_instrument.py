"""The real openai and anthropic clients, instrumented, against a local server speaking their wire formats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from anthropic.resources.messages.messages import AsyncMessages, Messages
from openai.resources.chat.completions.completions import AsyncCompletions, Completions
from openai.resources.responses.responses import AsyncResponses, Responses

import agent_relay
from agent_relay import AgentRuntime, BudgetExceededError, ConfigurationError, tool
from agent_relay import semconv as sc
from agent_relay.testing import FakeLLMServer, SpanCapture
from agent_relay.usage import TokenUsage
from tests.support import calls_of, run_row

ASK = [{"role": "user", "content": "Email ada that the build is green."}]
TOOLS = [{"type": "function", "function": {"name": "send_email", "parameters": {"type": "object"}}}]


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(tool_arguments={"to": "ada@example.com", "subject": "build"}) as server:
        yield server


def test_chat_completion_is_recorded_priced_and_traced(
    instrumented: AgentRuntime, spans: SpanCapture, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    with instrumented.agent_session(name="chat") as session:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS, temperature=0)
    assert reply.choices[0].message.tool_calls[0].function.name == "send_email"
    (row,) = calls_of(instrumented, session.run_id)
    assert row["tool_name"] == "openai.chat.completions.create" and row["status"] == "succeeded"
    assert row["arguments"] == {"model": "gpt-4o-mini", "messages": ASK, "tools": TOOLS, "temperature": 0}
    assert row["output"]["id"] == reply.id and row["model"] == "gpt-4o-mini"
    prompt = reply.usage.prompt_tokens
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, 20)
    expected = instrumented.prices.cost(TokenUsage("gpt-4o-mini", "openai", prompt, 20))
    assert expected and row["cost_usd"] == expected and session.cost_usd == expected
    (span,) = [s for s in spans.spans() if s.name == "chat gpt-4o-mini"]
    attrs = span.attributes
    assert attrs[sc.GEN_AI_OPERATION_NAME] == "chat" and attrs[sc.GEN_AI_PROVIDER_NAME] == "openai"
    assert attrs[sc.GEN_AI_REQUEST_MODEL] == "gpt-4o-mini" and attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] == prompt
    assert row["span_id"] == format(span.context.span_id, "016x")


def test_replay_returns_equal_sdk_objects_without_a_request(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    oai = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    claude = anthropic.Anthropic(base_url=llm.anthropic_url, api_key="test")

    def agent() -> tuple:
        chat = oai.chat.completions.create(model="gpt-4o", messages=ASK, tools=TOOLS)
        resp = oai.responses.create(model="gpt-4o", input="Summarise the build log.")
        msg = claude.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=200, messages=ASK)
        return chat, resp, msg

    with instrumented.agent_session(name="models") as source:
        recorded = agent()
    sent = len(llm.requests)
    assert sent == 3
    with instrumented.agent_session(name="models", replay=True, replay_run_id=source.run_id) as replay:
        replayed = agent()
    assert len(llm.requests) == sent  # no request reached the server
    for live, again in zip(recorded, replayed, strict=True):
        assert type(again) is type(live) and again == live
    assert replayed[0].choices[0].message.tool_calls[0].function.arguments == (
        recorded[0].choices[0].message.tool_calls[0].function.arguments
    )
    assert (
        run_row(instrumented, replay.run_id)["cost_usd"] == run_row(instrumented, source.run_id)["cost_usd"]
    )


def test_async_clients_are_recorded_too(instrumented: AgentRuntime, llm: FakeLLMServer) -> None:
    async def agent() -> tuple:
        oai = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="test")
        claude = anthropic.AsyncAnthropic(base_url=llm.anthropic_url, api_key="test")
        async with instrumented.agent_session(name="async-models") as session:
            chat, msg = await asyncio.gather(
                oai.chat.completions.create(model="gpt-4o", messages=ASK),
                claude.messages.create(model="claude-3-5-sonnet-20241022", max_tokens=50, messages=ASK),
            )
        return session, chat, msg

    session, chat, msg = asyncio.run(agent())
    rows = {r["tool_name"]: r for r in calls_of(instrumented, session.run_id)}
    assert rows["openai.chat.completions.create"]["output"]["id"] == chat.id
    assert rows["anthropic.messages.create"]["output"]["id"] == msg.id
    assert all(r["cost_usd"] > 0 for r in rows.values())


def test_outside_a_session_the_clients_behave_as_before(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    reply = client.chat.completions.create(model="gpt-4o", messages=ASK)
    assert reply.choices[0].message.content.startswith("Done") and len(llm.requests) == 1
    with instrumented.ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM tool_calls").scalar() == 0


def test_a_budget_stops_the_agent_loop_at_the_model_call_and_unwinds(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    sent: list[str] = []
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")

    @tool(instrumented, compensation="recall_email")
    def send_email(to: str, subject: str) -> str:
        sent.append(to)
        return "msg-1"

    @tool(instrumented)
    def recall_email(to: str, subject: str) -> None:
        sent.append(f"recalled {to}")

    def agent_loop() -> None:
        messages: list = list(ASK)
        for _ in range(10):
            reply = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
            message = reply.choices[0].message
            messages.append(message.model_dump(exclude_none=True))
            if not message.tool_calls:
                messages.append({"role": "user", "content": "And again, please."})
                continue
            for call in message.tool_calls:
                result = send_email(**json.loads(call.function.arguments))
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})

    one_call = instrumented.prices.cost(TokenUsage("gpt-4o", "openai", 30, 20))
    assert one_call is not None
    with (
        pytest.raises(BudgetExceededError) as caught,
        instrumented.agent_session(name="loop", budget_limit=one_call * Decimal("1.5")) as session,
    ):
        agent_loop()
    assert len(llm.requests) == 2  # the second model call passed the budget; no third request was sent
    assert caught.value.tool_name == "openai.chat.completions.create"
    assert sent == ["ada@example.com", "recalled ada@example.com"]
    assert run_row(instrumented, session.run_id)["status"] == "compensated"


def test_usage_of_other_instrumentations_is_charged_once(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    other = instrumented.tracer_provider.get_tracer("openinference.instrumentation.openai")
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    usage = {
        sc.GEN_AI_REQUEST_MODEL: "gpt-4o",
        sc.GEN_AI_SYSTEM: "openai",
        sc.GEN_AI_USAGE_INPUT_TOKENS: 1000,
        sc.GEN_AI_USAGE_OUTPUT_TOKENS: 100,
    }
    with instrumented.agent_session(name="mixed") as session:
        other.start_span("ChatCompletion", attributes=usage).end()  # a model call only the other saw
        after_foreign = session.cost_usd
        with other.start_as_current_span("ChatCompletion") as outer:  # wraps a call AgentRelay records
            reply = client.chat.completions.create(model="gpt-4o", messages=ASK)
            outer.set_attributes(usage)
    foreign = instrumented.prices.cost(TokenUsage("gpt-4o", "openai", 1000, 100))
    ours = instrumented.prices.cost(TokenUsage("gpt-4o", "openai", reply.usage.prompt_tokens, 20))
    assert after_foreign == foreign
    assert session.cost_usd == foreign + ours  # the wrapping span was not counted again
    assert session.input_tokens == 1000 + reply.usage.prompt_tokens


def test_streams_are_recorded_and_replay_as_the_same_chunks(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    oai = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    claude = anthropic.Anthropic(base_url=llm.anthropic_url, api_key="test")

    def agent() -> tuple[list, list]:
        chunks = list(
            oai.chat.completions.create(
                model="gpt-4o", messages=ASK, stream=True, stream_options={"include_usage": True}
            )
        )
        with claude.messages.create(
            model="claude-3-5-sonnet-20241022", max_tokens=50, messages=ASK, stream=True
        ) as stream:
            events = list(stream)
        return chunks, events

    with instrumented.agent_session(name="streams") as source:
        live = agent()
    sent = len(llm.requests)
    with instrumented.agent_session(name="streams", replay=True, replay_run_id=source.run_id):
        again = agent()
    assert len(llm.requests) == sent == 2
    assert again == live and [type(c) for c in again[0]] == [type(c) for c in live[0]]
    types = [e.type for e in again[1]]
    assert (types[0], types[-1]) == ("message_start", "message_stop")
    rows = {r["tool_name"]: r for r in calls_of(instrumented, source.run_id)}
    chat = rows["openai.chat.completions.create[stream]"]
    assert chat["status"] == "succeeded" and len(chat["output"]) == len(live[0])
    assert chat["input_tokens"] == live[0][-1].usage.prompt_tokens and chat["cost_usd"] > 0
    assert rows["anthropic.messages.create[stream]"]["output_tokens"] == 20


def test_async_stream_without_usage_is_unpriced_and_a_closed_stream_failed(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    async def agent() -> str:
        oai = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="test")
        async with instrumented.agent_session(name="async-stream") as session:
            stream = await oai.chat.completions.create(model="gpt-4o", messages=ASK, stream=True)
            assert [c async for c in stream]
            partial = await oai.chat.completions.create(model="gpt-4o", messages=[*ASK, ASK[0]], stream=True)
            await partial.__anext__()
            await partial.close()  # the agent stops reading half-way
        return session.run_id

    with pytest.warns(agent_relay.UnpricedUsageWarning, match="gpt-4o"):
        run_id = asyncio.run(agent())
    full, partial = calls_of(instrumented, run_id)
    assert full["status"] == "succeeded" and full["cost_unknown"] is True
    assert partial["status"] == "failed" and "closed before its end" in partial["error_message"]


def test_uninstrument_restores_the_clients_exactly(runtime: AgentRuntime) -> None:
    methods = [(cls, "create") for cls in (Completions, AsyncCompletions, Responses, AsyncResponses, Messages,
               AsyncMessages)] + [(Completions, "parse"), (AsyncCompletions, "parse"), (Messages, "stream"),
               (AsyncMessages, "stream")]  # fmt: skip
    originals = [cls.__dict__[name] for cls, name in methods]
    try:
        patched = agent_relay.instrument(runtime)
        assert len(patched) == len(methods)
        assert all(
            cls.__dict__[name] is not original
            for (cls, name), original in zip(methods, originals, strict=True)
        )
    finally:
        agent_relay.uninstrument()
    assert all(
        cls.__dict__[name] is original for (cls, name), original in zip(methods, originals, strict=True)
    )


def test_inference_spans_follow_the_conventions_live_and_replayed(
    instrumented: AgentRuntime, spans: SpanCapture, llm: FakeLLMServer
) -> None:
    from opentelemetry.trace import SpanKind

    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    with instrumented.agent_session(name="chat") as session:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS)
    with instrumented.agent_session(name="chat", replay=True, replay_run_id=session.run_id):
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK, tools=TOOLS)
    live, replayed = [s for s in spans.spans() if s.name == "chat gpt-4o-mini"]
    for span in (live, replayed):
        attrs = span.attributes or {}
        assert span.kind is SpanKind.CLIENT  # a request to the model's service, as openai-v2 marks it
        assert attrs[sc.GEN_AI_RESPONSE_ID] == reply.id and attrs[sc.GEN_AI_RESPONSE_MODEL] == reply.model
        assert list(attrs[sc.GEN_AI_RESPONSE_FINISH_REASONS]) == [reply.choices[0].finish_reason]
        assert attrs[sc.GEN_AI_USAGE_COST] == attrs[sc.COST_USD] > 0  # the name dashboards read, too
    tool_spans = [s for s in spans.spans() if s.name.startswith("execute_tool")]
    assert all(s.kind is SpanKind.INTERNAL for s in tool_spans)


def test_a_replay_wrapped_by_another_instrumentation_is_not_charged_twice(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    other = instrumented.tracer_provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")

    def ask() -> None:
        with other.start_as_current_span("chat gpt-4o") as outer:  # as openai-v2 or pydantic-ai wrap it
            reply = client.chat.completions.create(model="gpt-4o", messages=ASK)
            outer.set_attributes(
                {sc.GEN_AI_REQUEST_MODEL: "gpt-4o", sc.GEN_AI_USAGE_INPUT_TOKENS: reply.usage.prompt_tokens,
                 sc.GEN_AI_USAGE_OUTPUT_TOKENS: 20}
            )  # fmt: skip

    with instrumented.agent_session(name="ask", budget_limit=1) as live:
        ask()
    with instrumented.agent_session(name="ask", replay=True, replay_run_id=live.run_id) as replay:
        ask()
    assert replay.cost_usd == live.cost_usd > 0  # the recorded cost, once: not again for the wrapping span
    assert (replay.input_tokens, replay.output_tokens) == (live.input_tokens, live.output_tokens)
    assert len(llm.requests) == 1


def test_with_raw_response_is_recorded_as_its_parsed_response_and_replays(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    aclient = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="test")

    def ask() -> Any:  # what LangChain's ChatOpenAI does
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=ASK)
        return raw.headers, raw.parse()

    async def ask_async() -> Any:
        raw = await aclient.chat.completions.with_raw_response.create(model="gpt-4o", messages=ASK)
        return raw.parse()

    with instrumented.agent_session(name="raw") as live:
        headers, reply = ask()
        async_reply = asyncio.run(ask_async())
    assert "content-type" in {k.lower() for k in headers}  # the real HTTP response, live
    rows = calls_of(instrumented, live.run_id)
    assert [(r["status"], r["output"]["id"]) for r in rows] == [
        ("succeeded", reply.id),
        ("succeeded", async_reply.id),
    ]
    assert live.cost_usd > 0
    with instrumented.agent_session(name="raw", replay=True, replay_run_id=live.run_id) as replay:
        _, replayed = ask()
        replayed_async = asyncio.run(ask_async())
    assert replayed == reply and replayed_async == async_reply and len(llm.requests) == 2
    assert replay.cost_usd == live.cost_usd


def test_structured_outputs_parse_is_recorded_and_replays_as_the_model(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        degrees: int

    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    aclient = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="test")

    def ask() -> Any:
        sync = client.chat.completions.parse(model="gpt-4o-mini", messages=ASK, response_format=Weather)
        async_ = asyncio.run(
            aclient.chat.completions.parse(model="gpt-4o", messages=ASK, response_format=Weather)
        )
        return sync.choices[0].message.parsed, async_.choices[0].message.parsed

    with instrumented.agent_session(name="parse") as live:
        recorded = ask()
    assert all(isinstance(p, Weather) for p in recorded)
    rows = calls_of(instrumented, live.run_id)
    assert [(r["tool_name"], r["status"]) for r in rows] == [
        ("openai.chat.completions.parse", "succeeded")
    ] * 2
    assert rows[0]["arguments"]["response_format"].endswith("Weather")  # the class, by name, in the key
    with instrumented.agent_session(name="parse", replay=True, replay_run_id=live.run_id):
        replayed = ask()
    assert replayed == recorded and all(isinstance(p, Weather) for p in replayed)
    assert len(llm.requests) == 2  # the replay sent none


def test_instrument_can_be_limited_to_some_apis(runtime: AgentRuntime, llm: FakeLLMServer) -> None:
    original = Completions.__dict__["create"]
    with pytest.raises(
        ConfigurationError, match=r"'openai\.chat\.completion'.*openai\.chat\.completions\.create"
    ):
        agent_relay.instrument(runtime, apis=["openai.chat.completion"])  # (a typo: no such call)
    try:
        patched = agent_relay.instrument(runtime, apis=["anthropic", "openai.responses"])
        assert all(".messages." in p or ".responses." in p for p in patched) and len(patched) == 6
        assert Completions.__dict__["create"] is original  # chat completions left alone
        client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
        with runtime.agent_session(name="partial") as session:
            client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
        assert calls_of(runtime, session.run_id) == []  # not instrumented: not recorded
    finally:
        agent_relay.uninstrument()
