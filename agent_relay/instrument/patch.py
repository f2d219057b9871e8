"""Patching the SDK methods ``agent_relay.instrument`` lists, and what a patched method does inside a
session: decide the call (served or live) and hand back what the SDK would have."""

from __future__ import annotations

import functools
import importlib
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from ..calls import Invocation
from ..errors import ConfigurationError
from ..execute import execute, execute_async
from ..run import current_run
from ..runtime import AgentRuntime
from ..states import Phase
from .events import final_response, is_last_event, response_events
from .message_streams import AsyncMessageStreamManager, MessageStreamManager
from .raw import (
    RAW,
    AsyncStreamedResponse,
    ReplayedAsyncStreamedResponse,
    ReplayedRawResponse,
    StreamedResponse,
    raw_mode,
    recorded_raw,
    reparsed,
)
from .streams import RecordingAsyncStream, RecordingStream, ReplayedAsyncStream, ReplayedStream
from .targets import APIS, TARGETS, Streams, Target, recorded_request, register_specs

_lock = threading.Lock()
_patched: dict[tuple[str, str, str], Any] = {}  # (module, class, method) -> the SDK's own method
_runtime: AgentRuntime | None = None  # instrument(runtime)
# adopt(): the runtimes, held weakly, by the id of their services (checked by identity when found)
_adopted: weakref.WeakValueDictionary[int, AgentRuntime] = weakref.WeakValueDictionary()


def instrument(runtime: AgentRuntime, apis: Iterable[str] | None = None) -> list[str]:
    """Patch the installed ``openai`` / ``anthropic`` clients to record calls made in ``runtime``'s
    sessions; returns the patched methods. ``apis``: only these (``APIS`` names, or prefixes of them such
    as ``"anthropic"`` or ``"openai.chat"``; default: all). Idempotent for one runtime; a second runtime is
    an error (``uninstrument()`` first). Clients that are not installed are skipped."""
    global _runtime
    chosen = selected(apis)
    with _lock:
        if _runtime is not None and _runtime is not runtime:
            raise ConfigurationError(
                "the LLM clients are instrumented for another runtime; call agent_relay.uninstrument() first."
            )
        _runtime = runtime
        return _patch(runtime, chosen)


def adopt(runtime: AgentRuntime, apis: Iterable[str] | None = None) -> list[str]:
    """``instrument`` for one runtime among many: calls in a session of any adopted runtime are recorded
    in that runtime's ledger (what ``AgentRelayInstrumentor`` does for every runtime the application
    creates). The runtime is held weakly; ``uninstrument()`` forgets them all."""
    chosen = selected(apis)
    with _lock:
        _adopted[id(runtime.services)] = runtime
        return _patch(runtime, chosen)


def _patch(runtime: AgentRuntime, chosen: set[str]) -> list[str]:
    for target in TARGETS:
        if target.name not in chosen:
            continue
        register_specs(runtime, target)
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


def selected(apis: Iterable[str] | None) -> set[str]:
    """The ``APIS`` names ``apis`` selects (all for ``None``); a name that selects none is a
    ``ConfigurationError`` naming the choices."""
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
        _adopted.clear()


def _invocation(target: Target, kwargs: dict[str, Any]) -> Invocation | None:
    """The call to record, or ``None``: outside a session of an instrumented runtime (the client's own
    behaviour)."""
    run = current_run()
    if run is None:
        return None
    runtime = _runtime if _runtime is not None and _runtime.services is run.services else None
    runtime = runtime or _adopted.get(id(run.services))
    if runtime is None or runtime.services is not run.services:
        return None
    streaming = kwargs.get("stream") is True
    if streaming and target.streams is Streams.NONE:
        raise ConfigurationError(
            f"{target.name}(stream=True) inside an AgentRelay session is not recorded; call it without "
            f"stream=True, or outside the session."
        )
    spec = runtime.tools.get(target.stream_name if streaming else target.name)
    if spec is None:  # (a runtime that did not choose this API: its client behaves as before)
        return None
    return Invocation(runtime.services, run, spec, Phase.FORWARD, recorded_request(target, kwargs))


def _stream_handlers(target: Target, call: Invocation) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(served, live) for a ``stream=True`` call: the recorded value as a stream again, and the live
    stream wrapped to record itself."""
    replayed = ReplayedAsyncStream if target.is_async else ReplayedStream
    recording = RecordingAsyncStream if target.is_async else RecordingStream
    if target.streams is Streams.FINAL:
        return (lambda response: replayed(response_events(response))), (
            lambda stream: recording(stream, call, final=final_response, last=is_last_event)
        )
    return replayed, (lambda stream: recording(stream, call, last=is_last_event))


def _wrap(original: Callable[..., Any], target: Target) -> Callable[..., Any]:
    if target.method == "stream":
        manager = AsyncMessageStreamManager if target.is_async else MessageStreamManager

        @functools.wraps(original)
        def stream(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = _invocation(target, kwargs)
            if call is None:
                return original(self, *args, **kwargs)
            return manager(call, functools.partial(original, self, *args, **kwargs), kwargs)

        return stream

    if target.is_async:

        @functools.wraps(original)
        async def create_async(self: Any, *args: Any, **kwargs: Any) -> Any:
            call = _invocation(target, kwargs)
            if call is None:
                return await original(self, *args, **kwargs)
            served, live = _handlers(target, call, kwargs)
            return await execute_async(call, original, (self, *args), kwargs, served=served, live=live)

        return create_async

    @functools.wraps(original)
    def create(self: Any, *args: Any, **kwargs: Any) -> Any:
        call = _invocation(target, kwargs)
        if call is None:
            return original(self, *args, **kwargs)
        served, live = _handlers(target, call, kwargs)
        return execute(call, original, (self, *args), kwargs, served=served, live=live)

    return create


def _handlers(
    target: Target, call: Invocation, kwargs: dict[str, Any]
) -> tuple[Callable[[Any], Any] | None, Callable[[Any], Any] | None]:
    """(served, live) for a call of ``target``: how a served value and a live result are handed back."""
    if kwargs.get("stream") is True:
        served, take = _stream_handlers(target, call)
    elif target.method == "parse":  # served: the recorded response, its parsed content rebuilt
        served, take = reparsed(kwargs.get("response_format")), None
    else:
        served, take = None, None
    mode = raw_mode(kwargs)
    if mode is None:
        return served, take
    record: Callable[[Any], Any] = take or call.succeeded  # a stream records itself
    replay: Callable[[Any], Any] = served or (lambda value: value)
    if mode == RAW:
        return (lambda value: ReplayedRawResponse(replay(value))), (
            lambda raw: recorded_raw(call, raw, record)
        )
    if target.is_async:
        return (lambda value: ReplayedAsyncStreamedResponse(replay(value))), (
            lambda response: AsyncStreamedResponse(response, call, record)
        )
    return (lambda value: ReplayedRawResponse(replay(value))), (
        lambda response: StreamedResponse(response, call, record)
    )
