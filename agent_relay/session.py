"""``AgentSession``: one recorded run, from ``agent_session(...)`` entry to exit.

A session is carried by a context variable, so it is visible to every tool called in its ``with`` block,
in threads started with ``contextvars.copy_context()`` and in every asyncio task created inside it. It is
thread-safe: parallel tool calls in one session are recorded without loss, and two concurrent calls with
one idempotency key run the tool once (the second waits and is served).

Nesting: a session opened inside another records its own run, linked to the outer run by
``parent_run_id``, with its span a child of the outer session's span; tools called inside belong to the
inner run until it exits. A session given ``parent_run_id`` is the child of a run recorded in another
process (an MCP server's, serving that run's request); with ``child_key`` it is opened again, not anew,
when the same request comes again. A child is unwound with its parent when the parent's saga runs (see
``agent_relay.saga``; ``unwind_with_parent=False`` opts out), and refuses its calls once its parent is
cancelled.

Saga: when the block raises an ``Exception`` (``BudgetExceededError`` included), every succeeded forward
call whose tool names a compensation is compensated, latest first, before the exception propagates —
unchanged, with any compensation failures attached as notes and on ``compensation_errors``.
``BaseException``s that are not ``Exception``s (``KeyboardInterrupt``, ``SystemExit``) leave the run
``failed`` without unwinding; ``runtime.compensate(run_id)`` unwinds it later.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from contextvars import Token
from decimal import Decimal
from types import TracebackType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import format_span_id, format_trace_id

from . import semconv, spans
from .budget import parse_limit
from .calls import active_invocation
from .content import scrub
from .encoding import JSONValue, encode, safe_text
from .errors import (
    AgentRelayError,
    ClaimLostError,
    EncodingError,
    LedgerError,
    OutputEncodingError,
    ReplayDivergenceError,
    RunCancelledError,
    SessionStateError,
    UnknownRunError,
)
from .keys import KeyScheme
from .pricing import to_usd
from .replay import ReplaySource
from .run import Run, current_run
from .saga import CompensationFailure, Saga
from .services import HasServices, Services
from .session_options import check_remote_parent, run_mode
from .spend import RunSpend
from .states import RunMode, RunStatus
from .usage import TokenUsage


class AgentSession:
    """One run of an agent, recorded as an ``agent_runs`` row and an ``invoke_agent`` span.

    Use it once, as ``with runtime.agent_session(...) as session`` or ``async with``. On exit the run is
    marked ``succeeded``; when the block raised, ``failed`` — or ``compensated`` /
    ``compensation_failed`` when the saga had something to undo — with the error's type and message.
    """

    def __init__(
        self,
        runtime: HasServices,
        name: str,
        input_payload: Any = None,
        *,
        budget_limit: Any = None,
        replay: bool = False,
        replay_run_id: str | None = None,
        fork_after: int | None = None,
        resume_run_id: str | None = None,
        parent_run_id: str | None = None,
        child_key: str | None = None,
        unwind_with_parent: bool = True,
    ) -> None:
        if not isinstance(unwind_with_parent, bool):
            raise SessionStateError(
                f"agent_session(unwind_with_parent=...) must be a bool, not {unwind_with_parent!r}."
            )
        if not isinstance(name, str) or not name.strip():
            raise SessionStateError(f"agent_session(name=...) must be a non-empty string, not {name!r}.")
        self.mode = run_mode(replay, replay_run_id, fork_after, resume_run_id)
        check_remote_parent(parent_run_id, child_key, self.mode)
        self.replay_of = replay_run_id
        self.fork_after = fork_after
        self.unrequested_calls: list[Any] = []
        self._runtime = runtime
        self._services: Services = runtime.services
        self.name = name
        self._budget_given = budget_limit is not None
        self._limit = parse_limit(budget_limit)
        self._input = encode(input_payload, root="input_payload", what="agent_session:", error=EncodingError)
        self.run_id = resume_run_id or str(uuid.uuid4())
        if parent_run_id is not None and child_key is not None:  # the same request again: the same run
            child = f"agent-relay:{parent_run_id}:{name}:{child_key}"
            self.run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, child))
        self._remote_parent, self._child_key = parent_run_id, child_key
        self.unwind_with_parent = unwind_with_parent
        self.parent_run_id: str | None = parent_run_id
        self.trace_id: str | None = None
        self.status = RunStatus.NEW
        self.compensation_errors: list[CompensationFailure] = []  # (the saga's, once it ran)
        self._output: JSONValue = None
        self._run: Run | None = None
        self._spend = RunSpend(self.run_id, self._limit)
        self._saga: Saga | None = None
        self._resuming_child = False  # a child run resumed with its parent (it may have succeeded)
        self._keys: KeyScheme | None = None  # how a recorded run's keys were made (RECOVER)
        self._span: trace.Span | None = None
        self._tokens: tuple[object, Token[Run | None]] | None = None

    @classmethod
    def recovery(cls, runtime: HasServices, row: Any) -> AgentSession:
        """A session that only unwinds the recorded run ``row`` (an ``agent_runs`` row): its own span, no
        new run; entering it runs the saga (see ``AgentRuntime.compensate``)."""
        session = cls(runtime, row.name)
        session.mode, session.run_id, session.trace_id = RunMode.RECOVER, row.run_id, row.trace_id
        session._spend = RunSpend(row.run_id, None)
        session._keys = runtime.services.keys.for_run(row)
        return session

    # --- public --------------------------------------------------------------------------------------
    @property
    def runtime(self) -> HasServices:
        """The runtime that opened this session."""
        return self._runtime

    @property
    def budget_limit(self) -> Decimal | None:
        return self._spend.limit

    @property
    def cost_usd(self) -> Decimal:
        """What the run has cost so far, in USD (a lower bound when ``cost_unknown``)."""
        return self._spend.spent

    @property
    def cost_unknown(self) -> bool:
        """True when some usage of the run could not be priced."""
        return self._spend.unknown

    @property
    def input_tokens(self) -> int:
        return self._spend.input_tokens

    @property
    def output_tokens(self) -> int:
        return self._spend.output_tokens

    def set_output(self, value: Any) -> None:
        """Store the run's result (canonical JSON) on its ``agent_runs`` row when the session exits."""
        if self.status != RunStatus.RUNNING:
            raise SessionStateError(
                f"set_output() on session {self.name!r} (run {self.run_id}) which is {self.status}; call it "
                f"inside the session's with-block."
            )
        self._output = encode(value, root="output", what="set_output:", error=OutputEncodingError)

    def record_usage(
        self,
        model: str,
        input_tokens: int = 0,
        output_tokens: int = 0,
        *,
        cost_usd: Any = None,
        provider: str | None = None,
    ) -> Decimal | None:
        """Count a model call's tokens (and cost) against the run; return the cost counted.

        Without ``cost_usd`` the usage is priced from the runtime's ``prices``, then the ``genai-prices``
        table. A model neither knows is *unpriced*: counted as unknown (``cost_unknown``), warned about,
        and an ``UnpricedUsageError`` when the session has a budget. Called inside a tool body, the usage
        also lands on that call's ``tool_calls`` row, and the budget is checked when the call ends;
        otherwise it is checked at once (``BudgetExceededError`` when this usage passed the limit).
        """
        if not isinstance(model, str) or not model:
            raise SessionStateError(f"record_usage(model=...) must name the model, not {model!r}.")
        for label, count in (("input_tokens", input_tokens), ("output_tokens", output_tokens)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise SessionStateError(f"record_usage({label}=...) must be an int >= 0, not {count!r}.")
        usage = TokenUsage(model, provider, input_tokens, output_tokens)
        cost = (
            to_usd(cost_usd, "record_usage(cost_usd=...)")
            if cost_usd is not None
            else self._services.prices.cost(usage)
        )
        if self.status != RunStatus.RUNNING or self._run is None:
            raise SessionStateError(f"record_usage() on session {self.name!r} which is {self.status}.")
        call = active_invocation()
        if call is not None and call.run is self._run:
            call.add_usage(usage, cost)
            return cost
        passed = self._run.charge(usage, cost)
        if cost is None:
            self._spend.unpriced(model, provider)
        if passed:
            raise self._spend.budget_error(None)
        return cost

    def __enter__(self) -> AgentSession:
        self._start()
        if self.mode is RunMode.RECOVER:
            self._unwind().run()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._should_unwind(exc):
            self._unwind().run()
        self._finish(exc)

    async def __aenter__(self) -> AgentSession:
        self._start()
        if self.mode is RunMode.RECOVER:
            await self._unwind().run_async()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._should_unwind(exc):
            await self._unwind().run_async()
        self._finish(exc)

    def __repr__(self) -> str:
        return f"<AgentSession {self.name!r} run_id={self.run_id} status={self.status}>"

    # --- lifecycle -----------------------------------------------------------------------------------
    def _start(self) -> None:
        if self.status != RunStatus.NEW:
            raise SessionStateError(
                f"session {self.name!r} (run {self.run_id}) was already entered; open a new one with "
                f"runtime.agent_session(...)."
            )
        services = self._services
        services.check_open()
        services.check_compensations()
        parent = current_run()
        if self._child_key is not None and services.ledger.get_run(self.run_id) is not None:
            self.mode, self._resuming_child = RunMode.RESUME, True  # served calls; failed ones run again
        elif parent is not None and self._remote_parent is None and self.mode is not RunMode.RECOVER:
            self.parent_run_id = parent.run_id
            if self.mode is RunMode.LIVE and parent.serving_recorded:
                self._cover_recorded_child(parent)
        span = services.tracer.start_span(
            spans.session_span_name(self.name),
            attributes=spans.session_attributes(
                self.name,
                self.run_id,
                parent_run_id=self.parent_run_id,
                budget_limit=self._limit,
                replay_of=self.replay_of,
            ),
        )
        try:
            self._run = self._open_run(span.get_span_context())
        except AgentRelayError as exc:
            spans.end_span(span, exc)
            self.status = RunStatus.FAILED
            raise
        self._span = span
        self._run.open = True
        self._run.parent = parent if self._remote_parent is None else None
        services.session_opened(True, self.run_id, self._run)
        self._tokens = (otel_context.attach(trace.set_span_in_context(span)), self._run.enter())
        self.status = RunStatus.RUNNING

    def _cover_recorded_child(self, parent: Run) -> None:
        """A session opened inside a replay, fork or resume stands for the child run the recorded run
        opened at that point: replayed with its parent (so no child tool runs live), resumed with it."""
        child = parent.recorded_child(self.name)
        if parent.mode is RunMode.RESUME:
            if child is not None:
                self.mode, self.run_id, self._resuming_child = RunMode.RESUME, child, True
                self._spend = RunSpend(child, self._limit)
            return
        if child is None:
            raise ReplayDivergenceError(
                f"replay of run {parent.replay_of} diverged: the agent opened a session named {self.name!r} "
                f"inside it, which the recorded run did not open there. No tool body ran. Replay with the "
                f"inputs of the recorded run, or fork it (fork_after=...) to go live from the point of "
                f"change.",
                tool_name=self.name,
                run_id=parent.run_id,
                source_run_id=parent.replay_of or "",
                position=-1,
            )
        self.mode, self.replay_of = RunMode.REPLAY, child

    def _open_run(self, ctx: trace.SpanContext) -> Run:
        """The run this session records: a new one (live, or a replay / fork of ``replay_of``, whose calls
        are loaded here), the resumed one, or the one it unwinds."""
        ledger = self._services.ledger
        if self.mode is RunMode.RECOVER:
            first = ledger.max_seq(self.run_id) + 1
            return Run(
                self._services,
                self.run_id,
                self.name,
                self.mode,
                self._spend,
                first_seq=first,
                keys=self._keys,
            )
        if self.mode is RunMode.RESUME:
            return self._resume()
        source, keys = None, self._services.keys.current
        if self.replay_of is not None:
            recorded = ledger.get_run(self.replay_of)
            if recorded is None:
                raise UnknownRunError(self.replay_of, ledger.database)
            keys = self._services.keys.for_run(recorded)
            source = ReplaySource(self.replay_of, ledger.forward_calls(self.replay_of), self.fork_after)
        self.trace_id = format_trace_id(ctx.trace_id) if ctx.is_valid else None
        ledger.insert_run(
            run_id=self.run_id,
            name=self.name,
            status=RunStatus.RUNNING,
            mode=self.mode,
            replay_of=self.replay_of,
            fork_after=self.fork_after,
            parent_run_id=self.parent_run_id,
            input_payload=self._input,
            budget_limit_usd=self._limit,
            trace_id=self.trace_id,
            span_id=format_span_id(ctx.span_id) if ctx.is_valid else None,
            owner=self._services.owner,
            started_at=dt.datetime.now(dt.UTC),
            key_version=keys.version,
            key_id=keys.key_id,
            unwind_with_parent=self.unwind_with_parent,
        )
        return Run(self._services, self.run_id, self.name, self.mode, self._spend, replay=source, keys=keys)

    def _resume(self) -> Run:
        """Continue run ``run_id``: its totals, its budget, its next ``seq``."""
        ledger, run_id = self._services.ledger, self.run_id
        row = ledger.get_run(run_id)
        if row is None:
            raise UnknownRunError(run_id, ledger.database)
        keys = self._services.keys.for_run(row)
        if row.status in (RunStatus.COMPENSATED, RunStatus.COMPENSATION_FAILED, RunStatus.CANCELLED):
            raise SessionStateError(
                f"run {run_id} was compensated ({row.status}), so it cannot be resumed; start a new run."
            )
        if row.status == RunStatus.SUCCEEDED and not self._resuming_child:  # (a child: served again)
            raise SessionStateError(
                f"run {run_id} succeeded; there is nothing to resume (replay it instead)."
            )
        # A run still running elsewhere may be resumed too (several workers on one run): each call's
        # pending-row claim decides who runs it, and the others wait for it and are served.
        self.trace_id, self.parent_run_id = row.trace_id, row.parent_run_id
        limit = self._limit if self._budget_given else row.budget_limit_usd
        cost, unknown, inp, out = ledger.call_totals(run_id)  # the run's recorded totals, or its calls'
        self._spend.carry(
            limit=limit,
            spent=max(cost, row.cost_usd or Decimal(0)),
            unknown=unknown or bool(row.cost_unknown),
            inp=max(inp, row.input_tokens or 0),
            out=max(out, row.output_tokens or 0),
        )
        first = ledger.max_seq(run_id) + 1
        ledger.finish_run(
            run_id,
            status=RunStatus.RUNNING,
            mode=RunMode.RESUME,
            owner=self._services.owner,
            ended_at=None,
            error_type=None,
            error_message=None,
            budget_limit_usd=limit,
        )
        return Run(self._services, run_id, self.name, RunMode.RESUME, self._spend, first_seq=first, keys=keys)

    def _unwind(self) -> Saga:
        assert self._run is not None
        self._saga = Saga(self._services, self._run, self.mode, self.compensation_errors)
        return self._saga

    def _should_unwind(self, exc: BaseException | None) -> bool:
        """An exception unwinds the run, unless it met a call in doubt: then it stops there (``in_doubt``),
        so the call can be settled and the run resumed. A cancelled run unwinds however its block ended."""
        assert self._run is not None
        unwinds = self.status == RunStatus.RUNNING and self.mode is not RunMode.RECOVER
        if not unwinds:
            return False
        if isinstance(exc, ClaimLostError):  # the run is another worker's now: leave it be
            return False
        if isinstance(exc, RunCancelledError) and not self._run.cancelled:  # (a child saw it first)
            with contextlib.suppress(LedgerError):
                self._run.cancelled, self._run.cancel_reason = self._services.ledger.cancel_requested(
                    self.run_id
                )
        if self._run.cancelled:
            return exc is None or isinstance(exc, Exception)
        return isinstance(exc, Exception) and not self._run.in_doubt and not self._run.awaiting_approval

    def _final_status(self, exc: BaseException | None) -> RunStatus:
        assert self._run is not None
        if self.compensation_errors:
            return RunStatus.COMPENSATION_FAILED
        if self._run.cancelled:
            return RunStatus.CANCELLED
        if exc is not None and self._run.in_doubt and self.mode is not RunMode.RECOVER:
            return RunStatus.IN_DOUBT
        if exc is not None and self._run.awaiting_approval:
            return RunStatus.AWAITING_APPROVAL
        if self._saga is not None and self._saga.compensated:
            return RunStatus.COMPENSATED
        return RunStatus.FAILED if exc is not None or self.mode is RunMode.RECOVER else RunStatus.SUCCEEDED

    def _finish(self, exc: BaseException | None) -> None:
        assert self._span is not None and self._tokens is not None and self._run is not None
        span, (otel_token, run_token), run = self._span, self._tokens, self._run
        run.open = False
        self._services.session_opened(False, self.run_id, run)
        self.status = self._final_status(exc)
        if run.replay is not None:
            self.unrequested_calls = run.replay.unrequested()
            span.set_attribute(semconv.REPLAY_UNREQUESTED, len(self.unrequested_calls))
        ledger = self._services.ledger
        values: dict[str, Any] = {"status": self.status, "ended_at": dt.datetime.now(dt.UTC)}
        if self.mode is RunMode.RESUME:
            # other workers may have resumed the run too: count every call, not just this worker's
            try:
                cost, unknown, inp, out = ledger.call_totals(self.run_id)
                self._spend.at_least(spent=cost, unknown=unknown, inp=inp, out=out)
            except LedgerError:
                pass
        spend = self._spend
        if self.mode is not RunMode.RECOVER:
            values.update(
                output=self._output,
                error_type=spans.error_type_name(exc) if exc is not None else None,
                error_message=safe_text(scrub(str(exc), run.secrets)) if exc is not None else None,
                cost_usd=spend.spent,
                cost_unknown=spend.unknown,
                input_tokens=spend.input_tokens,
                output_tokens=spend.output_tokens,
            )
        ledger_error = run.served.flush()
        try:
            if not isinstance(exc, ClaimLostError):  # (its end is the worker's that took the run over)
                # a budgeted run's cost_usd counts every worker's calls as they end: never lowered here
                ledger.finish_run(self.run_id, keep_higher_cost=spend.limit is not None, **values)
        except LedgerError as err:
            ledger_error = ledger_error or err
        if exc is not None:
            spans.mark_error(span, exc, run.secrets)
            for failure in self.compensation_errors:
                exc.add_note(f"agent-relay: {failure}")
        span.set_attributes(
            {semconv.RUN_STATUS: self.status}
            | spans.outcome_attributes(
                cost_usd=spend.spent, input_tokens=spend.input_tokens, output_tokens=spend.output_tokens
            )
        )
        if spend.limit is not None:
            span.set_attribute(semconv.BUDGET_SPENT_USD, float(spend.spent))
            span.set_attribute(semconv.BUDGET_EXCEEDED, spend.exceeded)
            if spend.exceeded:
                span.add_event(
                    semconv.EVENT_BUDGET_EXCEEDED,
                    {
                        semconv.BUDGET_LIMIT_USD: float(spend.limit),
                        semconv.BUDGET_SPENT_USD: float(spend.spent),
                    },
                )
        self._services.instruments.run(self.name, self.status, self.mode, budget_exceeded=spend.exceeded)
        if spend.unknown:
            span.set_attribute(semconv.COST_UNKNOWN, True)
        span.end()
        Run.leave(run_token)
        otel_context.detach(otel_token)  # type: ignore[arg-type]
        if ledger_error is not None:
            if exc is None:
                raise ledger_error
            exc.add_note(f"agent-relay: the end of run {self.run_id} was not recorded: {ledger_error}")
