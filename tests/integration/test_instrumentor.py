"""``AgentRelayInstrumentor`` called by hand, as OpenTelemetry instrumentors are: for one runtime, or for
every runtime created while it is on; ``uninstrument()`` restores the clients and the runtime class."""

from __future__ import annotations

import openai
import pytest
from openai.resources.chat.completions.completions import Completions

from agent_relay import AgentRuntime, ConfigurationError
from agent_relay.testing import FakeLLMServer
from tests.support import calls_of

pytest.importorskip("opentelemetry.instrumentation.instrumentor")

from agent_relay.instrument.instrumentor import AgentRelayInstrumentor

ASK = [{"role": "user", "content": "hi"}]


def ask(runtime: AgentRuntime, llm: FakeLLMServer) -> list[str]:
    client = openai.OpenAI(base_url=llm.openai_url, api_key="test")
    with runtime.agent_session(name="ask") as session:
        client.chat.completions.create(model="gpt-4o-mini", messages=ASK)
    return [row["tool_name"] for row in calls_of(runtime, session.run_id)]


def test_every_runtime_created_while_it_is_on_is_instrumented(database_url: str) -> None:
    instrumentor = AgentRelayInstrumentor()
    original_create, original_init = Completions.__dict__["create"], AgentRuntime.__init__
    runtimes = [AgentRuntime(database_url)]  # created before: left alone
    instrumentor.instrument(apis=["openai.chat"])
    try:
        runtimes += [AgentRuntime(database_url), AgentRuntime("sqlite://")]
        with FakeLLMServer() as llm:
            before, first, second = (ask(runtime, llm) for runtime in runtimes)
        assert first == second == ["openai.chat.completions.create"] and before == []
    finally:
        instrumentor.uninstrument()
        for runtime in runtimes:
            runtime.shutdown()
    assert Completions.__dict__["create"] is original_create and AgentRuntime.__init__ is original_init


def test_one_runtime_by_hand_and_bad_api_names_refused_at_once(runtime: AgentRuntime) -> None:
    instrumentor = AgentRelayInstrumentor()
    with pytest.raises(ConfigurationError, match=r"'openai\.chats'"):
        instrumentor.instrument(apis=["openai.chats"])
    assert not instrumentor.is_instrumented_by_opentelemetry
    instrumentor.instrument(runtime=runtime)
    try:
        with FakeLLMServer() as llm:
            assert ask(runtime, llm) == ["openai.chat.completions.create"]
    finally:
        instrumentor.uninstrument()
