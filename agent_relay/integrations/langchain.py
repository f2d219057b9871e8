"""LangChain tools made durable: any ``BaseTool`` (``@tool`` functions, ``StructuredTool``, a toolkit's
``get_tools()``, your own subclasses) (needs ``langchain-core``).

    from agent_relay.integrations.langchain import durable_tools

    tools = durable_tools(runtime, toolkit.get_tools())
    model.bind_tools(tools)  # or create_agent(model, tools), ToolNode(tools), ...

Each returned tool has the original's name, description and ``args_schema`` (so the same
``tool_call_schema`` the model sees), and its ``return_direct``, ``response_format``, tags, metadata and
error handling. ``invoke`` and ``ainvoke`` validate and inject as LangChain does, then call the tool of
that name on ``runtime``: inside a session the call is recorded with the arguments the model gave; what
LangChain injects (``InjectedToolCallId``, ``InjectedState``, a ``RunnableConfig``, callbacks) is passed
to the original but never recorded or keyed, so a repeat under a fresh tool-call id is served, and a
replay serves it without running the original. The original runs with callbacks under the durable
tool's run, so a LangChain tracer shows it nested in it. A ``ToolException`` it raises is recorded as a
failed call, then handled by the tool's ``handle_tool_error`` as before (and rebuilt as a
``ToolException`` by a replay).

A sync tool's calls are recorded as a sync tool's (``ainvoke`` awaits the same durable call, running the
original's async path); an async-only tool (a ``StructuredTool`` with only a coroutine) stays async-only.
LangChain's callbacks are not OpenTelemetry spans: the ``execute_tool`` span parents under the current
OpenTelemetry span (the session's), or under the span OpenInference's ``LangChainInstrumentor`` opened for
the tool's run, which it does not make current itself.
"""

from __future__ import annotations

import contextlib
import sys
import typing
from collections.abc import Iterable, Iterator
from typing import Any

from langchain_core.callbacks.manager import AsyncCallbackManagerForToolRun, CallbackManagerForToolRun
from langchain_core.messages import ToolMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config
from langchain_core.tools import BaseTool, InjectedToolCallId, StructuredTool, ToolException
from langchain_core.tools.base import get_all_basemodel_annotations
from opentelemetry import trace
from pydantic import PrivateAttr

from ..errors import ConfigurationError
from ..runtime import AgentRuntime
from .durable import Durable, FrameworkCall, check_options

__all__ = ["DurableTool", "durable_tool", "durable_tools"]

_NO_ID = "agent-relay"  # the id an original is invoked under when the model's is not known to us


class DurableTool(BaseTool):
    """A ``BaseTool`` whose calls are durable calls of ``original`` (made by ``durable_tool``)."""

    original: BaseTool
    _durable: Durable = PrivateAttr()
    _inner: BaseTool = PrivateAttr()
    _model_args: frozenset[str] = PrivateAttr()
    _call_id_args: tuple[str, ...] = PrivateAttr()
    _async_only: bool = PrivateAttr(default=False)

    @property
    def _injected_args_keys(self) -> frozenset[str]:
        # The original's directly injected parameters (LangGraph's ToolRuntime): validation keeps what
        # is injected under these names, so it reaches the original.
        return frozenset(getattr(self.original, "_injected_args_keys", ()))

    def _run(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: CallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        if self._async_only:  # as the original says it, before anything is recorded
            raise NotImplementedError(f"tool {self.name!r} is async-only: call ainvoke.")
        child = patch_config(config, callbacks=run_manager.get_child()) if run_manager else config
        payload, given, tool_call_id = self._input(args, kwargs)
        inner = self._inner
        call = FrameworkCall(lambda: self._content(inner.invoke(payload, child)), tool_call_id)
        with _under_the_tool_span():
            return self._durable.call(call, given)

    async def _arun(
        self,
        *args: Any,
        config: RunnableConfig,
        run_manager: AsyncCallbackManagerForToolRun | None = None,
        **kwargs: Any,
    ) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child()) if run_manager else config
        payload, given, tool_call_id = self._input(args, kwargs)
        inner = self._inner

        async def run() -> Any:
            return self._content(await inner.ainvoke(payload, child))

        with _under_the_tool_span():
            return await self._durable.call_async(FrameworkCall(run, tool_call_id), given)

    def _input(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any], str | None]:
        """What the original is invoked with (everything validation kept, injected values included), the
        arguments recorded (the model's only), and the model's tool-call id when the tool injects it."""
        if args:  # a single string input, passed positionally as LangChain does
            first = next(iter(self.original.args), "input")
            return args[0], {first: args[0]}, None
        given = {k: v for k, v in kwargs.items() if k in self._model_args}
        tool_call_id = next((kwargs[k] for k in self._call_id_args if isinstance(kwargs.get(k), str)), None)
        if tool_call_id is None and self.response_format != "content_and_artifact":
            return dict(kwargs), given, None
        # invoked as a tool call, so the original is given its id and hands back its artifact
        tool_call = {
            "type": "tool_call",
            "name": self.name,
            "args": dict(kwargs),
            "id": tool_call_id or _NO_ID,
        }
        return tool_call, given, tool_call_id

    def _content(self, output: Any) -> Any:
        """The original's output as a tool's ``_run`` returns it (a tool call's message unwrapped)."""
        if not isinstance(output, ToolMessage):
            return output
        if self.response_format == "content_and_artifact":
            return output.content, output.artifact
        return output.content


