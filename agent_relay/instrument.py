"""Auto-instrumentation of the official ``openai`` and ``anthropic`` clients.

``agent_relay.instrument(runtime)`` patches, for sync and async clients alike, OpenAI chat completions
(``client.chat.completions.create``), the Responses API (``client.responses.create``) and Anthropic
messages (``client.messages.create``). Inside a session of ``runtime`` each model call is a ledger entry of
kind ``llm``: the request (model, messages, tools, parameters) is its arguments and key, the response is its
output, its usage priced from the price table is its cost, and its span follows the GenAI inference
conventions (``chat <model>``). So a replay returns the recorded response as the SDK's own type without a
request, a budget refuses a call before any request is sent, and a saga unwinds past a model call that
passed the budget. Outside a session — or in a session of another runtime — the clients behave exactly as
before. ``uninstrument()`` restores the clients' own methods.

Streaming (``stream=True``) is not recorded yet: inside a session such a call is refused with a clear
error rather than silently left out of the ledger and the budget.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .calls import Invocation, execute, execute_async
from .context import current_session
from .encoding import encode
from .errors import ArgumentEncodingError, ConfigurationError
from .keys import FORWARD

if TYPE_CHECKING:
    from .runtime import AgentRuntime


@dataclasses.dataclass(frozen=True)
class _Target:
    """One SDK method to patch, the ledger name of its calls and the type its responses decode to."""

    name: str
    provider: str
    module: str
    cls: str
    response_module: str
    response_type: str


_TARGETS = (
    _Target("openai.chat.completions.create", "openai", "openai.resources.chat.completions.completions",
            "Completions", "openai.types.chat", "ChatCompletion"),
    _Target("openai.chat.completions.create", "openai", "openai.resources.chat.completions.completions",
            "AsyncCompletions", "openai.types.chat", "ChatCompletion"),
    _Target("openai.responses.create", "openai", "openai.resources.responses.responses", "Responses",
            "openai.types.responses", "Response"),
    _Target("openai.responses.create", "openai", "openai.resources.responses.responses", "AsyncResponses",
            "openai.types.responses", "Response"),
    _Target("anthropic.messages.create", "anthropic", "anthropic.resources.messages.messages", "Messages",
            "anthropic.types", "Message"),
    _Target("anthropic.messages.create", "anthropic", "anthropic.resources.messages.messages",
            "AsyncMessages", "anthropic.types", "Message"),
)  # fmt: skip

# Request options that shape the HTTP exchange, not the model's answer: kept out of the key.
_TRANSPORT_OPTIONS = frozenset({"extra_headers", "extra_query", "timeout"})

_lock = threading.Lock()
_patched: dict[tuple[str, str], Any] = {}  # (module, class) -> the original ``create``
_runtime: AgentRuntime | None = None


def instrument(runtime: AgentRuntime) -> list[str]:
    """Patch the installed ``openai`` / ``anthropic`` clients to record calls made in ``runtime``'s
    sessions; returns the patched methods. Idempotent for one runtime; a second runtime is an error
    (``uninstrument()`` first). Clients that are not installed are skipped."""
    global _runtime
    with _lock:
        if _runtime is not None and _runtime is not runtime:
            raise ConfigurationError(
                "the LLM clients are instrumented for another runtime; call agent_relay.uninstrument() first."
            )
        _runtime = runtime
        for target in _TARGETS:
            _register_spec(runtime, target)
            if (target.module, target.cls) in _patched:
                continue
            try:
                cls = getattr(importlib.import_module(target.module), target.cls)
            except (ImportError, AttributeError):
                continue  # that SDK (or that API of it) is not installed
            original = cls.__dict__["create"]
            _patched[(target.module, target.cls)] = original
            cls.create = _wrap(original, target)
        return [f"{module}.{cls}.create" for module, cls in _patched]


def uninstrument() -> None:
    """Restore every patched client method to the SDK's own."""
    global _runtime
    with _lock:
        for (module, cls_name), original in _patched.items():
            cls = getattr(importlib.import_module(module), cls_name)
            cls.create = original
        _patched.clear()
        _runtime = None


def _register_spec(runtime: AgentRuntime, target: _Target) -> None:
    if target.name in runtime.tools:
        return
    try:
        response_type = getattr(importlib.import_module(target.response_module), target.response_type)
    except (ImportError, AttributeError):
        return
    from .tooling import tool

    def model_call(**request: Any) -> Any: ...

    model_call.__annotations__ = {"return": response_type}
    model_call.__name__ = target.name
    tool(runtime, name=target.name, kind="llm", provider=target.provider)(model_call)


def _request(target: _Target, kwargs: dict[str, Any]) -> dict[str, Any]:
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


def _invocation(target: _Target, kwargs: dict[str, Any]) -> Invocation | None:
    session = current_session()
    runtime = _runtime
    if session is None or runtime is None or session.runtime is not runtime:
        return None
    if kwargs.get("stream") is True:
        raise ConfigurationError(
            f"{target.name}(stream=True) inside an AgentRelay session is not recorded yet; call it without "
            f"stream=True, or outside the session."
        )
    spec = runtime.tools[target.name]
    return Invocation(spec, session, FORWARD, _request(target, kwargs))


def _wrap(original: Callable[..., Any], target: _Target) -> Callable[..., Any]:
    # The SDKs' async ``create`` methods are plain functions returning coroutines (a decorator hides the
    # ``async def``), so the class says which is which.
    if target.cls.startswith("Async") or inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def create_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = _invocation(target, kwargs)
            if call is None:
                return await original(self, *args, **kwargs)
            return await execute_async(call, original, (self, *args), kwargs)

        create_async.__agent_relay_original__ = original  # type: ignore[attr-defined]
        return create_async

    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _invocation(target, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        return execute(call, original, (self, *args), kwargs)

    create.__agent_relay_original__ = original  # type: ignore[attr-defined]
    return create
