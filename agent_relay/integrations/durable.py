"""What the framework adapters share: one tool object of an agent framework, registered with ``@tool``
under the framework's name, its parameters read from the framework's JSON schema of the arguments.

The recorded arguments and the key are what the model asked for: the schema's properties (a property
the call leaves out takes the schema's ``default``, else ``None``, as a Python default would). Everything
else the framework hands over — its run context, config, callbacks, the model's tool-call id — rides in a
``FrameworkCall``, an excluded parameter: passed live, never recorded. Its ``run`` invokes the original
tool object as the framework would have, so the framework keeps validating, injecting and formatting;
a repeat or a replay is served without it.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import keyword
from collections.abc import Callable, Mapping
from typing import Any

from ..calls import Invocation
from ..errors import ConfigurationError, DuplicateToolError
from ..execute import execute, execute_async, plain_call
from ..runtime import AgentRuntime
from ..spec import ToolSpec
from ..tooling import tool

CONTEXT = "agent_relay_context"
"""The parameter a ``FrameworkCall`` is passed in: excluded from the record and the key."""

_OPTIONS = frozenset(
    {
        "compensation",
        "cost",
        "idempotent",
        "deduplicate",
        "key",
        "raises",
        "capture_content",
        "redact",
        "durability",
        "exclude",
    }
)
_MARK = "__agent_relay_framework_tool__"  # on a registered body: what it was made from, to reuse it


@dataclasses.dataclass(frozen=True)
class FrameworkCall:
    """The framework's side of one call, kept out of the record and the key: ``run()`` invokes the
    original tool with the framework's own input and context (a coroutine for async tools)."""

    run: Callable[[], Any]
    tool_call_id: str | None = None  # the model's id for the call: the span's gen_ai.tool.call.id


def check_options(options: Mapping[str, Any], adapter: str) -> dict[str, Any]:
    """``@tool`` options an adapter passes on; the name is the framework's, so it is not one of them."""
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"{adapter}() does not take {', '.join(map(repr, unknown))}: a tool keeps the framework's "
            f"name; the @tool options it takes are {', '.join(sorted(_OPTIONS))}."
        )
    return dict(options)


