"""Anthropic's ``messages.stream()`` helper inside a session: ``with client.messages.stream(...) as s:``
(and ``async with``) as one recorded model call.

The helper sends its request when the block is entered, so that is where the call is decided: live, the
SDK's own helper is entered (the request sent) and its ``MessageStream`` handed back behind
``RecordingMessageStream``, which records the final message (``get_final_message()``: usage counted once)
when the events run out, or the call as failed when the block closes it before that. Served (a replay),
no request is sent: the block gets the SDK's own ``MessageStream`` over the events rebuilt from the
recorded message (``agent_relay.instrument.events``), so iterating it, ``text_stream``,
``get_final_message()`` and ``get_final_text()`` give what they gave live.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..calls import Invocation
from ..execute import execute, execute_async
from .events import message_events
from .streams import (
    RecordingAsyncMessageStream,
    RecordingMessageStream,
    ReplayedAsyncStream,
    ReplayedStream,
)


def _output_format(kwargs: dict[str, Any]) -> Any:
    from anthropic import NOT_GIVEN

    return kwargs.get("output_format", NOT_GIVEN)


class MessageStreamManager:
    """What ``messages.stream(...)`` returns inside a session: ``with`` it to get the stream."""

    def __init__(self, call: Invocation, helper: Callable[[], Any], kwargs: dict[str, Any]) -> None:
        self._call = call
        self._helper = helper  # the SDK's own messages.stream(...), called only when the call runs live
        self._kwargs = kwargs
        self._stream: Any = None

    def _open(self) -> Any:
        return self._helper().__enter__()  # (the request is sent here)

    def _replayed(self, message: Any) -> Any:
        from anthropic.lib.streaming import MessageStream

        events = ReplayedStream(message_events(message))
        return MessageStream(events, _output_format(self._kwargs))  # type: ignore[arg-type]

    def __enter__(self) -> Any:
        self._stream = execute(
            self._call,
            self._open,
            (),
            {},
            served=self._replayed,
            live=lambda stream: RecordingMessageStream(stream, self._call),
        )
        return self._stream

    def __exit__(self, *exc: object) -> None:
        if self._stream is not None:
            self._stream.close()


class AsyncMessageStreamManager:
    """``MessageStreamManager`` for the async client: ``async with`` it."""

    def __init__(self, call: Invocation, helper: Callable[[], Any], kwargs: dict[str, Any]) -> None:
        self._call = call
        self._helper = helper  # called only live: the SDK builds its request coroutine when called
        self._kwargs = kwargs
        self._stream: Any = None

    async def _open(self) -> Any:
        opening: Awaitable[Any] = self._helper().__aenter__()  # (the request is sent here)
        return await opening

    def _replayed(self, message: Any) -> Any:
        from anthropic.lib.streaming import AsyncMessageStream

        events = ReplayedAsyncStream(message_events(message))
        return AsyncMessageStream(events, _output_format(self._kwargs))  # type: ignore[arg-type]

    async def __aenter__(self) -> Any:
        self._stream = await execute_async(
            self._call,
            self._open,
            (),
            {},
            served=self._replayed,
            live=lambda stream: RecordingAsyncMessageStream(stream, self._call),
        )
        return self._stream

    async def __aexit__(self, *exc: object) -> None:
        if self._stream is not None:
            await self._stream.close()
