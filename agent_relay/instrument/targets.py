"""What ``instrument()`` patches: one ``Target`` per SDK method, the ledger names of its calls, the types
their responses decode to, and how a call's request becomes its recorded arguments."""

from __future__ import annotations

import dataclasses
import enum
import importlib
from typing import Any

from ..encoding import encode
from ..errors import ArgumentEncodingError
from ..estimate import ModelCallEstimate
from ..runtime import AgentRuntime
from ..tooling import tool


class Streams(enum.Enum):
    """What a target's stream (``stream=True``, or a ``stream()`` helper) is recorded as."""

    NONE = "none"  # no streams: refused inside a session
    CHUNKS = "chunks"  # the list of its chunks, replayed as the same chunks
    FINAL = "final"  # its final response, replayed as events rebuilt from it


@dataclasses.dataclass(frozen=True)
class Target:
    """One SDK method to patch, the ledger name of its calls and the type its responses decode to."""

    name: str
    provider: str
    module: str
    cls: str
    response_module: str
    response_type: str
    streams: Streams = Streams.NONE
    chunk_type: str | None = None  # Streams.CHUNKS: the type of a stream's chunks, in response_module
    method: str = "create"  # the method patched (``parse``: structured outputs; ``stream``: a helper)

    @property
    def stream_name(self) -> str:
        return f"{self.name}[stream]"

    @property
    def is_async(self) -> bool:
        # The SDKs' async methods are plain functions returning coroutines or managers (a decorator
        # hides the ``async def``), so the class says which is which.
        return self.cls.startswith("Async")


def _twins(name: str, provider: str, module: str, cls: str, *rest: Any, **options: Any) -> tuple[Target, ...]:
    """The sync class's target and its ``Async`` twin's."""
    return tuple(Target(name, provider, module, c, *rest, **options) for c in (cls, f"Async{cls}"))


_CHAT = "openai.resources.chat.completions.completions"
_RESPONSES = "openai.resources.responses.responses"
_MESSAGES = "anthropic.resources.messages.messages"

TARGETS: tuple[Target, ...] = (
    *_twins("openai.chat.completions.create", "openai", _CHAT, "Completions", "openai.types.chat",
            "ChatCompletion", streams=Streams.CHUNKS, chunk_type="ChatCompletionChunk"),
    *_twins("openai.responses.create", "openai", _RESPONSES, "Responses", "openai.types.responses",
            "Response", streams=Streams.FINAL),
    *_twins("anthropic.messages.create", "anthropic", _MESSAGES, "Messages", "anthropic.types", "Message",
            streams=Streams.CHUNKS, chunk_type="RawMessageStreamEvent"),
    *_twins("openai.chat.completions.parse", "openai", _CHAT, "Completions", "openai.types.chat",
            "ParsedChatCompletion", method="parse"),
    *_twins("anthropic.messages.stream", "anthropic", _MESSAGES, "Messages", "anthropic.types", "Message",
            method="stream"),
)  # fmt: skip

APIS = tuple(dict.fromkeys(t.name for t in TARGETS))
"""The calls ``instrument`` can record, by their ledger names."""

# Request options that shape the HTTP exchange, not the model's answer: kept out of the key.
_TRANSPORT_OPTIONS = frozenset({"extra_headers", "extra_query", "timeout"})


def register_specs(runtime: AgentRuntime, target: Target) -> None:
    """The ledger's view of the target's calls: a tool of kind ``llm`` whose output decodes to the SDK's
    response type (and, for streams recorded as chunks, to the list of its chunk type)."""
    try:
        module = importlib.import_module(target.response_module)
    except ImportError:
        return
    response = getattr(module, target.response_type, None)
    estimate = ModelCallEstimate(runtime.prices, target.provider)  # (under a budget: max_tokens, priced)
    specs = [(target.name, response)]
    if target.streams is Streams.FINAL:
        specs.append((target.stream_name, response))
    elif target.streams is Streams.CHUNKS and target.chunk_type is not None:
        chunk = getattr(module, target.chunk_type, None)
        specs.append((target.stream_name, list[chunk] if chunk is not None else None))  # type: ignore[valid-type]

    for name, returns in specs:
        if name in runtime.tools or returns is None:
            continue

        def model_call(**request: Any) -> Any: ...

        model_call.__annotations__ = {"return": returns}
        model_call.__name__ = name
        tool(runtime, name=name, kind="llm", provider=target.provider, cost_estimate=estimate)(model_call)


def recorded_request(target: Target, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request as the call's arguments: JSON, without unset options and transport settings."""
    request = {}
    for name, value in kwargs.items():
        if name in _TRANSPORT_OPTIONS or type(value).__name__ in ("NotGiven", "Omit"):
            continue
        if isinstance(value, type):  # e.g. a Pydantic class given as a response format
            value = f"{value.__module__}.{value.__qualname__}"
        request[name] = encode(
            value,
            root=name,
            error=ArgumentEncodingError,
            tool_name=target.name,
            what=f"{target.name}: request parameter",
            then=" No request was sent.",
        )
    return request
