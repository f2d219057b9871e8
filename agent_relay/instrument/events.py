"""Stream events rebuilt from a recorded final response, and the final response a live stream's events
make: what lets a stream be recorded as one model call (its final message or response, usage counted
once) and served again as a stream, without a request.

A served stream yields the events the API sends for that response, one delta per content block: for an
Anthropic message ``message_start``, per block ``content_block_start`` / ``content_block_delta`` (its
whole text, tool input JSON or thinking) / ``content_block_stop``, then ``message_delta`` (stop reason and
usage) and ``message_stop``; for an OpenAI response ``response.created``, ``response.in_progress``, per
output item ``response.output_item.added`` / its deltas and ``.done`` events / ``response.output_item.done``,
then ``response.completed`` (or ``.incomplete`` / ``.failed``, as the response ended). The SDKs' stream
helpers accumulate them into the recorded message or response, so ``text_stream``,
``get_final_message()`` and ``get_final_response()`` give what they gave live.
"""

from __future__ import annotations

import functools
import json
import typing
from typing import Any

_TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}
_LAST = frozenset({"message_stop", *_TERMINAL.values()})


def is_last_event(event: Any) -> bool:
    """Whether ``event`` ends its stream: an Anthropic ``message_stop``, or a Responses API response's end
    (OpenAI chat chunks have no such event: their stream ends when it runs out)."""
    return getattr(event, "type", None) in _LAST


class StreamEndedError(RuntimeError):
    """A Responses API stream ended without a final response (``response.completed`` or ``.incomplete``),
    or with a failed one: the model call is recorded as failed."""


def final_response(events: list[Any]) -> Any:
    """The response a Responses API stream ended with (its last lifecycle event's); a failed response is
    a ``StreamEndedError`` (recorded as a failed call, so the call runs again, as a failed request would)."""
    for event in reversed(events):
        if getattr(event, "type", None) in _TERMINAL.values():
            if event.type == "response.failed":
                error = getattr(event.response, "error", None)
                raise StreamEndedError(
                    f"the response failed: {getattr(error, 'message', None) or 'no reason given'}"
                )
            return event.response
    raise StreamEndedError("the Responses API stream ended without a final response")


def message_events(message: Any) -> list[Any]:
    """An Anthropic ``Message`` as the raw stream events that make it (``RawMessageStreamEvent``)."""
    from anthropic import types

    data = message.model_dump(mode="json", by_alias=True, exclude_none=True, warnings=False)
    usage = dict(data.get("usage") or {})
    start = {**data, "content": [], "stop_reason": None, "stop_sequence": None}
    events: list[tuple[type[Any], dict[str, Any]]] = [
        (types.RawMessageStartEvent, {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(data.get("content") or []):
        opening, deltas = _block_start_and_deltas(block)
        events.append(
            (types.RawContentBlockStartEvent,
             {"type": "content_block_start", "index": index, "content_block": opening})
        )  # fmt: skip
        events += [
            (types.RawContentBlockDeltaEvent, {"type": "content_block_delta", "index": index, "delta": delta})
            for delta in deltas
        ]
        events.append((types.RawContentBlockStopEvent, {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": data.get("stop_reason"), "stop_sequence": data.get("stop_sequence")}
    events.append((types.RawMessageDeltaEvent, {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append((types.RawMessageStopEvent, {"type": "message_stop"}))
    return [cls.model_validate(value) for cls, value in events]


def _block_start_and_deltas(block: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    kind = block.get("type")
    if kind == "text":
        return {**block, "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}]
    if kind in ("tool_use", "server_tool_use"):
        partial = json.dumps(block.get("input") or {})
        return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": partial}]
    if kind == "thinking":
        return {**block, "thinking": "", "signature": ""}, [
            {"type": "thinking_delta", "thinking": block.get("thinking", "")},
            {"type": "signature_delta", "signature": block.get("signature", "")},
        ]
    return block, []  # (a block that arrives whole: redacted thinking, tool results)


def response_events(response: Any) -> list[Any]:
    """An OpenAI Responses API ``Response`` as the stream events that make it (``ResponseStreamEvent``)."""
    data = response.model_dump(mode="json", by_alias=True, exclude_none=True, warnings=False)
    start = {**data, "status": "in_progress", "output": [], "usage": None}
    raw: list[dict[str, Any]] = [
        {"type": "response.created", "response": start},
        {"type": "response.in_progress", "response": start},
    ]
    for index, item in enumerate(data.get("output") or []):
        raw += _item_events(index, item)
    raw.append({"type": _TERMINAL.get(data.get("status") or "", "response.completed"), "response": data})
    classes = _response_event_classes()
    return [
        classes[event["type"]].model_validate({**event, "sequence_number": n}) for n, event in enumerate(raw)
    ]


def _item_events(index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
    where = {"output_index": index, "item_id": item.get("id") or ""}
    kind = item.get("type")
    events: list[dict[str, Any]] = []
    if kind == "message":
        opening = {**item, "status": "in_progress", "content": []}
        events.append({"type": "response.output_item.added", "output_index": index, "item": opening})
        for part_index, part in enumerate(item.get("content") or []):
            at = {**where, "content_index": part_index}
            if part.get("type") == "output_text":
                text = part.get("text", "")
                empty = {**part, "text": ""}
                events += [
                    {"type": "response.content_part.added", **at, "part": empty},
                    {"type": "response.output_text.delta", **at, "delta": text, "logprobs": []},
                    {"type": "response.output_text.done", **at, "text": text, "logprobs": []},
                ]
            else:  # (a refusal arrives whole)
                events.append({"type": "response.content_part.added", **at, "part": part})
            events.append({"type": "response.content_part.done", **at, "part": part})
    elif kind == "function_call":
        arguments = item.get("arguments", "")
        opening = {**item, "arguments": "", "status": "in_progress"}
        events += [
            {"type": "response.output_item.added", "output_index": index, "item": opening},
            {"type": "response.function_call_arguments.delta", **where, "delta": arguments},
            {"type": "response.function_call_arguments.done", **where, "arguments": arguments,
             "name": item.get("name")},
        ]  # fmt: skip
    else:  # (other items arrive whole: reasoning, tool calls of built-in tools)
        events.append({"type": "response.output_item.added", "output_index": index, "item": item})
    events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    return events


@functools.cache
def _response_event_classes() -> dict[str, type[Any]]:
    """The SDK's event class for each ``type`` of the ``ResponseStreamEvent`` union."""
    from openai.types.responses import ResponseStreamEvent

    union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], discriminator]
    classes = {}
    for cls in typing.get_args(union):
        (name,) = typing.get_args(cls.model_fields["type"].annotation)
        classes[name] = cls
    return classes
