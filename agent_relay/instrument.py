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

Streams (``stream=True``) of chat completions and Anthropic messages are recorded when they have been
read to their end, as the list of their chunks, and replay as a stream of the same chunks; their cost
comes from the usage the stream reports (ask OpenAI for it with ``stream_options={"include_usage":
True}``; without it the call is unpriced). A stream closed before its end is recorded as failed. Streams
of the Responses API are not recorded yet and are refused inside a session.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import threading
from collections.abc import Callable, Iterable
from typing import Any

from .calls import Invocation
from .encoding import encode
from .errors import ArgumentEncodingError, ConfigurationError
from .execute import execute, execute_async
from .run import current_run
from .runtime import AgentRuntime
from .states import Phase
from .tooling import tool


@dataclasses.dataclass(frozen=True)
class _Target:
    """One SDK method to patch, the ledger name of its calls and the type its responses decode to."""

    name: str
    provider: str
    module: str
    cls: str
    response_module: str
    response_type: str
    stream_type: str | None = None  # the type of a stream's chunks, in response_module
    method: str = "create"  # the method patched (``parse``: structured outputs)

    @property
    def stream_name(self) -> str:
        return f"{self.name}[stream]"


_PARSE_TARGETS = tuple(
    _Target("openai.chat.completions.parse", "openai", "openai.resources.chat.completions.completions", cls,
            "openai.types.chat", "ParsedChatCompletion", method="parse")
    for cls in ("Completions", "AsyncCompletions")
)  # fmt: skip

_TARGETS = (
    _Target(
        "openai.chat.completions.create",
        "openai",
        "openai.resources.chat.completions.completions",
        "Completions",
        "openai.types.chat",
        "ChatCompletion",
        "ChatCompletionChunk",
    ),
    _Target(
        "openai.chat.completions.create",
        "openai",
        "openai.resources.chat.completions.completions",
        "AsyncCompletions",
        "openai.types.chat",
        "ChatCompletion",
        "ChatCompletionChunk",
    ),
    _Target(
        "openai.responses.create",
        "openai",
        "openai.resources.responses.responses",
        "Responses",
        "openai.types.responses",
        "Response",
    ),
    _Target(
        "openai.responses.create",
        "openai",
        "openai.resources.responses.responses",
        "AsyncResponses",
        "openai.types.responses",
        "Response",
    ),
    _Target(
        "anthropic.messages.create",
        "anthropic",
        "anthropic.resources.messages.messages",
        "Messages",
        "anthropic.types",
        "Message",
        "RawMessageStreamEvent",
    ),
    _Target(
        "anthropic.messages.create",
        "anthropic",
        "anthropic.resources.messages.messages",
        "AsyncMessages",
        "anthropic.types",
        "Message",
        "RawMessageStreamEvent",
    ),
)

# Request options that shape the HTTP exchange, not the model's answer: kept out of the key.
_TRANSPORT_OPTIONS = frozenset({"extra_headers", "extra_query", "timeout"})

_lock = threading.Lock()
_patched: dict[tuple[str, str, str], Any] = {}  # (module, class, method) -> the SDK's own method
_runtime: AgentRuntime | None = None


APIS = tuple(dict.fromkeys(t.name for t in (*_TARGETS, *_PARSE_TARGETS)))
"""The calls ``instrument`` can record, by their ledger names."""


def instrument(runtime: AgentRuntime, apis: Iterable[str] | None = None) -> list[str]:
    """Patch the installed ``openai`` / ``anthropic`` clients to record calls made in ``runtime``'s
    sessions; returns the patched methods. ``apis``: only these (``APIS`` names, or prefixes of them such
    as ``"anthropic"`` or ``"openai.chat"``; default: all). Idempotent for one runtime; a second runtime is
    an error (``uninstrument()`` first). Clients that are not installed are skipped."""
    global _runtime
    chosen = _chosen(apis)
    with _lock:
        if _runtime is not None and _runtime is not runtime:
            raise ConfigurationError(
                "the LLM clients are instrumented for another runtime; call agent_relay.uninstrument() first."
            )
        _runtime = runtime
        for target in (*_TARGETS, *_PARSE_TARGETS):
            if target.name not in chosen:
                continue
            _register_spec(runtime, target)
            if (target.module, target.cls, target.method) in _patched:
                continue
            try:
                cls = getattr(importlib.import_module(target.module), target.cls)
            except (ImportError, AttributeError):
                continue  # that SDK (or that API of it) is not installed
            original = cls.__dict__.get(target.method)
            if original is None:
                continue  # an SDK version without that method
            _patched[(target.module, target.cls, target.method)] = original
            setattr(cls, target.method, _wrap(original, target))
        return [f"{module}.{cls}.{method}" for module, cls, method in _patched]


def _chosen(apis: Iterable[str] | None) -> set[str]:
    """The ``APIS`` names ``apis`` selects; a name that selects none is an error naming the choices."""
    if apis is None:
        return set(APIS)
    if isinstance(apis, str):
        apis = (apis,)
    chosen: set[str] = set()
    for wanted in apis:
        matched = {name for name in APIS if name == wanted or name.startswith(f"{wanted}.")}
        if not matched:
            raise ConfigurationError(
                f"instrument(apis=...): {wanted!r} names none of the calls it can record: {', '.join(APIS)} "
                f"(or a prefix of them, such as 'openai' or 'anthropic.messages')."
            )
        chosen |= matched
    return chosen


def uninstrument() -> None:
    """Restore every patched client method to the SDK's own."""
    global _runtime
    with _lock:
        for (module, cls_name, method), original in _patched.items():
            cls = getattr(importlib.import_module(module), cls_name)
            setattr(cls, method, original)
        _patched.clear()
        _runtime = None


def _register_spec(runtime: AgentRuntime, target: _Target) -> None:
    """The ledger's view of the target's calls: a tool of kind ``llm`` whose output decodes to the SDK's
    response type (and, for streams, to the list of its chunk type)."""
    try:
        module = importlib.import_module(target.response_module)
    except ImportError:
        return
    specs = [(target.name, getattr(module, target.response_type, None))]
    if target.stream_type is not None:
        chunk = getattr(module, target.stream_type, None)
        specs.append((target.stream_name, list[chunk] if chunk is not None else None))  # type: ignore[valid-type]

    for name, returns in specs:
        if name in runtime.tools or returns is None:
            continue

        def model_call(**request: Any) -> Any: ...

        model_call.__annotations__ = {"return": returns}
        model_call.__name__ = name
        tool(runtime, name=name, kind="llm", provider=target.provider)(model_call)


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
    run = current_run()
    runtime = _runtime
    if run is None or runtime is None or run.services is not runtime.services:
        return None
    streaming = kwargs.get("stream") is True
    if streaming and target.stream_type is None:
        raise ConfigurationError(
            f"{target.name}(stream=True) inside an AgentRelay session is not recorded yet; call it without "
            f"stream=True, or outside the session."
        )
    spec = runtime.tools[target.stream_name if streaming else target.name]
    return Invocation(runtime.services, run, spec, Phase.FORWARD, _request(target, kwargs))


