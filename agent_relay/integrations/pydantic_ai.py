"""pydantic-ai toolsets and tools made durable (needs ``pydantic-ai``).

    from agent_relay.integrations.pydantic_ai import durable_tools, durable_toolset

    agent = Agent(model, toolsets=[durable_tools(runtime, [get_weather, Tool(book_flight)])])
    agent = Agent(model, toolsets=[durable_toolset(runtime, MCPToolset("server.py"))])  # any toolset

``durable_toolset`` wraps any ``AbstractToolset`` in a ``DurableToolset`` (a ``WrapperToolset``): the
tools, their definitions and schemas are the wrapped toolset's, and each ``call_tool`` is a call of the
tool of that name on ``runtime``. Inside a session it is recorded with the validated arguments (never the
``RunContext``), a repeat in the run is served, and a replay serves it without calling the wrapped
toolset. A ``ModelRetry`` the tool raises is recorded as a failed call (so it runs again when the model
retries) and rebuilt as a ``ModelRetry`` by a replay.

Tools of a ``FunctionToolset`` (and so ``durable_tools``') are registered with the runtime at once, so
``runtime.compensate`` in a new process knows them; tools of other toolsets (MCP servers, dynamic ones)
when first called. With instrumentation on (``Agent(instrument=True)`` or Logfire), pydantic-ai's
``execute_tool`` span of the call is the parent of ours.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic_ai import FunctionToolset, ModelRetry, RunContext, Tool
from pydantic_ai.toolsets import AbstractToolset, ToolsetTool, WrapperToolset

from ..errors import ConfigurationError
from ..runtime import AgentRuntime
from .durable import Durable, FrameworkCall, check_options

__all__ = ["DurableToolset", "durable_tools", "durable_toolset"]


@dataclasses.dataclass
class DurableToolset(WrapperToolset[Any]):
    """The wrapped toolset, its calls durable on ``runtime`` (made by ``durable_toolset``).

    ``options`` are ``@tool``'s for every tool, ``tool_options`` a tool's own (by name) on top of them.
    """

    runtime: AgentRuntime = dataclasses.field(kw_only=True)
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict, kw_only=True)
    tool_options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict, kw_only=True)
    # shared by the copies pydantic-ai makes for each run (``for_run``): one registration per tool
    registered: dict[str, Durable] = dataclasses.field(default_factory=dict, kw_only=True, repr=False)

    async def call_tool(
        self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: ToolsetTool[Any]
    ) -> Any:
        durable = self.registered.get(name) or self.register(name, tool.tool_def.parameters_json_schema)
        wrapped = self.wrapped
        call = FrameworkCall(lambda: wrapped.call_tool(name, tool_args, ctx, tool), ctx.tool_call_id)
        return await durable.call_async(call, tool_args)

    def register(
        self, name: str, schema: Mapping[str, Any], function_tool: Tool[Any] | None = None
    ) -> Durable:
        """Register tool ``name`` with the runtime (once); ``function_tool`` when it is a plain function's."""
        options = check_options({**self.options, **self.tool_options.get(name, {})}, "durable_toolset")
        raises = tuple(options.get("raises", ()))
        options["raises"] = raises if ModelRetry in raises else (*raises, ModelRetry)
        returns = None
        if function_tool is not None:
            try:
                returns = typing.get_type_hints(function_tool.function).get("return")
            except Exception:  # unresolvable annotations: served as stored JSON
                returns = None
        durable = Durable(
            self.runtime,
            self.wrapped if function_tool is None else function_tool,
            name,
            schema,
            options,
            standalone=_standalone(name, function_tool),
            is_async=True,
            returns=returns,
        )
        self.registered[name] = durable
        return durable


def durable_toolset(
    runtime: AgentRuntime,
    toolset: AbstractToolset[Any],
    *,
    tool_options: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> DurableToolset:
    """``toolset`` with durable calls (see the module's docstring). ``options`` are ``@tool``'s
    (``compensation``, ``cost``, ``idempotent``, ``key``, ``exclude``, ...) for every tool; ``tool_options``
    maps a tool's name to options of its own. Raises ``ConfigurationError`` for something that is not a
    toolset or a bad option, and ``DuplicateToolError`` when another tool of the runtime has a name."""
    if not isinstance(toolset, AbstractToolset):
        raise ConfigurationError(
            f"durable_toolset() wraps a pydantic-ai toolset (FunctionToolset, an MCP server, ...); got "
            f"{toolset!r}. For functions or Tool objects use durable_tools(runtime, [...])."
        )
    check_options(options, "durable_toolset")
    wrapper = DurableToolset(
        toolset, runtime=runtime, options=dict(options), tool_options=dict(tool_options or {})
    )
    if isinstance(toolset, FunctionToolset):
        unknown = sorted(set(wrapper.tool_options) - set(toolset.tools))
        if unknown:
            raise ConfigurationError(
                f"durable_toolset(tool_options=...) names {', '.join(map(repr, unknown))}, which the toolset "
                f"does not have; its tools are {', '.join(map(repr, toolset.tools)) or 'none'}."
            )
        for name, function_tool in toolset.tools.items():
            wrapper.register(name, function_tool.tool_def.parameters_json_schema, function_tool)
    return wrapper


def durable_tools(
    runtime: AgentRuntime,
    tools: Sequence[Tool[Any] | Any],
    *,
    tool_options: Mapping[str, Mapping[str, Any]] | None = None,
    **options: Any,
) -> DurableToolset:
    """A durable toolset of ``tools`` (``Tool`` objects or functions, as ``FunctionToolset`` takes them):
    pass it to ``Agent(toolsets=[...])``."""
    return durable_toolset(runtime, FunctionToolset(list(tools)), tool_options=tool_options, **options)


def _standalone(name: str, function_tool: Tool[Any] | None) -> Any:
    """How a compensation runs the tool, without an agent run: a plain function's tool is called with the
    arguments; a tool that needs the ``RunContext`` (or is not a function) cannot compensate."""

    async def standalone(arguments: dict[str, Any]) -> Any:
        if function_tool is None or function_tool.takes_ctx:
            raise ConfigurationError(
                f"the pydantic-ai tool {name!r} cannot run as a compensation: it needs an agent run's "
                f"RunContext. Name a @tool(runtime) function as the compensation instead."
            )
        function: Callable[..., Any] = function_tool.function
        result = function(**arguments)
        return await result if inspect.isawaitable(result) else result

    return standalone
