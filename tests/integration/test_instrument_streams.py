"""Stream helpers of the real openai and anthropic clients, instrumented, against the local fake server:
Anthropic's ``messages.stream()``, Responses API streams (``responses.create(stream=True)`` and the
``responses.stream()`` helper) and the chat ``chat.completions.stream()`` helper, sync and async. Each is
one model call (its final message or response; usage counted once) and replays without a request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.resources.messages.messages import AsyncMessages, Messages
from openai.resources.chat.completions.completions import Completions
from openai.resources.responses.responses import Responses

import agent_relay
from agent_relay import AgentRuntime, BudgetExceededError, BudgetReservationError
from agent_relay.testing import FakeLLMServer
from agent_relay.usage import TokenUsage
from tests.support import calls_of, run_row

ASK = [{"role": "user", "content": "Email ada that the build is green."}]
CLAUDE = "claude-3-5-sonnet-20241022"
RESPONSE_TOOLS = [{"type": "function", "name": "send_email", "parameters": {"type": "object"}}]


@pytest.fixture
def llm() -> Iterator[FakeLLMServer]:
    with FakeLLMServer(tool_arguments={"to": "ada@example.com"}) as server:
        yield server


def live_then_replay(runtime: AgentRuntime, llm: FakeLLMServer, agent: Any) -> tuple[Any, Any, str, str]:
    """Run ``agent`` in a session, then in a replay of it; assert the replay sent no request."""
    with runtime.agent_session(name="streams") as live:
        recorded = agent()
    sent = len(llm.requests)
    assert sent > 0
    with runtime.agent_session(name="streams", replay=True, replay_run_id=live.run_id) as replay:
        replayed = agent()
    assert len(llm.requests) == sent, "the replay sent a request"
    return recorded, replayed, live.run_id, replay.run_id


def assert_one_priced_call(
    runtime: AgentRuntime, run_id: str, name: str, usage: TokenUsage
) -> dict[str, Any]:
    (row,) = calls_of(runtime, run_id)
    assert (row["tool_name"], row["status"]) == (name, "succeeded")
    assert (row["input_tokens"], row["output_tokens"]) == (usage.input_tokens, usage.output_tokens)
    cost = runtime.prices.cost(usage)
    assert cost and row["cost_usd"] == cost and run_row(runtime, run_id)["cost_usd"] == cost  # once
    return row


def test_anthropic_message_stream_is_one_call_and_replays_as_a_message_stream(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = anthropic.Anthropic(base_url=llm.anthropic_url, api_key="test")

    def agent() -> tuple[str, Any, list[str]]:
        with client.messages.stream(model=CLAUDE, max_tokens=50, messages=ASK) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        with client.messages.stream(model=CLAUDE, max_tokens=50, messages=[*ASK, *ASK]) as stream:
            types = [event.type for event in stream]
        return text, final, types

    live, replayed, live_run, replay_run = live_then_replay(instrumented, llm, agent)
    text, final, types = live
    assert text == final.content[0].text and text.startswith("Done")
    assert replayed[:2] == (text, final) and type(replayed[1]) is type(final)
    assert (types[0], types[-1]) == ("message_start", "message_stop") and "text" in replayed[2]
    rows = calls_of(instrumented, live_run)
    assert [(r["tool_name"], r["status"]) for r in rows] == [("anthropic.messages.stream", "succeeded")] * 2
    assert rows[0]["output"]["id"] == final.id
    usage = TokenUsage(CLAUDE, "anthropic", final.usage.input_tokens, final.usage.output_tokens)
    assert (rows[0]["input_tokens"], rows[0]["output_tokens"], rows[0]["cost_usd"]) == (
        usage.input_tokens, 20, instrumented.prices.cost(usage)
    )  # fmt: skip
    assert run_row(instrumented, replay_run)["cost_usd"] == run_row(instrumented, live_run)["cost_usd"]
    assert [r["origin"] for r in calls_of(instrumented, replay_run)] == ["replayed"] * 2


def test_async_anthropic_message_stream(instrumented: AgentRuntime, llm: FakeLLMServer) -> None:
    def agent() -> tuple[str, Any]:
        async def ask() -> tuple[str, Any]:
            client = anthropic.AsyncAnthropic(base_url=llm.anthropic_url, api_key="test")
            async with client.messages.stream(model=CLAUDE, max_tokens=50, messages=ASK) as stream:
                text = "".join([t async for t in stream.text_stream])
                return text, await stream.get_final_message()

        return asyncio.run(ask())

    (text, final), again, live_run, _ = live_then_replay(instrumented, llm, agent)
    assert text and again == (text, final)
    usage = TokenUsage(CLAUDE, "anthropic", final.usage.input_tokens, final.usage.output_tokens)
    assert_one_priced_call(instrumented, live_run, "anthropic.messages.stream", usage)


def test_responses_create_stream_is_recorded_as_its_final_response(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")

    def agent() -> tuple[str, Any]:
        events = list(client.responses.create(model="gpt-4o", input="Summarise the log.", stream=True))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        (completed,) = [e.response for e in events if e.type == "response.completed"]
        return text, completed

    (text, final), (text_again, final_again), live_run, _ = live_then_replay(instrumented, llm, agent)
    assert text == final.output_text and text_again == text and final_again == final
    row = assert_one_priced_call(
        instrumented, live_run, "openai.responses.create[stream]",
        TokenUsage("gpt-4o", "openai", final.usage.input_tokens, final.usage.output_tokens),
    )  # fmt: skip
    assert row["output"]["id"] == final.id and row["arguments"]["stream"] is True


def test_async_responses_create_stream(instrumented: AgentRuntime, llm: FakeLLMServer) -> None:
    def agent() -> Any:
        async def ask() -> Any:
            client = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="test")
            stream = await client.responses.create(model="gpt-4o", input="Summarise.", stream=True)
            return [e async for e in stream][-1].response

        return asyncio.run(ask())

    final, again, live_run, _ = live_then_replay(instrumented, llm, agent)
    assert again == final and final.output_text
    usage = TokenUsage("gpt-4o", "openai", final.usage.input_tokens, final.usage.output_tokens)
    assert_one_priced_call(instrumented, live_run, "openai.responses.create[stream]", usage)


def test_responses_stream_helper_replays_text_tool_calls_and_final_response(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")

    def agent() -> tuple[str, Any, Any]:
        with client.responses.stream(model="gpt-4o", input="Summarise the log.") as stream:
            text = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
            final = stream.get_final_response()
        with client.responses.stream(model="gpt-4o", input="Email ada.", tools=RESPONSE_TOOLS) as stream:
            tool_call = stream.get_final_response()
        return text, final, tool_call

    live, replayed, live_run, _ = live_then_replay(instrumented, llm, agent)
    text, final, tool_call = live
    assert text == final.output_text and replayed == live
    (call,) = replayed[2].output
    assert (call.type, call.name, call.arguments) == (
        "function_call",
        "send_email",
        '{"to": "ada@example.com"}',
    )
    rows = calls_of(instrumented, live_run)
    assert [(r["tool_name"], r["status"]) for r in rows] == [
        ("openai.responses.create[stream]", "succeeded")
    ] * 2
    assert [r["output"]["id"] for r in rows] == [final.id, tool_call.id]
    assert all(r["cost_usd"] > 0 for r in rows)


def test_async_responses_stream_helper(instrumented: AgentRuntime, llm: FakeLLMServer) -> None:
    def agent() -> Any:
        async def ask() -> Any:
            client = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="test")
            async with client.responses.stream(model="gpt-4o", input="Summarise.") as stream:
                return await stream.get_final_response()

        return asyncio.run(ask())

    final, again, live_run, _ = live_then_replay(instrumented, llm, agent)
    assert again == final and final.output_text
    usage = TokenUsage("gpt-4o", "openai", final.usage.input_tokens, final.usage.output_tokens)
    assert_one_priced_call(instrumented, live_run, "openai.responses.create[stream]", usage)


def test_chat_completions_stream_helper_replays(instrumented: AgentRuntime, llm: FakeLLMServer) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")

    def agent() -> Any:
        with client.chat.completions.stream(
            model="gpt-4o", messages=ASK, stream_options={"include_usage": True}
        ) as stream:
            return stream.get_final_completion()

    final, again, live_run, _ = live_then_replay(instrumented, llm, agent)
    assert again == final and final.choices[0].message.content.startswith("Done")
    usage = TokenUsage("gpt-4o", "openai", final.usage.prompt_tokens, final.usage.completion_tokens)
    assert_one_priced_call(instrumented, live_run, "openai.chat.completions.create[stream]", usage)


def test_stream_helpers_closed_half_way_are_recorded_failed(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    claude = anthropic.Anthropic(base_url=llm.anthropic_url, api_key="test")
    oai = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    with instrumented.agent_session(name="half") as session:
        with claude.messages.stream(model=CLAUDE, max_tokens=50, messages=ASK) as stream:
            next(iter(stream))  # the agent stops reading after the first event
        with oai.responses.stream(model="gpt-4o", input="Summarise.") as responses:
            next(iter(responses))
    rows = calls_of(instrumented, session.run_id)
    assert [(r["tool_name"], r["status"]) for r in rows] == [
        ("anthropic.messages.stream", "failed"),
        ("openai.responses.create[stream]", "failed"),
    ]
    assert all("closed before its end" in r["error_message"] for r in rows)
    assert len(llm.requests) == 2  # every request sent was recorded


def test_a_stream_whose_usage_passes_the_budget_is_recorded_then_stops_the_run(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    with (  # no max_tokens: what it costs is known when it ends
        pytest.raises(BudgetExceededError) as caught,
        instrumented.agent_session(name="capped", budget_limit=0.0001) as session,
    ):
        stream = client.chat.completions.create(
            model="gpt-4o", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
        assert list(stream)
    assert not isinstance(caught.value, BudgetReservationError)
    (row,) = calls_of(instrumented, session.run_id)
    assert row["status"] == "succeeded" and row["cost_usd"] > 0  # the call that passed it is recorded


def test_a_stream_whose_max_tokens_could_pass_the_budget_is_refused_before_its_request(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = anthropic.Anthropic(base_url=llm.anthropic_url, api_key="test")
    with (
        pytest.raises(BudgetReservationError) as caught,
        instrumented.agent_session(name="capped", budget_limit=0.0001) as session,
        client.messages.stream(model=CLAUDE, max_tokens=50, messages=ASK) as stream,
    ):
        stream.get_final_message()
    assert caught.value.tool_name == "anthropic.messages.stream"
    assert llm.requests == [] and calls_of(instrumented, session.run_id) == []


def test_stream_helpers_can_be_selected_alone(runtime: AgentRuntime, llm: FakeLLMServer) -> None:
    originals = {cls: cls.__dict__["create"] for cls in (Messages, Completions, Responses)}
    helpers = {cls: cls.__dict__["stream"] for cls in (Messages, AsyncMessages)}
    try:
        patched = agent_relay.instrument(runtime, apis=["anthropic.messages.stream"])
        assert sorted(patched) == sorted(
            f"{c.__module__}.{c.__name__}.stream" for c in (Messages, AsyncMessages)
        )
        assert all(cls.__dict__["create"] is original for cls, original in originals.items())
        client = anthropic.Anthropic(base_url=llm.anthropic_url, api_key="test")
        with runtime.agent_session(name="only-streams") as session:
            client.messages.create(model=CLAUDE, max_tokens=50, messages=ASK)  # not selected: not recorded
            with client.messages.stream(model=CLAUDE, max_tokens=50, messages=ASK) as stream:
                stream.until_done()
        assert [r["tool_name"] for r in calls_of(runtime, session.run_id)] == ["anthropic.messages.stream"]
    finally:
        agent_relay.uninstrument()
    assert all(cls.__dict__["stream"] is original for cls, original in helpers.items())


def test_with_streaming_response_is_recorded_when_parsed_and_replays(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")

    def agent() -> tuple[Any, Any]:
        with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=ASK) as raw:
            reply = raw.parse()
        with client.responses.with_streaming_response.create(model="gpt-4o", input="Hi.", stream=True) as raw:
            final = [event for event in raw.parse()][-1].response
        return reply, final

    live, replayed, live_run, _ = live_then_replay(instrumented, llm, agent)
    assert replayed == live and live[1].output_text
    rows = calls_of(instrumented, live_run)
    assert [(r["tool_name"], r["status"], r["output"]["id"]) for r in rows] == [
        ("openai.chat.completions.create", "succeeded", live[0].id),
        ("openai.responses.create[stream]", "succeeded", live[1].id),
    ]
    with (
        instrumented.agent_session(name="unread") as session,
        client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=[*ASK, *ASK]),
    ):
        pass  # closed without parse(): the request was sent, so the call is recorded, failed
    (row,) = calls_of(instrumented, session.run_id)
    assert row["status"] == "failed" and "closed unparsed" in row["error_message"]


def test_with_raw_response_of_a_stream_records_the_stream(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")

    def agent() -> list[str]:
        raw = client.responses.with_raw_response.create(model="gpt-4o", input="Hi.", stream=True)
        return [event.type for event in raw.parse()]

    live, replayed, live_run, _ = live_then_replay(instrumented, llm, agent)
    assert (live[-1], replayed[-1]) == ("response.completed", "response.completed")
    ((name, status),) = [(r["tool_name"], r["status"]) for r in calls_of(instrumented, live_run)]
    assert (name, status) == ("openai.responses.create[stream]", "succeeded")


def test_agents_sdk_run_streamed_is_recorded_and_replays_without_a_request(
    instrumented: AgentRuntime, llm: FakeLLMServer
) -> None:
    agents = pytest.importorskip("agents")

    @agents.function_tool
    def send_email(to: str) -> str:
        return f"sent to {to}"

    client = openai.AsyncOpenAI(base_url=llm.openai_url, api_key="test")
    model = agents.OpenAIResponsesModel("gpt-4o", client)  # the SDK's default: Responses API streams
    agent = agents.Agent(name="mailer", instructions="Send mail.", tools=[send_email], model=model)

    def run() -> tuple[str, int]:
        async def streamed() -> tuple[str, int]:
            quiet = agents.RunConfig(tracing_disabled=True)  # (no export to OpenAI's trace backend)
            result = agents.Runner.run_streamed(agent, "Email ada.", run_config=quiet)
            async for _ in result.stream_events():
                pass
            return result.final_output, result.context_wrapper.usage.total_tokens

        return asyncio.run(streamed())

    live, replayed, live_run, replay_run = live_then_replay(instrumented, llm, run)
    assert replayed == live and live[0].startswith("Answer")  # same answer, same usage the SDK counted
    rows = calls_of(instrumented, live_run)
    assert [r["status"] for r in rows] == ["succeeded", "succeeded"]  # the tool call, then the answer
    assert sum(r["input_tokens"] + r["output_tokens"] for r in rows) == live[1]
    assert run_row(instrumented, replay_run)["cost_usd"] == run_row(instrumented, live_run)["cost_usd"] > 0
