"""The one place spans and their attributes are built: tool (``execute_tool``), inference (``chat``) and
session (``invoke_agent``) spans, for live calls, served calls and ``agent-relay export`` alike, and the
one way an error is marked on a span."""

from __future__ import annotations

import traceback
from collections.abc import Collection
from typing import Any

from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from . import semconv
from .content import scrub
from .encoding import safe_text
from .states import Origin
from .usage import ResponseFacts


def error_type_name(exc: BaseException) -> str:
    """``error.type`` as OpenTelemetry spells it: the qualified class name (no module for builtins)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def call_span_name(tool_name: str, model: str | None = None) -> str:
    """``execute_tool <tool>``, or ``chat <model>`` for a model call (an inference span)."""
    if model:
        return f"{semconv.OPERATION_CHAT} {model}"
    return f"{semconv.OPERATION_EXECUTE_TOOL} {tool_name}"


def call_attributes(
    tool_name: str,
    phase: str,
    idempotency_key: str,
    run_id: str,
    call_id: str,
    model: str | None = None,
    provider: str | None = None,
    seq: int | None = None,
    forward: tuple[str, int, str] | None = None,
) -> dict[str, Any]:
    """A call's span attributes: GenAI ``execute_tool`` ones (or ``chat`` ones for a model call, one
    whose request names its ``model``) and AgentRelay's own (run, key, phase, seq, and ``forward``: the
    call id, seq and tool of the forward call a compensation undoes). The key is left off when empty
    (``span_key="none"``)."""
    attributes: dict[str, Any] = {semconv.RUN_ID: run_id, semconv.TOOL_PHASE: phase}
    if idempotency_key:
        attributes[semconv.IDEMPOTENCY_KEY] = idempotency_key
    if model:
        attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OPERATION_CHAT
        attributes[semconv.LLM_CALL] = tool_name
        attributes[semconv.CALL_ID] = call_id
        if provider:
            attributes[semconv.GEN_AI_PROVIDER_NAME] = provider
        attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    else:
        attributes[semconv.GEN_AI_OPERATION_NAME] = semconv.OPERATION_EXECUTE_TOOL
        attributes[semconv.GEN_AI_TOOL_NAME] = tool_name
        attributes[semconv.GEN_AI_TOOL_TYPE] = semconv.TOOL_TYPE_FUNCTION
        attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
    if seq is not None:
        attributes[semconv.CALL_SEQ] = seq
    if forward is not None:
        (
            attributes[semconv.FORWARD_CALL_ID],
            attributes[semconv.FORWARD_SEQ],
            attributes[semconv.FORWARD_TOOL],
        ) = forward
    return attributes


def plain_tool_attributes(tool_name: str) -> dict[str, Any]:
    """A tool span's GenAI attributes (all a tool called outside any session gets)."""
    return {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_EXECUTE_TOOL,
        semconv.GEN_AI_TOOL_NAME: tool_name,
        semconv.GEN_AI_TOOL_TYPE: semconv.TOOL_TYPE_FUNCTION,
    }


REPLAYED_ATTRIBUTES: dict[str, Any] = {semconv.REPLAYED: True}
_RESUMED: dict[str, Any] = {semconv.RESUMED: True}
DEDUPLICATED_ATTRIBUTES: dict[str, Any] = {semconv.DEDUPLICATED: True}


def served_attributes(origin: str, *, resumed: bool = False) -> dict[str, Any]:
    """What marks a call served without running: replayed from another run, or deduplicated (resumed).
    (Shared constants: read them, never change them.)"""
    if origin == Origin.REPLAYED:
        return REPLAYED_ATTRIBUTES
    return _RESUMED if resumed else DEDUPLICATED_ATTRIBUTES