def signature(schema: Mapping[str, Any]) -> inspect.Signature:
    """The durable function's parameters: the ``FrameworkCall`` first, then one keyword parameter per
    property of the JSON schema (defaulting as described above). Properties that are not Python names
    are kept as they come, under one ``arguments`` parameter."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    properties = properties if isinstance(properties, Mapping) else {}
    plain = all(
        isinstance(name, str) and name.isidentifier() and not keyword.iskeyword(name) and name != CONTEXT
        for name in properties
    )
    if not plain:
        return inspect.Signature(
            [
                inspect.Parameter(CONTEXT, inspect.Parameter.POSITIONAL_ONLY, default=None),
                inspect.Parameter("arguments", inspect.Parameter.VAR_KEYWORD),
            ]
        )
    params = [inspect.Parameter(CONTEXT, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)]
    for name, prop in properties.items():
        default = prop.get("default") if isinstance(prop, Mapping) else None
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default))
    return inspect.Signature(params)


class Durable:
    """One framework tool registered with ``runtime``: ``call`` / ``call_async`` run a ``FrameworkCall``
    through the same drivers as any ``@tool`` (served, or run live and recorded).

    ``standalone(arguments)`` runs the tool without a framework call, as a compensation does (the saga
    calls it with the forward call's arguments); ``is_async`` says whether it returns a coroutine, and so
    whether the registered tool is async. A tool registered again under its name — the same kind of
    object (``origin``), the same schema and options, as when an agent and its tools are built per
    request — reuses the first registration; another tool under a taken name is a ``DuplicateToolError``.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        origin: Any,
        name: str,
        schema: Mapping[str, Any],
        options: Mapping[str, Any],
        *,
        standalone: Callable[[dict[str, Any]], Any],
        is_async: bool,
        returns: Any = None,
    ) -> None:
        if not isinstance(runtime, AgentRuntime):
            raise ConfigurationError(
                f"the framework adapters take the runtime first, as in durable_tools(runtime, tools); got "
                f"{runtime!r}."
            )
        self.services = runtime.services
        kind = type(origin)
        mark = (
            f"{kind.__module__}.{kind.__qualname__}",
            json.dumps(schema, sort_keys=True, default=repr),
            options,
        )
        existing = runtime.tools.get(name)
        if existing is not None and getattr(existing.func, _MARK, None) == mark:
            self.spec: ToolSpec = existing
            return
        try:
            tool(runtime, name=name, **_with_context(options))(
                _body(name, origin, schema, standalone, is_async, returns, mark)
            )
        except DuplicateToolError as exc:
            exc.add_note(
                f"A framework's tool keeps its framework's name: rename one of the tools named {name!r} in "
                f"the framework, or wrap it again with the same options (that reuses the registration)."
            )
            raise
        self.spec = runtime.tools[name]

    def call(self, framework_call: FrameworkCall, given: Mapping[str, Any]) -> Any:
        """The call, its waits blocking this thread; ``framework_call.run()`` returns the result."""
        spec, services = self.spec, self.services
        args, kwargs = (framework_call,), self._arguments(given)
        invocation = Invocation.forward(services, spec, args, kwargs)
        if invocation is None:
            services.unrecorded(spec)
            with plain_call(services, spec):
                return framework_call.run()
        return execute(invocation, _run_sync, args, kwargs)

    async def call_async(self, framework_call: FrameworkCall, given: Mapping[str, Any]) -> Any:
        """The call, awaited; ``framework_call.run()`` returns a coroutine."""
        spec, services = self.spec, self.services
        args, kwargs = (framework_call,), self._arguments(given)
        invocation = Invocation.forward(services, spec, args, kwargs)
        if invocation is None:
            services.unrecorded(spec)
            with plain_call(services, spec):
                return await framework_call.run()
        return await execute_async(invocation, _run_async, args, kwargs)

    def _arguments(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The given arguments the signature names (all of them when it takes any): the framework's
        validation, which runs live, judges the others, so they are passed to it but not recorded."""
        params = self.spec.signature.parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return dict(given)
        return {name: value for name, value in given.items() if name in params and name != CONTEXT}


def _with_context(options: Mapping[str, Any]) -> dict[str, Any]:
    exclude = options.get("exclude", ())
    if isinstance(exclude, str) or not isinstance(exclude, tuple | list):
        raise ConfigurationError(f"exclude=... must be a tuple of argument names, not {exclude!r}.")
    return {**options, "exclude": (CONTEXT, *exclude)}


def _body(
    name: str,
    origin: Any,
    schema: Mapping[str, Any],
    standalone: Callable[[dict[str, Any]], Any],
    is_async: bool,
    returns: Any,
    mark: tuple[str, str, Mapping[str, Any]],
) -> Callable[..., Any]:
    """The registered function: what a compensation calls (``standalone``, there being no framework
    call), with the schema's signature and the original's return type (served values are decoded to it)."""
    body: Callable[..., Any]
    if is_async:

        async def body_async(context: FrameworkCall | None = None, /, **arguments: Any) -> Any:
            return await (standalone(arguments) if context is None else context.run())

        body = body_async
    else:

        def body_sync(context: FrameworkCall | None = None, /, **arguments: Any) -> Any:
            return standalone(arguments) if context is None else context.run()

        body = body_sync
    body.__signature__ = signature(schema)  # type: ignore[union-attr]  # (inspect.signature reads it)
    body.__annotations__ = {} if returns is None else {"return": returns}
    body.__name__ = name
    body.__qualname__ = f"{type(origin).__name__}({name!r})"
    body.__module__ = type(origin).__module__
    setattr(body, _MARK, mark)
    return body


def _run_sync(context: FrameworkCall, /, **arguments: Any) -> Any:
    return context.run()


async def _run_async(context: FrameworkCall, /, **arguments: Any) -> Any:
    return await context.run()
