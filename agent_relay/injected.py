"""Parameters an agent framework injects into a tool — its run context, its config, the model's tool-call
id — recognised by their annotations, without importing the frameworks.

They are not the call's arguments: the same call made under another context (or with a fresh tool-call
id from the model) is the same call. ``@tool`` leaves them out of the recorded arguments and the key, as
it does for ``exclude=`` names and a method's ``self``.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any

# Classes whose instances (or subclasses') a framework passes in, by qualified name.
CONTEXT_TYPES = frozenset(
    {
        "agents.run_context.RunContextWrapper",  # OpenAI Agents SDK (ToolContext derives from it)
        "pydantic_ai._run_context.RunContext",  # pydantic-ai
        "langchain_core.runnables.config.RunnableConfig",  # LangChain / LangGraph
        "langchain_core.callbacks.manager.CallbackManagerForToolRun",
        "langchain_core.callbacks.manager.AsyncCallbackManagerForToolRun",
    }
)
# Markers of ``Annotated[..., Marker]`` parameters a framework fills in (LangChain's InjectedToolCallId,
# LangGraph's InjectedState / InjectedStore all derive from InjectedToolArg).
INJECTED_MARKERS = frozenset({"langchain_core.tools.base.InjectedToolArg"})


def _names(cls: Any) -> set[str]:
    mro = getattr(cls, "__mro__", None) or (cls,)
    return {f"{getattr(c, '__module__', '')}.{getattr(c, '__qualname__', '')}" for c in mro}


def _is_injected(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        base, *metadata = typing.get_args(annotation)
        for marker in metadata:
            if _names(marker if isinstance(marker, type) else type(marker)) & INJECTED_MARKERS:
                return True
        return _is_injected(base)
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:  # Optional[Context], Context | None
        return any(_is_injected(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    return bool(_names(origin or annotation) & CONTEXT_TYPES)


def injected_parameters(func: Callable[..., Any]) -> list[str]:
    """The parameters of ``func`` a framework injects (by their annotations); none when the annotations
    cannot be resolved."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward references: nothing recognised
        return []
    return [
        name
        for name in inspect.signature(func).parameters
        if name in hints and name != "return" and _is_injected(hints[name])
    ]


TOOL_CALL_ID_MARKERS = frozenset({"langchain_core.tools.base.InjectedToolCallId"})


def tool_call_id_parameters(func: Callable[..., Any]) -> list[str]:
    """The parameters a framework fills with the model's own tool-call id (LangChain's
    ``Annotated[str, InjectedToolCallId]``)."""
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:
        return []
    found = []
    for name, annotation in hints.items():
        if name != "return" and typing.get_origin(annotation) is Annotated:
            markers = typing.get_args(annotation)[1:]
            if any(_names(m if isinstance(m, type) else type(m)) & TOOL_CALL_ID_MARKERS for m in markers):
                found.append(name)
    return found


def model_tool_call_id(excluded: dict[str, Any], id_parameters: tuple[str, ...]) -> str | None:
    """The model's own id for this tool call, when a framework handed it in: a tool-call-id parameter's
    value, or a context object's ``tool_call_id`` (the OpenAI Agents SDK's ``ToolContext``)."""
    for name, value in excluded.items():
        if name in id_parameters and isinstance(value, str) and value:
            return value
        found = getattr(value, "tool_call_id", None)
        if isinstance(found, str) and found:
            return found
    return None
