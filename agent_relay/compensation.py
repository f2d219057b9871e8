"""The saga's plan: which recorded calls to compensate, with which tool, in which order.

Pure decisions over ledger rows and the tool registry; the session runs the plan. A run is unwound in
reverse ``seq`` order; only succeeded forward calls whose tool names a compensation take part. The child
runs it opened (``parent_run_id``, unless they opted out) are unwound with it, each where it happened:
a child opened after a call is undone before that call (``interleave``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import UnknownToolError
from .ledger.columns import instant
from .ledger.connection import owner_is_gone
from .spec import ToolSpec
from .states import RunStatus

FORWARD_RESULT = "forward_result"
"""A compensating tool with a parameter of this name receives the forward call's result."""


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """Compensate forward call ``call_id`` (tool ``forward``) with tool ``compensation``."""

    call_id: str
    seq: int
    forward: ToolSpec
    compensation: ToolSpec
    arguments: Mapping[str, Any]
    output: Any
    started_at: Any = None  # when the forward call started (orders it among the run's children)


@dataclasses.dataclass(frozen=True, slots=True)
class Child:
    """Unwind child run ``row`` (an ``agent_runs`` row: run_id, name, status, owner, started_at, ...)."""

    row: Any

    @property
    def run_id(self) -> str:
        return str(self.row.run_id)


# a child whose saga ran already (its own failure, or a cancel) is not unwound again
_UNWOUND = (RunStatus.COMPENSATED, RunStatus.COMPENSATION_FAILED, RunStatus.CANCELLED)


def children(rows: Iterable[Any]) -> tuple[list[Child], list[Any]]:
    """Of the child runs ``rows`` (latest first), those to unwind, and those still running in a live
    process (which an unwind cannot undo under them: named, not skipped)."""
    unwind, running = [], []
    for row in rows:
        if row.status in _UNWOUND:
            continue
        if row.status == RunStatus.RUNNING and not owner_is_gone(row.owner):
            running.append(row)
        else:
            unwind.append(Child(row))
    return unwind, running


def interleave(steps: Sequence[Step], kids: Sequence[Child]) -> list[Step | Child]:
    """Steps (latest first) and children (latest first) in one order, latest first: a child run that
    started at or after a forward call started is unwound before that call."""
    order: list[Step | Child] = []
    waiting = list(kids)
    for step in steps:
        while waiting and (step.started_at is None or _after(waiting[0].row.started_at, step.started_at)):
            order.append(waiting.pop(0))
        order.append(step)
    return order + waiting


def _after(child: Any, call: Any) -> bool:
    """Whether instant ``child`` is at or after ``call`` (either may be naive UTC, as SQLite reads back)."""
    later, earlier = instant(child), instant(call)
    return later is not None and earlier is not None and later >= earlier


def plan(rows: Iterable[Any], tools: Mapping[str, ToolSpec]) -> list[Step]:
    """Steps for ``rows`` (succeeded forward calls, latest first); unknown tools are an error up front."""
    steps: list[Step] = []
    for row in rows:
        forward = tools.get(row.tool_name)
        if forward is None:
            raise UnknownToolError(
                f"the run recorded a call of tool {row.tool_name!r}, which is not registered on this "
                f"runtime; import the module that defines it before compensating, so its compensation is "
                f"known.",
                tool_name=row.tool_name,
            )
        if forward.compensation is None:
            continue
        steps.append(
            Step(
                row.call_id,
                row.seq,
                forward,
                resolve(forward, tools),
                row.arguments or {},
                row.output,
                getattr(row, "started_at", None),
            )
        )
    return steps


def resolve(forward: ToolSpec, tools: Mapping[str, ToolSpec]) -> ToolSpec:
    """The compensating tool ``forward`` names, checked to accept the forward call's arguments."""
    name = forward.compensation
    assert name is not None
    comp = tools.get(name)
    if comp is None:
        raise UnknownToolError(
            f"tool {forward.name!r} names compensation {name!r}, which is not a registered tool; define it "
            f"with @tool(runtime, name={name!r}) before opening a session.",
            tool_name=name,
        )
    given = set(forward.signature.parameters) | {FORWARD_RESULT}
    params = comp.signature.parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    missing = [
        p.name
        for p in params
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in given
    ]
    if missing and not takes_any:
        raise UnknownToolError(
            f"compensation {name!r} of tool {forward.name!r} requires {', '.join(map(repr, missing))}, which "
            f"the forward call does not have; a compensation receives the forward call's arguments (and "
            f"{FORWARD_RESULT!r}, its result).",
            tool_name=name,
        )
    return comp


def compensation_kwargs(step: Step) -> dict[str, Any]:
    """Keyword arguments for the compensating tool: the forward arguments it accepts, decoded to its
    parameter types, plus ``forward_result`` (decoded to the forward tool's return type) if it asks."""
    comp = step.compensation
    params = comp.signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {
        name: comp.decode_argument(name, value)
        for name, value in step.arguments.items()
        if name in params or takes_any
    }
    if FORWARD_RESULT in params:
        kwargs[FORWARD_RESULT] = step.forward.decode(step.output)
    return kwargs


def in_doubt(
    rows: Iterable[Any], tools: Mapping[str, ToolSpec], unwinding_for_good: bool
) -> list[tuple[Any, ToolSpec]]:
    """Forward calls left pending (``rows``: call_id, seq, tool_name, owner) whose outcome is unknown and
    which name a compensation: an unwind cannot know whether to undo them. A call counts when its owner is
    provably gone, or always when the run is being unwound for good (``runtime.compensate``)."""
    found = []
    for row in rows:
        spec = tools.get(row.tool_name)
        if (
            spec is not None
            and spec.compensation is not None
            and (unwinding_for_good or owner_is_gone(row.owner))
        ):
            found.append((row, spec))
    return found
