"""The saga: a failed run's succeeded forward calls compensated, latest first, each a recorded call.

The plan is ``compensation.plan``'s (pure); this module runs it, sync or async (only the awaiting
differs), and records what failed — including forward calls left in doubt, which an unwind cannot know
whether to undo and so names instead of skipping.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine, Iterator
from typing import Any

from . import compensation
from .calls import Invocation
from .errors import AgentRelayError, CallInDoubtError, SessionStateError
from .execute import execute, execute_async
from .run import Run
from .services import Services
from .states import RunMode


@dataclasses.dataclass(frozen=True, slots=True)
class CompensationFailure:
    """A compensation that could not be completed during an unwind."""

    tool_name: str
    forward_tool: str | None
    forward_seq: int | None
    error: BaseException

    def __str__(self) -> str:
        of = f" of {self.forward_tool!r} (seq {self.forward_seq})" if self.forward_tool else ""
        return f"compensation {self.tool_name!r}{of} failed: {type(self.error).__name__}: {self.error}"


class Saga:
    """One unwind of ``run``; failures are appended to ``failures`` (the session's
    ``compensation_errors``), ``compensated`` counts the compensations that ran."""

    def __init__(
        self, services: Services, run: Run, mode: RunMode, failures: list[CompensationFailure]
    ) -> None:
        self._services = services
        self._run = run
        self._for_good = mode is RunMode.RECOVER
        self.failures = failures
        self.compensated = 0

    def _steps(self) -> Iterator[tuple[compensation.Step, Invocation, dict[str, Any]]]:
        """The compensations to run, latest forward call first; planning failures are recorded."""
        run, ledger, tools = self._run, self._services.ledger, self._services.snapshot()
        run.unwinding = True
        try:
            steps = compensation.plan(ledger.succeeded_forward_calls(run.run_id), tools)
            doubts = compensation.in_doubt(ledger.pending_forward_calls(run.run_id), tools, self._for_good)
        except AgentRelayError as exc:
            self.failures.append(CompensationFailure("(plan)", None, None, exc))
            return
        for row, tool in doubts:  # never skipped silently: named, with how to settle it
            error = CallInDoubtError(
                tool_name=tool.name, run_id=run.run_id, call_id=row.call_id, owner=row.owner
            )
            self.failures.append(CompensationFailure(str(tool.compensation), tool.name, row.seq, error))
        for step in steps:
            try:
                call = Invocation.compensating(self._services, run, step)
                kwargs = compensation.compensation_kwargs(step)
            except Exception as exc:
                self._failed(step, exc)
                continue
            yield step, call, kwargs

    def run(self) -> None:
        for step, call, kwargs in self._steps():
            try:
                if step.compensation.is_async:
                    _run_coroutine(execute_async(call, step.compensation.func, (), kwargs))
                else:
                    execute(call, step.compensation.func, (), kwargs)
                self.compensated += 1
            except Exception as exc:
                self._failed(step, exc)

    async def run_async(self) -> None:
        for step, call, kwargs in self._steps():
            try:
                if step.compensation.is_async:
                    await execute_async(call, step.compensation.func, (), kwargs)
                else:
                    execute(call, step.compensation.func, (), kwargs)
                self.compensated += 1
            except Exception as exc:
                self._failed(step, exc)

    def _failed(self, step: compensation.Step, exc: BaseException) -> None:
        self.failures.append(CompensationFailure(step.compensation.name, step.forward.name, step.seq, exc))


def _run_coroutine(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run an async compensation from a sync unwind: on a fresh loop, never inside a running one."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise SessionStateError(
        "an async compensation cannot run from a sync session inside a running event loop; open the session "
        "with `async with runtime.agent_session(...)`."
    )