def _wrap(original: Callable[..., Any], target: _Target) -> Callable[..., Any]:
    # The SDKs' async ``create`` methods are plain functions returning coroutines (a decorator hides the
    # ``async def``), so the class says which is which.
    if target.cls.startswith("Async") or inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def create_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = _invocation(target, kwargs)
            if call is None:
                return await original(self, *args, **kwargs)
            if kwargs.get("stream") is True:
                return await execute_async(
                    call,
                    original,
                    (self, *args),
                    kwargs,
                    served=ReplayedStream,
                    live=lambda stream: RecordingAsyncStream(stream, call),
                )
            if target.method == "parse":  # served: the recorded response, its parsed content rebuilt
                return await execute_async(
                    call, original, (self, *args), kwargs, served=_reparsed(kwargs.get("response_format"))
                )
            if _raw_response(kwargs):
                return await execute_async(
                    call, original, (self, *args), kwargs, served=ReplayedRawResponse,
                    live=lambda raw: _recorded_raw(call, raw),
                )  # fmt: skip
            return await execute_async(call, original, (self, *args), kwargs)

        return create_async

    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _invocation(target, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        if kwargs.get("stream") is True:
            return execute(
                call,
                original,
                (self, *args),
                kwargs,
                served=ReplayedStream,
                live=lambda stream: RecordingStream(stream, call),
            )
        if target.method == "parse":
            return execute(
                call, original, (self, *args), kwargs, served=_reparsed(kwargs.get("response_format"))
            )
        if _raw_response(kwargs):
            return execute(
                call, original, (self, *args), kwargs, served=ReplayedRawResponse,
                live=lambda raw: _recorded_raw(call, raw),
            )  # fmt: skip
        return execute(call, original, (self, *args), kwargs)

    return create


# What the SDKs' ``with_raw_response`` adds to a request (both are generated by Stainless): the method
# then returns the HTTP response wrapped (``LegacyAPIResponse``), parsed on demand with ``.parse()``.
_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"


def _raw_response(kwargs: dict[str, Any]) -> bool:
    headers = kwargs.get("extra_headers")
    return isinstance(headers, dict) and headers.get(_RAW_RESPONSE_HEADER) == "true"


def _reparsed(response_format: Any) -> Callable[[Any], Any]:
    """A served ``parse`` call's response as ``parse`` returns it: ``ParsedChatCompletion`` of the
    requested Pydantic model, its ``message.parsed`` rebuilt from the recorded JSON."""

    def rebuild(served: Any) -> Any:
        if not isinstance(response_format, type) or not hasattr(response_format, "model_validate"):
            return served
        typed = type(served)[response_format]  # ParsedChatCompletion[YourModel]
        return typed.model_validate(served.model_dump())

    return rebuild


def _recorded_raw(call: Invocation, raw: Any) -> Any:
    """Record a raw response as the response it parses to; hand the raw wrapper back (LangChain's
    ``ChatOpenAI`` reads its headers, then parses it)."""
    try:
        parsed = raw.parse()
    except BaseException as exc:
        call.failed(exc)
        raise
    call.succeeded(parsed)
    return raw


class ReplayedRawResponse:
    """A served call asked for ``with_raw_response``: the recorded response, behind the raw wrapper's
    face (``parse()``, ``headers``, ``status_code``); no request was sent, so there are no real headers."""

    def __init__(self, parsed: Any) -> None:
        self._parsed = parsed
        self.headers: dict[str, str] = {}
        self.status_code = 200
        self.request_id = None
        self.retries_taken = 0

    def parse(self, *, to: Any = None) -> Any:
        return self._parsed


class StreamClosedError(RuntimeError):
    """A recorded stream was closed before its end: the model call is recorded as failed."""


class _Recording:
    """What the sync and async recording streams share: the chunks, and recording them exactly once."""

    def __init__(self, stream: Any, call: Invocation) -> None:
        self._stream = stream
        self._call = call
        self._chunks: list[Any] = []
        self._done = False

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._call.succeeded(self._chunks)  # may raise: the stream's usage passed the budget

    def _fail(self, exc: BaseException) -> None:
        if not self._done:
            self._done = True
            self._call.failed(exc)

    def _abandon(self) -> None:
        self._fail(StreamClosedError(f"the {self._call.spec.name} stream was closed before its end"))

    def __getattr__(self, name: str) -> Any:  # the SDK stream's own attributes (response, ...)
        return getattr(self._stream, name)


class RecordingStream(_Recording):
    """A live stream that records its chunks; the ledger row is completed when it ends."""

    def __iter__(self) -> RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._fail(exc)
            raise
        self._chunks.append(chunk)
        return chunk

    @functools.cached_property
    def _iterator(self) -> Any:
        return iter(self._stream)

    def close(self) -> None:
        self._abandon()
        self._stream.close()

    def __enter__(self) -> RecordingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingAsyncStream(_Recording):
    """``RecordingStream`` for the async clients."""

    def __aiter__(self) -> RecordingAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._aiterator.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._fail(exc)
            raise
        self._chunks.append(chunk)
        return chunk

    @functools.cached_property
    def _aiterator(self) -> Any:
        return self._stream.__aiter__()

    async def close(self) -> None:
        self._abandon()
        await self._stream.close()

    async def __aenter__(self) -> RecordingAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ReplayedStream:
    """A recorded stream served again: the same chunks, as the SDK's own chunk types, sync or async."""

    def __init__(self, chunks: list[Any]) -> None:
        self._chunks = list(chunks)

    def __iter__(self) -> Any:
        return iter(self._chunks)

    async def __aiter__(self) -> Any:
        for chunk in self._chunks:
            yield chunk

    def close(self) -> None:
        pass

    def __enter__(self) -> ReplayedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    async def __aenter__(self) -> ReplayedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass
