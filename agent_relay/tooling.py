"""The ``@tool`` decorator: register a side-effecting function with a runtime and record its calls.

Decorating does nothing but register: no database work, no span. A decorated function keeps its
signature for type checkers (``ParamSpec``) and its sync or async nature: an ``async def`` tool gets a
real coroutine wrapper whose span lasts as long as the awaited call.

Inside ``runtime.agent_session(...)`` each call is keyed, deduplicated, traced and recorded (see
``agent_relay.calls``). Outside any session a tool runs as a plain function: it gets an ``execute_tool``
span but no ledger row, no key and no deduplication.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, ParamSpec, TypeVar, cast

from .calls import Invocation
from .errors import ConfigurationError
from .estimate import Estimator, estimator
from .execute import execute, execute_async, plain_call
from .injected import injected_parameters, tool_call_id_parameters
from .keys import global_key
from .ledger.records import check_durability
from .pricing import to_usd
from .retry import Retry, retry_policy, timeout_seconds
from .runtime import AgentRuntime
from .services import Services
from .spans import call_span_name
from .spec import KINDS, CostSpec, ToolSpec
from .stops import approver

P = ParamSpec("P")
R = TypeVar("R")

_MAX_NAME = 200


def tool(
    runtime: AgentRuntime,
    *,
    name: str | None = None,
    compensation: str | None = None,
    cost: CostSpec | None = None,
    kind: str = "function",
    idempotent: bool = False,
    deduplicate: bool = True,
    key: Callable[[dict[str, Any]], str] | None = None,
    raises: tuple[type[BaseException], ...] = (),
    capture_content: bool | None = None,
    redact: tuple[str, ...] = (),
    provider: str | None = None,
    durability: str | None = None,
    exclude: tuple[str, ...] = (),
    retry: Retry | int | None = None,
    timeout_s: float | None = None,
    requires_approval: bool | Callable[[dict[str, Any]], bool] = False,
    key_scope: str = "run",
    retain: dt.timedelta | None = None,
    cost_estimate: float | int | Decimal | str | Estimator | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register the decorated function as a tool of ``runtime``.

    ``name``: the tool's name in the ledger, in spans and in idempotency keys (default: the function's
    name); unique per runtime. ``compensation``: the name of the tool that undoes this one, resolved
    lazily when a session starts; it is called with the forward call's arguments (and, if it has a
    parameter named ``forward_result``, the forward call's result). ``cost``: USD per succeeded call, a
    number or a function of the result. ``kind="llm"``: the result is an LLM response (OpenAI chat
    completion or response, Anthropic message, or a dict of that shape) whose token usage is priced and
    counted. ``idempotent=True``: running the tool twice is harmless, so a call whose process died
    mid-call (outcome unknown) may run again. ``deduplicate=False``: identical calls in a run each run
    (polling, reading a clock); each repeat is numbered, so a replay serves them in the same order.
    ``key``: a function of the bound arguments (a dict) returning your own idempotency key (an order id,
    say); reusing it with different arguments is an ``IdempotencyKeyReuseError``. ``raises``: exception
    types a replay may rebuild from a recorded failure (built-in exceptions always are).
    ``capture_content``: put this tool's arguments and result on its spans (default: the runtime's
    ``ContentPolicy``); ``redact``: field names or dotted paths replaced by ``"[REDACTED]"`` there, on top
    of the runtime's. ``provider``: for ``kind="llm"``, the model provider (``openai``, ``anthropic``...)
    named on spans. ``durability``: ``"strict"`` or ``"outcome"`` for this tool's live calls (default:
    the runtime's; see ``AgentRuntime``); a resumed run's calls and compensations are always strict.
    ``exclude``: parameters left out of the recorded arguments and the key — a context object a framework
    passes in, a client, a callback: the call is the same call whatever they are (a method's ``self`` /
    ``cls`` always is, and so are the context and injected parameters of the OpenAI Agents SDK,
    pydantic-ai and LangChain/LangGraph, recognised by their annotations). Their values are passed to the
    tool live; a replay serves the call without them. ``retry``: how a failed live call is tried again
    (``Retry(attempts=3, initial_delay_s=0.1, ...)``, or a number of attempts); ``timeout_s``: how long
    the body may take — a call that times out is in doubt unless the tool is ``idempotent`` (then it is a
    failure, retried as the policy says); see ``agent_relay.retry``. Both apply inside sessions only.
    ``requires_approval``: True, or a function of the arguments dict (``lambda a: a["amount"] > 100``):
    such a call is recorded ``awaiting_approval`` instead of running, and the run stops there (without
    unwinding) until a person approves or rejects it (``runtime.approve`` / ``reject``) and it is resumed.
    ``key_scope="global"`` (with ``key=``): the key deduplicates across runs — a call whose key another
    run's call already used is served that call's recorded result (recorded in its own run, origin
    ``deduplicated``), the Stripe rule applying across runs; ``retain`` (a ``timedelta``; default: for
    good) is how long after it the key may not run again. See the README's "Keys across runs".
    ``cost_estimate``: the most a call may cost in USD, known before it runs — a number, or a function of
    the arguments dict (returning ``None`` when it cannot tell). In a session with a budget, a call whose
    cost is known in advance (this, or a constant ``cost``) reserves it first, and is refused with
    ``BudgetReservationError`` before it runs if the run's cost, its other reservations and this one could
    pass the limit; its actual cost replaces the reservation when it ends (see ``agent_relay.reserve``).

    Raises ``ConfigurationError`` (a ``ValueError``) for a bad option and ``DuplicateToolError`` when the
    name is taken, both at decoration time.
    """
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
        to_usd(cost, f"@tool({name or '?'}) cost")
    estimator(cost, cost_estimate, name or "...")  # (checked now; made again below with the tool's name)
    if key is not None and not callable(key):
        raise ConfigurationError(f"@tool(key=...) must be a function of the arguments dict, not {key!r}.")
    if not isinstance(raises, tuple) or not all(
        isinstance(t, type) and issubclass(t, BaseException) for t in raises
    ):
        raise ConfigurationError(f"@tool(raises=...) must be a tuple of exception classes, not {raises!r}.")
    if isinstance(exclude, str) or not all(isinstance(p, str) for p in exclude):
        raise ConfigurationError(f"@tool(exclude=...) must be a tuple of parameter names, not {exclude!r}.")
    if isinstance(redact, str) or not all(isinstance(f, str) for f in redact):
        raise ConfigurationError(f"@tool(redact=...) must be a tuple of field names, not {redact!r}.")
    checked = None if durability is None else check_durability(durability, f"@tool({name or '...'})")
    policy = retry_policy(retry, name or "...")
    timeout = timeout_seconds(timeout_s, name or "...")
    approval = approver(requires_approval, name or "...")
    scoped = global_key(
        key_scope, retain, has_key=key is not None, deduplicate=bool(deduplicate), tool_name=name or "..."
    )
    if kind not in KINDS:
        raise ConfigurationError(
            f"@tool(kind=...) must be one of {', '.join(map(repr, KINDS))}, not {kind!r}."
        )

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        if isinstance(func, classmethod | staticmethod):
            raise ConfigurationError(
                f"@tool must sit below @{type(func).__name__} (decorate the function, then make it a "
                f"{type(func).__name__}): @{type(func).__name__} then @tool(runtime, ...), then def."
            )
        if not callable(func):
            raise ConfigurationError(f"@tool decorates a function, not {func!r}.")
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise ConfigurationError(
                f"@tool cannot record the generator function {getattr(func, '__qualname__', func)!r}: its "
                f"values are produced after the call returns. Return a list instead (e.g. "
                f"`return list(...)`), or record each item as its own tool call."
            )
        tool_name = name or getattr(func, "__name__", None)
        if not tool_name:
            raise ConfigurationError(f"@tool could not name {func!r}; pass name=....")
        spec = ToolSpec(
            name=tool_name,
            func=func,
            compensation=compensation,
            cost=cost,
            kind=kind,
            idempotent=bool(idempotent),
            deduplicate=bool(deduplicate),
            key=key,
            raises=raises,
            content=runtime.content.for_tool(capture_content, redact),
            provider=provider,
            durability=checked or runtime.durability,
            is_async=inspect.iscoroutinefunction(func),
            span_name=call_span_name(tool_name),
            signature=inspect.signature(func),
            excluded=_excluded(func, exclude),
            call_id_parameters=tuple(tool_call_id_parameters(func)),
            retry=policy,
            timeout_s=timeout,
            approval=approval,
            global_key=scoped,
            estimate=estimator(cost, cost_estimate, tool_name),
        )
        services = runtime.services
        wrapper = _async_wrapper(services, spec) if spec.is_async else _sync_wrapper(services, spec)
        functools.update_wrapper(wrapper, func)
        services.register(spec)
        return cast(Callable[P, R], wrapper)

    return decorate


