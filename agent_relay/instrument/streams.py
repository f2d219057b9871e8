"""The stream objects an instrumented client hands back inside a session: live streams that record the
call once read to their end, and recorded streams served again without a request.

A live stream records exactly once: when its events run out or its ending event passes (the call's
result: the list of its chunks, or the final response they make), or when it is closed, or fails, before
that (recorded ``failed``). The
SDKs' own stream helpers (``chat.completions.stream()``, ``responses.stream()``) close the HTTP response
rather than the stream they wrap, so ``response`` is handed out behind a stand-in that records the same.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from ..calls import Invocation
from .events import is_last_event


class StreamClosedError(RuntimeError):
    """A recorded stream was closed before its end: the model call is recorded as failed."""


class ServedResponse:
    """The HTTP response of a served stream: no request was sent, so there are no headers, and closing
    it does nothing."""

    status_code = 200

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


class Recording:
    """What every recording stream shares: the events seen, and recording the call exactly once.

    ``final`` makes the recorded value of the events (default: the list of them); a ``final`` that
    raises records the call as failed with that error, and the stream still ends as the SDK's would.
    ``last`` tells the event that ends the stream, where there is one (``response.completed``,
    ``message_stop``): the call is recorded when it passes, as readers (the Agents SDK) may stop there.
    """

    def __init__(
        self,
        stream: Any,
        call: Invocation,
        final: Callable[[list[Any]], Any] | None = None,
        last: Callable[[Any], bool] | None = None,
    ) -> None:
        self._stream = stream
        self._call = call
        self._final = final
        self._last = last
        self._events: list[Any] = []
        self._done = False

    def _seen(self, event: Any) -> None:
        self._events.append(event)
        if self._last is not None and self._last(event):
            self._finish()

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            value = self._events if self._final is None else self._final(self._events)
        except Exception as exc:
            self._call.failed(exc)
            return
        self._call.succeeded(value)  # may raise: the stream's usage passed the budget

    def _fail(self, exc: BaseException) -> None:
        if not self._done:
            self._done = True
            self._call.failed(exc)

    def abandon(self) -> None:
        """Closed before its end: recorded failed (nothing, if it was already recorded)."""
        self._fail(StreamClosedError(f"the {self._call.spec.name} stream was closed before its end"))

    @property
    def response(self) -> Any:
        return ClosingResponse(self._stream.response, self)

    def __getattr__(self, name: str) -> Any:  # the SDK stream's own attributes
        return getattr(self._stream, name)


class ClosingResponse:
    """A live stream's HTTP response: closing it (as the SDKs' stream helpers close a stream) records a
    stream that was not read to its end as failed, then closes the response."""

    def __init__(self, response: Any, owner: Recording) -> None:
        self._response = response
        self._owner = owner

    def close(self) -> None:
        self._owner.abandon()
        self._response.close()

    async def aclose(self) -> None:
        self._owner.abandon()
        await self._response.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)


class RecordingStream(Recording):
    """A live stream that records its events; the ledger row is completed when it ends."""

    def __iter__(self) -> RecordingStream:
        return self

    def __next__(self) -> Any:
        try:
            event = next(self._iterator)
        except StopIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._fail(exc)
            raise
        self._seen(event)
        return event

    @functools.cached_property
    def _iterator(self) -> Any:
        return iter(self._stream)

    def close(self) -> None:
        self.abandon()
        self._stream.close()

    def __enter__(self) -> RecordingStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingAsyncStream(Recording):
    """``RecordingStream`` for the async clients."""

    def __aiter__(self) -> RecordingAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            event = await self._aiterator.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._fail(exc)
            raise
        self._seen(event)
        return event

    @functools.cached_property
    def _aiterator(self) -> Any:
        return self._stream.__aiter__()

    async def close(self) -> None:
        self.abandon()
        await self._stream.close()

    async def __aenter__(self) -> RecordingAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _text_delta(event: Any) -> str | None:
    """The text an event adds (as the SDK's ``text_stream`` picks it), or ``None``."""
    if getattr(event, "type", None) == "content_block_delta" and event.delta.type == "text_delta":
        return str(event.delta.text)
    return None


class RecordingMessageStream(Recording):
    """A live ``MessageStream``: its events and helpers, the final message recorded when they run out."""

    def __init__(self, stream: Any, call: Invocation) -> None:
        super().__init__(stream, call, final=lambda _: stream.current_message_snapshot, last=is_last_event)
        self.text_stream = self._text()

    def __iter__(self) -> RecordingMessageStream:
        return self

    def __next__(self) -> Any:
        try:
            event = next(self._stream)
        except StopIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._fail(exc)
            raise
        self._seen(event)
        return event

    def _text(self) -> Iterator[str]:
        for event in self:
            text = _text_delta(event)
            if text is not None:
                yield text

    def until_done(self) -> None:
        for _ in self:
            pass

    def get_final_message(self) -> Any:
        self.until_done()
        return self._stream.get_final_message()

    def get_final_text(self) -> str:
        self.until_done()
        return str(self._stream.get_final_text())

    def close(self) -> None:
        self.abandon()
        self._stream.close()

    def __enter__(self) -> RecordingMessageStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordingAsyncMessageStream(Recording):
    """``RecordingMessageStream`` for ``AsyncMessageStream``."""

    def __init__(self, stream: Any, call: Invocation) -> None:
        super().__init__(stream, call, final=lambda _: stream.current_message_snapshot, last=is_last_event)
        self.text_stream = self._text()

    def __aiter__(self) -> RecordingAsyncMessageStream:
        return self

    async def __anext__(self) -> Any:
        try:
            event = await self._stream.__anext__()
        except StopAsyncIteration:
            self._finish()
            raise
        except BaseException as exc:
            self._fail(exc)
            raise
        self._seen(event)
        return event

    async def _text(self) -> AsyncIterator[str]:
        async for event in self:
            text = _text_delta(event)
            if text is not None:
                yield text

    async def until_done(self) -> None:
        async for _ in self:
            pass

    async def get_final_message(self) -> Any:
        await self.until_done()
        return await self._stream.get_final_message()

    async def get_final_text(self) -> str:
        await self.until_done()
        return str(await self._stream.get_final_text())

    async def close(self) -> None:
        self.abandon()
        await self._stream.close()

    async def __aenter__(self) -> RecordingAsyncMessageStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class ReplayedStream:
    """A recorded stream served again: its events (the recorded chunks, or events rebuilt from a recorded
    final response) as the SDK's own types, sync or async; its ``response`` a ``ServedResponse``."""

    def __init__(self, events: list[Any]) -> None:
        self._events = list(events)
        self._position = 0
        self.response = ServedResponse()

    def __iter__(self) -> ReplayedStream:
        return self

    def __next__(self) -> Any:
        if self._position >= len(self._events):
            raise StopIteration
        self._position += 1
        return self._events[self._position - 1]

    def __aiter__(self) -> ReplayedStream:
        return self

    async def __anext__(self) -> Any:
        try:
            return self.__next__()
        except StopIteration:
            raise StopAsyncIteration from None

    def close(self) -> None:
        pass

    def __enter__(self) -> ReplayedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class ReplayedAsyncStream(ReplayedStream):
    """``ReplayedStream`` for the async clients (``close()`` is awaited)."""

    async def close(self) -> None:  # type: ignore[override]
        pass

    async def __aenter__(self) -> ReplayedAsyncStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass
