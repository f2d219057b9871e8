"""The saga: a failed run's succeeded forward calls compensated, latest first, each a recorded call —
and the child runs it opened, each undone where it happened among them.

The plan is ``compensation.plan``'s and ``compensation.interleave``'s (pure); this module runs it, sync
or async (only the awaiting differs), and records what failed — including forward calls left in doubt,
which an unwind cannot know whether to undo, and child runs still running elsewhere, which it cannot undo
under them: both are named instead of skipped.

A child run (a session opened inside the run, or given its id as ``parent_run_id``; unless it opted out
with ``unwind_with_parent=False``) is unwound as ``runtime.compensate`` would unwind it — its own
children first where they came, its compensations recorded in its own run under its own span — and
then ends ``compensated`` (or ``compensation_failed``). A child whose saga already ran (it failed, or was
cancelled) is not unwound again. Its tools must be registered in this process: a child recorded by
another process whose tools are not is named as a failure (``runtime.compensate(child)`` where they are).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Coroutine, Iterator
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from . import compensation, semconv, spans
from .calls import Invocation
from .errors import AgentRelayError, CallInDoubtError, SessionStateError
from .execute import execute, execute_async
from .run import Run
from .services import Services
from .spend import RunSpend
from .states import RunMode, RunStatus


@dataclasses.dataclass(frozen=True, slots=True)
class CompensationFailure:
    """A compensation that could not be completed during an unwind (``run_id``: of a child run)."""

    tool_name: str
    forward_tool: str | None
    forward_seq: int | None
    error: BaseException
    run_id: str | None = None

    def __str__(self) -> str:
        of = f" of {self.forward_tool!r} (seq {self.forward_seq})" if self.forward_tool else ""
        where = f" in child run {self.run_id}" if self.run_id else ""
        return f"compensation {self.tool_name!r}{of}{where} failed: {type(self.error).__name__}: {self.error}"


Item = tuple[compensation.Step, Invocation, dict[str, Any]] | compensation.Child


class Saga:
    """One unwind of ``run`` (and of its children); failures are appended to ``failures`` (the session's
    ``compensation_errors``), ``compensated`` counts the compensations that ran, children's included."""

    def __init__(
        self,
        services: Services,
        run: Run,
        mode: RunMode,
        failures: list[CompensationFailure],
        *,
        child: bool = False,
    ) -> None:
        self._services = services
        self._run = run
        self._for_good = mode is RunMode.RECOVER
        self._child = child
        self.failures = failures
        self.compensated = 0

    def _items(self) -> Iterator[Item]:
        """The compensations to run and the children to unwind, latest first; planning failures are
        recorded."""
        run, ledger, tools = self._run, self._services.ledger, self._services.snapshot()
        run.unwinding = True
        try:
            kids, running = compensation.children(ledger.children_to_unwind(run.run_id))
            steps = compensation.plan(ledger.succeeded_forward_calls(run.run_id), tools)
            doubts = compensation.in_doubt(ledger.pending_forward_calls(run.run_id), tools, self._for_good)
        except AgentRelayError as exc:
            self._note(CompensationFailure("(plan)", None, None, exc))
            return
        for row in running:
            still = SessionStateError(
                f"child run {row.run_id} ({row.name!r}) is still running in {row.owner}, so it was not "
                f"unwound; once it ends, unwind it with runtime.compensate({row.run_id!r})."
            )
            self._note(CompensationFailure("(child run)", None, None, still, row.run_id))
        for row, tool in doubts:  # never skipped silently: named, with how to settle it
            error = CallInDoubtError(
                tool_name=tool.name, run_id=run.run_id, call_id=row.call_id, owner=row.owner
            )
            self._note(CompensationFailure(str(tool.compensation), tool.name, row.seq, error))
        for item in compensation.interleave(steps, kids):
            if isinstance(item, compensation.Child):
                yield item
                continue
            try:
                call = Invocation.compensating(self._services, run, item)
                kwargs = compensation.compensation_kwargs(item)
            except Exception as exc:
                self._failed(item, exc)
                continue
            yield item, call, kwargs

    def run(self) -> None:
        for item in self._items():
            if isinstance(item, compensation.Child):
                unwind = _ChildUnwind.open(self, item)
                if unwind is not None:
                    unwind.saga.run()
                    unwind.close()
                continue
            step, call, kwargs = item
            try:
                if step.compensation.is_async:
                    _run_coroutine(execute_async(call, step.compensation.func, (), kwargs))
                else:
                    execute(call, step.compensation.func, (), kwargs)
                self._undone(step)
            except Exception as exc:
                self._failed(step, exc)

    async def run_async(self) -> None:
        for item in self._items():
            if isinstance(item, compensation.Child):
                unwind = _ChildUnwind.open(self, item)
                if unwind is not None:
                    await unwind.saga.run_async()
                    unwind.close()
                continue
            step, call, kwargs = item
            try:
                if step.compensation.is_async:
                    await execute_async(call, step.compensation.func, (), kwargs)
                else:
                    execute(call, step.compensation.func, (), kwargs)
                self._undone(step)
            except Exception as exc:
                self._failed(step, exc)

    def _undone(self, step: compensation.Step) -> None:
        """A compensation succeeded; a global key its forward call held is given up (the order it
        charged was refunded: charging it again is a new charge)."""
        self.compensated += 1
        if step.forward.global_key is not None:
            try:
                self._services.ledger.keys.release(step.call_id, pending_only=False)
            except AgentRelayError as exc:
                self._failed(step, exc)

    def _failed(self, step: compensation.Step, exc: BaseException) -> None:
        self._note(CompensationFailure(step.compensation.name, step.forward.name, step.seq, exc))

    def _note(self, failure: CompensationFailure) -> None:
        if self._child and failure.run_id is None:
            failure = dataclasses.replace(failure, run_id=self._run.run_id)
        self.failures.append(failure)