def _sync_wrapper(services: Services, spec: ToolSpec) -> Callable[..., Any]:
    func = spec.func

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = Invocation.forward(services, spec, args, kwargs)
        if call is None:
            services.unrecorded(spec)
            with plain_call(services, spec):
                return func(*args, **kwargs)
        return execute(call, func, args, kwargs)

    return wrapper


def _async_wrapper(services: Services, spec: ToolSpec) -> Callable[..., Awaitable[Any]]:
    func = spec.func

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        call = Invocation.forward(services, spec, args, kwargs)
        if call is None:
            services.unrecorded(spec)
            with plain_call(services, spec):
                return await func(*args, **kwargs)
        return await execute_async(call, func, args, kwargs)

    return wrapper


def _excluded(func: Callable[..., Any], exclude: tuple[str, ...]) -> tuple[str, ...]:
    """The parameters left out of the record and the key: ``exclude``'s, checked against the signature,
    those an agent framework injects (``agent_relay.injected``), and a method's ``self`` / ``cls``
    (first): a call is the same call whichever object, context or tool-call id it was made with."""
    params = list(inspect.signature(func).parameters.values())
    unknown = [name for name in exclude if name not in {p.name for p in params}]
    if unknown:
        raise ConfigurationError(
            f"@tool(exclude=...) names {', '.join(map(repr, unknown))}, which "
            f"{getattr(func, '__qualname__', func)!r} does not take; name its parameters."
        )
    excluded = [*exclude, *injected_parameters(func)]
    first = params[0] if params else None
    if first is not None and first.name in ("self", "cls") and first.kind is first.POSITIONAL_OR_KEYWORD:
        excluded.insert(0, first.name)
    return tuple(dict.fromkeys(excluded))