def durable_tool(runtime: AgentRuntime, original: BaseTool, **options: Any) -> DurableTool:
    """A ``DurableTool`` over ``original`` (see the module's docstring).

    ``options`` are ``@tool``'s (``compensation``, ``cost``, ``idempotent``, ``key``, ``exclude``, ...);
    the name is the tool's. Raises ``ConfigurationError`` for something that is not a ``BaseTool`` or a
    bad option, and ``DuplicateToolError`` when another tool of the runtime has the name.
    """
    if not isinstance(original, BaseTool):
        raise ConfigurationError(
            f"durable_tool() makes a LangChain BaseTool durable (what @tool, StructuredTool and toolkits "
            f"build); got {original!r}."
        )
    options = check_options(options, "durable_tool")
    raises = tuple(options.get("raises", ()))
    options["raises"] = raises if ToolException in raises else (*raises, ToolException)
    # failures reach the durable call (recorded as failed, never served), then the wrapper's handling
    inner = original.model_copy(
        update={"handle_tool_error": False, "handle_validation_error": False, "callbacks": None}
    )
    async_only = isinstance(original, StructuredTool) and original.func is None

    def standalone(arguments: dict[str, Any]) -> Any:  # a compensation: no model, no tool call
        return inner.ainvoke(arguments) if async_only else inner.invoke(arguments)

    schema = {"properties": original.args}
    durable = Durable(
        runtime,
        original,
        original.name,
        schema,
        options,
        standalone=standalone,
        is_async=async_only,
        returns=_return_type(original),
    )
    tool = DurableTool(
        name=original.name,
        description=original.description,
        args_schema=original.args_schema if original.args_schema is not None else original.get_input_schema(),
        return_direct=original.return_direct,
        verbose=original.verbose,
        callbacks=original.callbacks,
        tags=original.tags,
        metadata=original.metadata,
        handle_tool_error=original.handle_tool_error,
        handle_validation_error=original.handle_validation_error,
        response_format=original.response_format,
        extras=original.extras,
        original=original,
    )
    tool._durable = durable
    tool._inner = inner
    tool._model_args = frozenset(original.args)
    tool._call_id_args = _tool_call_id_args(original)
    tool._async_only = async_only
    return tool


def durable_tools(runtime: AgentRuntime, tools: Iterable[BaseTool], **options: Any) -> list[DurableTool]:
    """``durable_tool`` for each tool, with the same options (wrap one by one for options of its own)."""
    return [durable_tool(runtime, t, **options) for t in tools]


def _tool_call_id_args(original: BaseTool) -> tuple[str, ...]:
    """The fields LangChain fills with the model's tool-call id (``Annotated[str, InjectedToolCallId]``)."""
    schema = original.args_schema
    if schema is None or isinstance(schema, dict):
        return ()
    found = []
    for name, annotation in get_all_basemodel_annotations(schema).items():
        markers = typing.get_args(annotation)[1:] if typing.get_origin(annotation) is typing.Annotated else ()
        if any(m is InjectedToolCallId or isinstance(m, InjectedToolCallId) for m in markers):
            found.append(name)
    return tuple(found)


def _return_type(original: BaseTool) -> Any:
    """What the original's ``_run`` returns, so a served result is of that type: a function tool's return
    annotation, else a pair for ``content_and_artifact`` tools (stored as a JSON list)."""
    pair = tuple[Any, Any] if original.response_format == "content_and_artifact" else None
    func = (original.func or original.coroutine) if isinstance(original, StructuredTool) else None
    try:
        return typing.get_type_hints(func).get("return", pair) if func is not None else pair
    except Exception:  # unresolvable annotations
        return pair


_OPENINFERENCE = "openinference.instrumentation.langchain"


@contextlib.contextmanager
def _under_the_tool_span() -> Iterator[None]:
    """Make the OpenTelemetry span an instrumentation opened for this tool's LangChain run the current
    one, so ours is its child. OpenInference's tracer opens such spans without making them current (it
    is a callback handler) and says which one is the current run's; without it, nothing changes. Looked
    up only if the application imported it, and never allowed to fail the call."""
    span = None
    module = sys.modules.get(_OPENINFERENCE)
    try:
        span = module.get_current_span() if module is not None else None
    except Exception:
        span = None
    if not isinstance(span, trace.Span) or not span.get_span_context().is_valid:
        yield
        return
    with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
        yield