@dataclasses.dataclass(slots=True)
class _ChildUnwind:
    """One child run being unwound inside its parent's saga: its run, its span, its saga."""

    parent: Saga
    row: Any
    run: Run
    span: trace.Span
    token: object
    saga: Saga
    failed_before: int

    @classmethod
    def open(cls, parent: Saga, child: compensation.Child) -> _ChildUnwind | None:
        """Start unwinding ``child`` (its span current); ``None`` when it cannot be (recorded)."""
        services, row = parent._services, child.row
        try:
            keys = services.keys.for_run(row)
            first = services.ledger.max_seq(row.run_id) + 1
        except AgentRelayError as exc:
            parent.failures.append(CompensationFailure("(child run)", None, None, exc, row.run_id))
            return None
        run = Run(
            services,
            row.run_id,
            row.name,
            RunMode.RECOVER,
            RunSpend(row.run_id, None),
            first_seq=first,
            keys=keys,
        )
        run.open = True
        span = services.tracer.start_span(
            spans.session_span_name(row.name),
            attributes=spans.session_attributes(row.name, row.run_id, parent_run_id=parent._run.run_id),
        )
        token = otel_context.attach(trace.set_span_in_context(span))
        saga = Saga(services, run, RunMode.RECOVER, parent.failures, child=True)
        return cls(parent, row, run, span, token, saga, len(parent.failures))

    def close(self) -> None:
        """Record how the child's unwind went on its row and span; its compensations count as the
        parent's. A child with nothing to undo keeps its status."""
        run, services = self.run, self.parent._services
        run.open = False
        self.parent.compensated += self.saga.compensated
        status: RunStatus | None = None
        if len(self.parent.failures) > self.failed_before:
            status = RunStatus.COMPENSATION_FAILED
        elif self.saga.compensated:
            status = RunStatus.COMPENSATED
        if status is not None:
            try:
                services.ledger.finish_run(run.run_id, status=status)
            except AgentRelayError as exc:
                self.parent.failures.append(CompensationFailure("(child run)", None, None, exc, run.run_id))
            services.instruments.run(run.name, status, RunMode.RECOVER, budget_exceeded=False)
        self.span.set_attribute(semconv.RUN_STATUS, status or str(self.row.status))
        self.span.end()
        otel_context.detach(self.token)  # type: ignore[arg-type]


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
