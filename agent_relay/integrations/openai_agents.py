"""OpenAI Agents SDK ``FunctionTool``s made durable (needs ``openai-agents``).

    from agent_relay.integrations.openai_agents import durable_tools

    agent = Agent(name="travel", tools=durable_tools(runtime, [book_flight, get_weather]))

Each returned ``FunctionTool`` has the original's name, description, JSON schema and strict flag (and
every other setting: guardrails, approval, timeout, failure handling). Its ``on_invoke_tool(ctx,
input_json)`` is a call of the tool of that name on ``runtime``: inside a session it is recorded with the
parsed JSON arguments (never the ``ToolContext``), a repeat in the run is served, a replay serves it
without running the original, and it counts against the budget. The original runs as the SDK would run
it; its failures are recorded as failed calls (so not served again) and then reach the model as the
tool's ``failure_error_function`` words them. AgentRelay's own errors (a budget passed, a replay that
diverges, the ledger down) are not words for the model: they stop the run.

The SDK's tracing is not OpenTelemetry, so the ``execute_tool`` span parents under whatever span is
current: the session's, or the SDK's tool span where an instrumentation makes it an OpenTelemetry span
and current (OpenInference's ``OpenAIAgentsInstrumentor`` does).
"""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Iterable
from typing import Any

from agents import FunctionTool
from agents.tool import (
    maybe_invoke_function_tool_failure_error_function,
    set_function_tool_failure_error_function,
)
from agents.tool_context import ToolContext

from ..errors import AgentRelayError, ConfigurationError, ReplayedError
from ..runtime import AgentRuntime
from .durable import Durable, FrameworkCall, check_options

__all__ = ["durable_tool", "durable_tools"]


def durable_tool(runtime: AgentRuntime, function_tool: FunctionTool, **options: Any) -> FunctionTool:
    """A copy of ``function_tool`` whose calls go through ``runtime`` (see the module's docstring).

    ``options`` are ``@tool``'s (``compensation``, ``cost``, ``idempotent``, ``key``, ``exclude``, ...);
    the name is the tool's. Raises ``ConfigurationError`` for something that is not a ``FunctionTool`` or
    a bad option, and ``DuplicateToolError`` when another tool of the runtime has the name.
    """
    if not isinstance(function_tool, FunctionTool):
        raise ConfigurationError(
            f"durable_tool() makes an Agents SDK FunctionTool durable (as @function_tool builds); got "
            f"{function_tool!r}. Hosted tools (web search, ...) run at OpenAI and are not tool calls here."
        )
    options = check_options(options, "durable_tool")
    name = function_tool.name
    # The inner copy lets failures through (the default formatter would turn them into a result, which
    # would be recorded as a success and served); the returned copy words them for the model.
    inner = copy.copy(function_tool)
    set_function_tool_failure_error_function(inner, None)

    async def standalone(arguments: dict[str, Any]) -> Any:  # a compensation: no run, no model
        text = json.dumps(arguments)
        context = ToolContext(context=None, tool_name=name, tool_call_id="", tool_arguments=text)
        return await inner.on_invoke_tool(context, text)

    durable = Durable(
        runtime,
        function_tool,
        name,
        function_tool.params_json_schema,
        options,
        standalone=standalone,
        is_async=True,
        returns=_return_type(function_tool),
    )
    wrapped = copy.copy(function_tool)

    async def on_invoke_tool(ctx: ToolContext[Any], input_json: str) -> Any:
        try:
            given = json.loads(input_json) if input_json else {}
        except ValueError:
            given = None
        if not isinstance(given, dict):  # the SDK's own error for it, before anything runs
            return await function_tool.on_invoke_tool(ctx, input_json)
        try:
            return await durable.call_async(
                FrameworkCall(
                    lambda: inner.on_invoke_tool(ctx, input_json), getattr(ctx, "tool_call_id", None)
                ),
                given,
            )
        except AgentRelayError as exc:
            if not isinstance(exc, ReplayedError):
                raise
            handled = await _handled(wrapped, ctx, exc)
        except Exception as exc:
            handled = await _handled(wrapped, ctx, exc)
        return handled

    wrapped.on_invoke_tool = on_invoke_tool
    return wrapped


def durable_tools(
    runtime: AgentRuntime, function_tools: Iterable[FunctionTool], **options: Any
) -> list[FunctionTool]:
    """``durable_tool`` for each tool, with the same options (wrap one by one for options of its own)."""
    return [durable_tool(runtime, t, **options) for t in function_tools]


async def _handled(wrapped: FunctionTool, ctx: ToolContext[Any], exc: Exception) -> Any:
    """The failure as the tool's failure function words it for the model; re-raised if it has none."""
    handled = await maybe_invoke_function_tool_failure_error_function(
        function_tool=wrapped, context=ctx, error=exc
    )
    if handled is None:
        raise exc
    return handled


def _return_type(function_tool: FunctionTool) -> Any:
    """The decorated function's return annotation, so a served result is of the type it returns live."""
    try:
        func = function_tool.__wrapped__
        return typing.get_type_hints(func).get("return")
    except Exception:  # not made by @function_tool, or unresolvable annotations: served as stored JSON
        return None
