"""Stream events rebuilt from a recorded final response read back, through the SDKs' own stream classes,
as that response: for the content the fake server never sends (tool input, thinking, reasoning items,
refusals), and a failed Responses API stream is a failed call."""

from __future__ import annotations

from typing import Any

import pytest

from agent_relay.instrument.events import StreamEndedError, final_response, message_events, response_events
from agent_relay.instrument.streams import ReplayedStream

anthropic = pytest.importorskip("anthropic")
openai = pytest.importorskip("openai")


def test_an_anthropic_message_of_every_block_kind_streams_back_whole() -> None:
    from anthropic.lib.streaming import MessageStream
    from anthropic.types import Message

    message = Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [
                {"type": "thinking", "thinking": "The user wants mail.", "signature": "sig=="},
                {"type": "text", "text": "Sending it now."},
                {"type": "tool_use", "id": "toolu_1", "name": "send", "input": {"to": "ada", "n": [1, 2]}},
                {"type": "redacted_thinking", "data": "opaque"},
            ],
            "stop_reason": "tool_use",
            "stop_sequence": None,
            "usage": {"input_tokens": 30, "output_tokens": 12, "cache_read_input_tokens": 5},
        }
    )
    stream = MessageStream(ReplayedStream(message_events(message)), anthropic.NOT_GIVEN)  # type: ignore[arg-type]
    texts = list(stream.text_stream)
    final = stream.get_final_message()
    assert texts == ["Sending it now."]
    assert final.model_dump(exclude_none=True) == message.model_dump(exclude_none=True)


def response(status: str, output: list[dict[str, Any]], **extra: Any) -> Any:
    from openai.types.responses import Response

    return Response.model_validate(
        {
            "id": "resp_1",
            "object": "response",
            "created_at": 1_700_000_000,
            "model": "gpt-4o",
            "status": status,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "output": output,
            "usage": {
                "input_tokens": 20,
                "output_tokens": 9,
                "total_tokens": 29,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 4},
            },
            **extra,
        }
    )


def test_a_response_of_every_item_kind_streams_back_whole() -> None:
    from openai.lib.streaming.responses import ResponseStream

    recorded = response(
        "completed",
        [
            {"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Think."}]},
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Here.", "annotations": []},
                    {"type": "refusal", "refusal": "Not that part."},
                ],
            },
            {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "send",
             "arguments": '{"to":"ada"}', "status": "completed"},
        ],
    )  # fmt: skip
    events = response_events(recorded)
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final_response(events) == recorded  # what a live stream of these events records
    stream = ResponseStream(
        raw_stream=ReplayedStream(events),  # type: ignore[arg-type]
        text_format=openai.omit,
        input_tools=openai.omit,
        starting_after=None,
    )
    deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    final = stream.get_final_response()
    assert deltas == ["Here."] and final.output_text == "Here."
    whole = {"exclude_none": True, "exclude": {"output"}}
    assert final.model_dump(**whole) == recorded.model_dump(**whole)
    assert [item.model_dump(exclude_none=True, exclude={"parsed_arguments"}) for item in final.output] == [
        item.model_dump(exclude_none=True) for item in recorded.output
    ]


def test_a_failed_or_unfinished_responses_stream_is_a_failed_call() -> None:
    failed = response("failed", [], error={"code": "server_error", "message": "the model fell over"})
    with pytest.raises(StreamEndedError, match="the model fell over"):
        final_response(response_events(failed))
    with pytest.raises(StreamEndedError, match="without a final response"):
        final_response(response_events(response("completed", []))[:-1])
    incomplete = response("incomplete", [], incomplete_details={"reason": "max_output_tokens"})
    assert final_response(response_events(incomplete)) == incomplete  # an answer, cut short: recorded