def mark_served_across_runs(span: Span, run_id: str, call_id: str) -> None:
    """A call served the result of another run's call holding the same global key."""
    span.set_attributes(
        {
            semconv.DEDUPLICATED: True,
            semconv.SERVED_FROM_RUN_ID: run_id,
            semconv.SERVED_FROM_CALL_ID: call_id,
        }
    )
    span.add_event(semconv.EVENT_DEDUPLICATED, {semconv.SERVED_FROM_RUN_ID: run_id})


def outcome_attributes(
    *,
    cost_usd: Any = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """A call's (or run's) cost and usage as span attributes."""
    attributes: dict[str, Any] = {}
    if cost_usd is not None:  # (ours, and the name Logfire's and OpenLIT's dashboards read)
        attributes[semconv.COST_USD] = attributes[semconv.GEN_AI_USAGE_COST] = float(cost_usd)
    if input_tokens is not None:
        attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
        attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens or 0
    if model:
        attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    return attributes


def response_attributes(facts: ResponseFacts) -> dict[str, Any]:
    """An inference span's ``gen_ai.response.*`` attributes."""
    attributes: dict[str, Any] = {}
    if facts.model:
        attributes[semconv.GEN_AI_RESPONSE_MODEL] = facts.model
    if facts.id:
        attributes[semconv.GEN_AI_RESPONSE_ID] = facts.id
    if facts.finish_reasons:
        attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = list(facts.finish_reasons)
    return attributes


def call_span_kind(model: str | None) -> SpanKind:
    """A model call's span is a ``CLIENT`` span (a request to the model's service), as the GenAI
    conventions say; a tool's is ``INTERNAL``."""
    return SpanKind.CLIENT if model else SpanKind.INTERNAL


def session_attributes(
    name: str,
    run_id: str,
    *,
    parent_run_id: str | None = None,
    budget_limit: Any = None,
    replay_of: str | None = None,
) -> dict[str, Any]:
    """An ``invoke_agent`` span's attributes as it starts."""
    attributes: dict[str, Any] = {
        semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_INVOKE_AGENT,
        semconv.GEN_AI_AGENT_NAME: name,
        semconv.RUN_ID: run_id,
    }
    if parent_run_id:
        attributes[semconv.PARENT_RUN_ID] = parent_run_id
    if budget_limit is not None:
        attributes[semconv.BUDGET_LIMIT_USD] = float(budget_limit)
    if replay_of:
        attributes[semconv.REPLAY_OF] = replay_of
    return attributes


def session_span_name(name: str) -> str:
    return f"{semconv.OPERATION_INVOKE_AGENT} {name}"


def error_status(error_type: str | None, message: str | None) -> Status:
    """The status of a span whose call or run failed with ``error_type: message``."""
    description = f"{error_type}: {message}" if error_type else message
    return Status(StatusCode.ERROR, None if description is None else safe_text(description))


def mark_error(span: Span, exc: BaseException, secrets: Collection[str] = ()) -> None:
    """Mark ``exc`` on ``span``: ERROR status, ``error.type`` and an ``exception`` event, every text in
    them with ``secrets`` (redacted values the message may quote) scrubbed out."""
    message = scrub(str(exc), secrets) if secrets else str(exc)
    span.set_status(error_status(type(exc).__name__, message))
    span.set_attribute(semconv.ERROR_TYPE, error_type_name(exc))
    if not secrets:
        span.record_exception(exc)
        return
    trace_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    span.add_event(
        semconv.EVENT_EXCEPTION,
        {
            semconv.EXCEPTION_TYPE: error_type_name(exc),
            semconv.EXCEPTION_MESSAGE: safe_text(message),
            semconv.EXCEPTION_STACKTRACE: safe_text(scrub(trace_text, secrets)),
        },
    )


def end_span(span: Span, exc: BaseException | None = None, secrets: Collection[str] = ()) -> None:
    """End ``span``, marking ``exc`` first if given (``secrets`` scrubbed out of what it says)."""
    if exc is not None:
        mark_error(span, exc, secrets)
    span.end()
