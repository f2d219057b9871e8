"""Auto-instrumentation of the official ``openai`` and ``anthropic`` clients.

``agent_relay.instrument(runtime)`` patches, for sync and async clients alike, OpenAI chat completions
(``client.chat.completions.create`` and ``parse``), the Responses API (``client.responses.create``) and
Anthropic messages (``client.messages.create`` and the ``messages.stream()`` helper). Inside a session of
``runtime`` each model call is a ledger entry of kind ``llm``: the request (model, messages, tools,
parameters) is its arguments and key, the response is its output, its usage priced from the price table is
its cost, and its span follows the GenAI inference conventions (``chat <model>``). So a replay returns the
recorded response as the SDK's own type without a request, a budget refuses a call before any request is
sent, and a saga unwinds past a model call that passed the budget. Outside a session — or in a session of
another runtime — the clients behave exactly as before. ``uninstrument()`` restores the clients' own
methods.

Streams are recorded when they have been read to their end; a stream closed before its end is recorded as
failed. Chat completion and ``messages.create`` streams (``stream=True``) are recorded as the list of
their chunks and replay as the same chunks; their cost comes from the usage the stream reports (ask OpenAI
for it with ``stream_options={"include_usage": True}``; without it the call is unpriced). Responses API
streams (``responses.create(stream=True)``, and the ``responses.stream()`` helper, which the SDK builds on
it) and Anthropic's ``messages.stream()`` are recorded as their final response or message (usage counted
once) and replay as the events rebuilt from it (``agent_relay.instrument.events`` says which), read through
the SDK's own stream classes. The chat ``chat.completions.stream()`` helper is built on ``create`` and is
recorded as its chunks. ``with_raw_response`` and ``with_streaming_response`` (what LangChain's
``ChatOpenAI`` and the OpenAI Agents SDK call) are recorded as the response, or the stream, ``parse()``
gives, and served behind the same wrapper (``agent_relay.instrument.raw``).
"""

from .patch import instrument, uninstrument
from .raw import ReplayedRawResponse
from .streams import (
    RecordingAsyncMessageStream,
    RecordingAsyncStream,
    RecordingMessageStream,
    RecordingStream,
    ReplayedAsyncStream,
    ReplayedStream,
    StreamClosedError,
)
from .targets import APIS

__all__ = [
    "APIS",
    "RecordingAsyncMessageStream",
    "RecordingAsyncStream",
    "RecordingMessageStream",
    "RecordingStream",
    "ReplayedAsyncStream",
    "ReplayedRawResponse",
    "ReplayedStream",
    "StreamClosedError",
    "instrument",
    "uninstrument",
]
