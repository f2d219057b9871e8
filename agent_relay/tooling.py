"""The ``@tool`` decorator: register a side-effecting function with a runtime and record its calls.

Decorating does nothing but register: no database work, no span. A decorated function keeps its
signature for type checkers (``ParamSpec``) and its sync or async nature: an ``async def`` tool gets a
real coroutine wrapper whose span lasts as long as the awaited call.

Inside ``runtime.agent_session(...)`` each call is keyed, deduplicated, traced and recorded (see
``agent_relay.calls``). Outside any session a tool runs as a plain function: it gets an ``execute_tool``
span but no ledger row, no key and no deduplication.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from . import semconv
from .calls import RUN, SERVED, WAIT, Invocation, plain_call, to_cost
from .encoding import decoder_for
from .errors import ConfigurationError

if TYPE_CHECKING:
    from .runtime import AgentRuntime

P = ParamSpec("P")
R = TypeVar("R")

CostSpec = float | int | Decimal | Callable[[Any], float | int | Decimal]

_MAX_NAME = 200


@dataclasses.dataclass(eq=False)
class ToolSpec:
    """What a runtime knows about one registered tool."""

    runtime: AgentRuntime
    name: str
    func: Callable[..., Any]
    compensation: str | None
    cost: CostSpec | None
    is_async: bool
    span_name: str
    signature: inspect.Signature = dataclasses.field(repr=False)
    _decode: Callable[[Any], Any] | None = dataclasses.field(default=None, repr=False)

    def decode(self, stored: Any) -> Any:
        """Turn a stored output back into what the tool returns (its return annotation's type)."""
        if self._decode is None:
            self._decode = decoder_for(_return_annotation(self.func))
        return self._decode(stored)

    def cost_of(self, result: Any) -> Decimal | None:
        if self.cost is None:
            return None
        value = self.cost(result) if callable(self.cost) else self.cost
        return to_cost(value, self.name)

    @property
    def qualified_name(self) -> str:
        return f"{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', self.name)}"


def _return_annotation(func: Callable[..., Any]) -> Any:
    try:
        hints = typing.get_type_hints(func)
    except Exception:  # unresolvable forward references: serve the stored JSON as it is
        return None
    return hints.get("return")


def tool(
    runtime: AgentRuntime,
    *,
    name: str | None = None,
    compensation: str | None = None,
    cost: CostSpec | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register the decorated function as a tool of ``runtime``.

    ``name``: the tool's name in the ledger, in spans and in idempotency keys (default: the function's
    name); unique per runtime. ``compensation``: the name of the tool that undoes this one, resolved
    lazily. ``cost``: USD per call, a number or a function of the result.

    Raises ``ConfigurationError`` (a ``ValueError``) for a bad option and ``DuplicateToolError`` when the
    name is taken, both at decoration time.
    """
    from .runtime import AgentRuntime

    if not isinstance(runtime, AgentRuntime):
        raise ConfigurationError(
            f"@tool needs the runtime as its first argument, as in @tool(runtime, name='send_email'); got "
            f"{runtime!r}."
        )
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME):
        raise ConfigurationError(
            f"@tool(name=...) must be a non-empty string of at most {_MAX_NAME} characters, not {name!r}."
        )
    if compensation is not None and (not isinstance(compensation, str) or not compensation.strip()):
        raise ConfigurationError(f"@tool(compensation=...) must name a tool, not {compensation!r}.")
    if cost is not None and not callable(cost):
        to_cost(cost, name or "?")

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if not callable(func):
            raise ConfigurationError(f"@tool decorates a function, not {func!r}.")
        tool_name = name or getattr(func, "__name__", None)
        if not tool_name:
            raise ConfigurationError(f"@tool could not name {func!r}; pass name=....")
        spec = ToolSpec(
            runtime=runtime,
            name=tool_name,
            func=func,
            compensation=compensation,
            cost=cost,
            is_async=inspect.iscoroutinefunction(func),
            span_name=f"{semconv.OPERATION_EXECUTE_TOOL} {tool_name}",
            signature=inspect.signature(func),
        )
        wrapper = _async_wrapper(spec) if spec.is_async else _sync_wrapper(spec)
        functools.update_wrapper(wrapper, func)
        wrapper.__agent_relay_tool__ = spec  # type: ignore[union-attr]
        runtime._register_tool(spec)
        return cast(Callable[P, R], wrapper)

    return decorate


def _sync_wrapper(spec: ToolSpec) -> Callable[..., Any]:
    func = spec.func

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = Invocation.create(spec, args, kwargs)
        if call is None:
            with plain_call(spec):
                return func(*args, **kwargs)
        while (fate := call.begin()) == WAIT:
            call.wait()
        if fate == SERVED:
            return call.served
        assert fate == RUN
        try:
            with call.running():
                result = func(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        return call.succeeded(result)

    return wrapper


def _async_wrapper(spec: ToolSpec) -> Callable[..., Awaitable[Any]]:
    func = spec.func

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = Invocation.create(spec, args, kwargs)
        if call is None:
            with plain_call(spec):
                return await func(*args, **kwargs)
        while (fate := call.begin()) == WAIT:
            await call.wait_async()
        if fate == SERVED:
            return call.served
        assert fate == RUN
        try:
            with call.running():
                result = await func(*args, **kwargs)
        except BaseException as exc:
            call.failed(exc)
            raise
        return call.succeeded(result)

    return wrapper
