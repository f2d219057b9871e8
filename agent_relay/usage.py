"""Token usage read from LLM results: OpenAI chat completions and responses, Anthropic messages.

Works on the SDKs' own response objects (Pydantic models) and on plain dicts of the same shape. Token
counts are normalised the way the GenAI conventions and the price table count them: ``input_tokens`` is
all input, cached or not; ``cache_read_tokens`` / ``cache_write_tokens`` say how much of it was cached.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

OPENAI = "openai"
ANTHROPIC = "anthropic"


@dataclasses.dataclass(frozen=True, slots=True)
class TokenUsage:
    """One model call's usage."""

    model: str | None
    provider: str | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


def usage_from_result(result: Any) -> TokenUsage | None:
    """The usage an LLM result reports, or ``None`` when it is not a shape this module knows.

    A list is a recorded stream: OpenAI chat chunks (usage on the last chunk when the request asked for
    ``stream_options={"include_usage": True}``) or Anthropic stream events.
    """
    if isinstance(result, list):
        return _usage_from_stream(result)
    data = _as_mapping(result)
    if data is None:
        return None
    usage = _as_mapping(data.get("usage"))
    if usage is None:
        return None
    model = data.get("model") if isinstance(data.get("model"), str) else None
    if "prompt_tokens" in usage:  # OpenAI chat completions
        details = _as_mapping(usage.get("prompt_tokens_details")) or {}
        return TokenUsage(
            model,
            OPENAI,
            _int(usage.get("prompt_tokens")),
            _int(usage.get("completion_tokens")),
            cache_read_tokens=_int(details.get("cached_tokens")),
        )
    if "input_tokens" not in usage:
        return None
    if data.get("object") == "response" or "input_tokens_details" in usage:  # OpenAI Responses API
        details = _as_mapping(usage.get("input_tokens_details")) or {}
        return TokenUsage(
            model,
            OPENAI,
            _int(usage.get("input_tokens")),
            _int(usage.get("output_tokens")),
            cache_read_tokens=_int(details.get("cached_tokens")),
        )
    # Anthropic messages: input_tokens excludes the cached part, which is reported beside it
    cache_read = _int(usage.get("cache_read_input_tokens"))
    cache_write = _int(usage.get("cache_creation_input_tokens"))
    provider = ANTHROPIC if data.get("type") == "message" or "cache_read_input_tokens" in usage else None
    return TokenUsage(
        model,
        provider,
        _int(usage.get("input_tokens")) + cache_read + cache_write,
        _int(usage.get("output_tokens")),
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseFacts:
    """What a model's response says about itself (the GenAI ``gen_ai.response.*`` attributes)."""

    model: str | None = None
    id: str | None = None
    finish_reasons: tuple[str, ...] = ()


def response_facts(result: Any) -> ResponseFacts:
    """The response's model, id and finish reasons, as far as its shape tells (OpenAI chat completions
    and responses, Anthropic messages, and recorded streams of either); empty for other shapes."""
    if isinstance(result, list):  # a recorded stream: facts spread over its chunks / events
        events = [m for m in map(_as_mapping, result) if m is not None]
        model = id_ = None
        reasons: list[str] = []
        for event in events:
            message = _as_mapping(event.get("message")) or event  # (Anthropic's message_start)
            model = model or _str(message.get("model"))
            id_ = id_ or _str(message.get("id"))
            delta = _as_mapping(event.get("delta")) or {}
            reasons += [r for r in (_str(delta.get("stop_reason")),) if r]
            for choice in event.get("choices") or ():
                reasons += [r for r in (_str((_as_mapping(choice) or {}).get("finish_reason")),) if r]
        return ResponseFacts(model, id_, tuple(reasons))
    data = _as_mapping(result)
    if data is None:
        return ResponseFacts()
    found = [_str((_as_mapping(c) or {}).get("finish_reason")) for c in data.get("choices") or ()]
    found.append(_str(data.get("stop_reason")))  # Anthropic
    return ResponseFacts(_str(data.get("model")), _str(data.get("id")), tuple(r for r in found if r))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _usage_from_stream(chunks: list[Any]) -> TokenUsage | None:
    events = [m for m in map(_as_mapping, chunks) if m is not None]
    start = next((e for e in events if e.get("type") == "message_start"), None)
    if start is not None:  # Anthropic: input on message_start, output on the last message_delta
        message = _as_mapping(start.get("message")) or {}
        first = _as_mapping(message.get("usage")) or {}
        deltas = [_as_mapping(e.get("usage")) or {} for e in events if e.get("type") == "message_delta"]
        output = _int(deltas[-1].get("output_tokens")) if deltas else _int(first.get("output_tokens"))
        cache_read = _int(first.get("cache_read_input_tokens"))
        cache_write = _int(first.get("cache_creation_input_tokens"))
        model = message.get("model") if isinstance(message.get("model"), str) else None
        return TokenUsage(
            model,
            ANTHROPIC,
            _int(first.get("input_tokens")) + cache_read + cache_write,
            output,
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
    with_usage = [e for e in events if _as_mapping(e.get("usage"))]
    return usage_from_result(with_usage[-1]) if with_usage else None


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    if isinstance(value, Mapping):
        return value
    dump = getattr(value, "model_dump", None)  # the openai and anthropic SDKs' Pydantic models
    if callable(dump):
        try:  # (no serializer warnings: ParsedChatCompletion's generic ``parsed`` field always warns)
            dumped = dump(warnings=False)
        except TypeError:  # a model_dump without that option
            try:
                dumped = dump()
            except Exception:
                return None
        except Exception:
            return None
        return dumped if isinstance(dumped, Mapping) else None
    return None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
