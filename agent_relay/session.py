"""``AgentSession``: one recorded run, from ``agent_session(...)`` entry to exit.

A session is carried by a context variable, so it is visible to every tool called in its ``with`` block,
in threads started with ``contextvars.copy_context()`` and in every asyncio task created inside it. It is
thread-safe: parallel tool calls in one session are recorded without loss, and two concurrent calls with
one idempotency key run the tool once (the second waits and is served).

Nesting: a session opened inside another records its own run, linked to the outer run by
``parent_run_id``, with its span a child of the outer session's span; tools called inside belong to the
inner run until it exits.

Saga: when the block raises an ``Exception`` (``BudgetExceededError`` included), every succeeded forward
call whose tool names a compensation is compensated, latest first, before the exception propagates —
unchanged, with any compensation failures attached as notes and on ``compensation_errors``.
``BaseException``s that are not ``Exception``s (``KeyboardInterrupt``, ``SystemExit``) leave the run
``failed`` without unwinding; ``runtime.compensate(run_id)`` unwinds it later.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import itertools
import threading
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode, format_span_id, format_trace_id

from . import compensation, semconv
from .budget import BudgetMeter, parse_limit
from .calls import Invocation, active_invocation, execute, execute_async
from .context import Flight, _current_session, error_type_name
from .encoding import JSONValue, encode
from .errors import (
    AgentRelayError,
    BudgetExceededError,
    EncodingError,
    LedgerError,
    OutputEncodingError,
    SessionStateError,
    UnknownRunError,
    UnpricedUsageError,
    UnpricedUsageWarning,
)
from .keys import FORWARD
from .ledger.records import CallRecord
from .pricing import to_usd
from .replay import ReplaySource
from .usage import TokenUsage

if TYPE_CHECKING:
    from .runtime import AgentRuntime

RUNNING: Final = "running"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
COMPENSATED: Final = "compensated"
COMPENSATION_FAILED: Final = "compensation_failed"

MODE_LIVE: Final = "live"
MODE_REPLAY: Final = "replay"
MODE_FORK: Final = "fork"
MODE_RESUME: Final = "resume"

_MISSING: Any = object()
_REPLAY_BATCH = 256
# Succeeded calls a live or resumed session keeps in memory to serve again; past this many, the least
# recently used are dropped and served from the ledger instead (a read), so a long session's memory stays
# flat. (A replay or fork keeps them all: its source run's rows are in memory anyway.)
DEDUP_INDEX_SIZE = 1024
_EVICTED_BITS = 1 << 18  # a Bloom filter of the dropped calls' keys (32 KiB, made on the first drop)


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


class AgentSession:
    """One run of an agent, recorded as an ``agent_runs`` row and an ``invoke_agent`` span.

    Use it once, as ``with runtime.agent_session(...) as session`` or ``async with``. On exit the run is
    marked ``succeeded``; when the block raised, ``failed`` — or ``compensated`` /
    ``compensation_failed`` when the saga had something to undo — with the error's type and message.
    """

    def __init__(
        self,
        runtime: AgentRuntime,
        name: str,
        input_payload: Any = None,
        *,
        budget_limit: Any = None,
        replay: bool = False,
        replay_run_id: str | None = None,
        fork_after: int | None = None,
        resume_run_id: str | None = None,
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise SessionStateError(f"agent_session(name=...) must be a non-empty string, not {name!r}.")
        self.mode = _mode(replay, replay_run_id, fork_after, resume_run_id)
        self.replay_of = replay_run_id
        self.fork_after = fork_after
        self._resume_run_id = resume_run_id
        self._replay: ReplaySource | None = None
        self.unrequested_calls: list[Any] = []
        self._runtime = runtime
        self.name = name
        self._budget_given = budget_limit is not None
        self._meter = BudgetMeter(parse_limit(budget_limit))
        self._input = encode(input_payload, root="input_payload", what="agent_session:", error=EncodingError)
        self.run_id = str(uuid.uuid4())
        self.parent_run_id: str | None = None
        self.trace_id: str | None = None
        self.status = "new"
        self.compensation_errors: list[CompensationFailure] = []
        self._output: JSONValue = None
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        # (phase, key) -> (arguments, output) of succeeded calls, least recently used first
        self._done: OrderedDict[tuple[str, str], tuple[JSONValue, JSONValue]] = OrderedDict()
        self._evicted: bytearray | None = None  # which keys the index dropped (see _maybe_evicted)
        self._occurrences: dict[str, int] = {}
        self._tries: dict[tuple[str, str], int] = {}  # durability "outcome": failed tries by (phase, key)
        self._replayed: list[CallRecord] = []  # a replay's rows, written in batches
        self._replay_writes: list[Future[None]] = []  # batches being written in the background
        self._model_call_parents: set[int] = set()  # spans that wrap a model call recorded here
        self._inflight: dict[tuple[str, str], Any] = {}
        self._input_tokens = 0
        self._output_tokens = 0
        self._unwinding = False
        self._recovering = False
        self._compensations_run = 0
        self._span: trace.Span | None = None
        self._tokens: tuple[Any, Any] | None = None

    # --- public --------------------------------------------------------------------------------------
    @property
    def runtime(self) -> AgentRuntime:
        return self._runtime

    @property
    def budget_limit(self) -> Decimal | None:
        return self._meter.limit

    @property
    def cost_usd(self) -> Decimal:
        """What the run has cost so far, in USD (a lower bound when ``cost_unknown``)."""
        return self._meter.spent

    @property
    def cost_unknown(self) -> bool:
        """True when some usage of the run could not be priced."""
        return self._meter.unknown

    @property
    def input_tokens(self) -> int:
        return self._input_tokens

    @property
    def output_tokens(self) -> int:
        return self._output_tokens

    def set_output(self, value: Any) -> None:
        """Store the run's result (canonical JSON) on its ``agent_runs`` row when the session exits."""
        if self.status != RUNNING:
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
            else self._runtime.prices.cost(usage)
        )
        if self.status != RUNNING:
            raise SessionStateError(f"record_usage() on session {self.name!r} which is {self.status}.")
        call = active_invocation()
        if call is not None and call.session is self:
            call.add_usage(usage, cost)
            return cost
        passed = self._charge(usage, cost)
        if cost is None:
            self._unpriced(model, provider)
        if passed:
            raise self._budget_error(None)
        return cost

    def _charge(self, usage: TokenUsage, cost: Decimal | None) -> bool:
        """Count usage made outside any recorded call; True when it passed the budget. Never raises: a
        budget passed this way refuses the next call."""
        with self._lock:
            self._input_tokens += usage.input_tokens
            self._output_tokens += usage.output_tokens
            passed = self._meter.add(cost)
        self._runtime._instruments.usage(
            usage.model, usage.provider, usage.input_tokens, usage.output_tokens, cost
        )
        return passed

    def __enter__(self) -> AgentSession:
        self._start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._should_unwind(exc):
            self._unwind()
        self._finish(exc)

    async def __aenter__(self) -> AgentSession:
        self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._should_unwind(exc):
            await self._unwind_async()
        self._finish(exc)

    def __repr__(self) -> str:
        return f"<AgentSession {self.name!r} run_id={self.run_id} status={self.status}>"

    # --- lifecycle -----------------------------------------------------------------------------------
    def _start(self) -> None:
        if self.status != "new":
            raise SessionStateError(
                f"session {self.name!r} (run {self.run_id}) was already entered; open a new one with "
                f"runtime.agent_session(...)."
            )
        runtime = self._runtime
        runtime._check_open()
        runtime._check_compensations()
        parent = _current_session.get()
        if parent is not None and not self._recovering:
            self.parent_run_id = parent.run_id
        attributes: dict[str, Any] = {
            semconv.GEN_AI_OPERATION_NAME: semconv.OPERATION_INVOKE_AGENT,
            semconv.GEN_AI_AGENT_NAME: self.name,
            semconv.RUN_ID: self.run_id,
        }
        if self.parent_run_id:
            attributes[semconv.PARENT_RUN_ID] = self.parent_run_id
        if self._meter.limit is not None:
            attributes[semconv.BUDGET_LIMIT_USD] = float(self._meter.limit)
        span = runtime._tracer.start_span(
            f"{semconv.OPERATION_INVOKE_AGENT} {self.name}", attributes=attributes
        )
        ctx = span.get_span_context()
        try:
            if self.mode == MODE_RESUME:
                self._attach_for_resume()
            elif not self._recovering:
                self._insert_run(ctx)
        except AgentRelayError as exc:
            span.set_status(Status(StatusCode.ERROR, str(exc)))
            span.set_attribute(semconv.ERROR_TYPE, error_type_name(exc))
            span.end()
            self.status = FAILED
            raise
        span.set_attribute(semconv.RUN_ID, self.run_id)
        if self.replay_of:
            span.set_attribute(semconv.REPLAY_OF, self.replay_of)
        self._span = span
        self._tokens = (otel_context.attach(trace.set_span_in_context(span)), _current_session.set(self))
        self.status = RUNNING

    def _insert_run(self, ctx: trace.SpanContext) -> None:
        """Record a new run (live, or a replay / fork of ``replay_of``, whose calls are loaded here)."""
        ledger = self._runtime.ledger
        if self.replay_of is not None:
            if ledger.get_run(self.replay_of) is None:
                raise UnknownRunError(self.replay_of, ledger.database)
            self._replay = ReplaySource(self.replay_of, ledger.forward_calls(self.replay_of), self.fork_after)
        self.trace_id = format_trace_id(ctx.trace_id) if ctx.is_valid else None
        ledger.insert_run(
            run_id=self.run_id,
            name=self.name,
            status=RUNNING,
            mode=self.mode,
            replay_of=self.replay_of,
            fork_after=self.fork_after,
            parent_run_id=self.parent_run_id,
            input_payload=self._input,
            budget_limit_usd=self._meter.limit,
            trace_id=self.trace_id,
            span_id=format_span_id(ctx.span_id) if ctx.is_valid else None,
            owner=self._runtime.owner,
            started_at=dt.datetime.now(dt.UTC),
        )

    def _attach_for_resume(self) -> None:
        """Continue run ``resume_run_id``: same run id, its totals, its next ``seq``."""
        ledger, run_id = self._runtime.ledger, self._resume_run_id
        assert run_id is not None
        row = ledger.get_run(run_id)
        if row is None:
            raise UnknownRunError(run_id, ledger.database)
        if row.status in (COMPENSATED, COMPENSATION_FAILED):
            raise SessionStateError(
                f"run {run_id} was compensated ({row.status}), so it cannot be resumed; start a new run."
            )
        if row.status == SUCCEEDED:
            raise SessionStateError(
                f"run {run_id} succeeded; there is nothing to resume (replay it instead)."
            )
        # A run still running elsewhere may be resumed too (several workers on one run): each call's
        # pending-row claim decides who runs it, and the others wait for it and are served.
        self.run_id, self.trace_id, self.parent_run_id = run_id, row.trace_id, row.parent_run_id
        if not self._budget_given and row.budget_limit_usd is not None:
            self._meter.limit = row.budget_limit_usd
        self._carry_totals(row)
        self._seq = itertools.count(ledger.max_seq(run_id) + 1)
        ledger.finish_run(
            run_id,
            status=RUNNING,
            mode=MODE_RESUME,
            owner=self._runtime.owner,
            ended_at=None,
            error_type=None,
            error_message=None,
            budget_limit_usd=self._meter.limit,
        )

    def _carry_totals(self, row: Any) -> None:
        """Start from what the run already spent: its recorded totals, or its calls' when it never ended."""
        cost, unknown, inp, out = self._runtime.ledger.call_totals(self.run_id)
        self._meter.add(max(cost, row.cost_usd or Decimal(0)))
        self._meter.unknown = unknown or bool(row.cost_unknown)
        self._input_tokens, self._output_tokens = (
            max(inp, row.input_tokens or 0),
            max(out, row.output_tokens or 0),
        )

    def _should_unwind(self, exc: BaseException | None) -> bool:
        return isinstance(exc, Exception) and self.status == RUNNING

    def _final_status(self, exc: BaseException | None) -> str:
        if self.compensation_errors:
            return COMPENSATION_FAILED
        if self._compensations_run:
            return COMPENSATED
        return FAILED if exc is not None or self._recovering else SUCCEEDED

    def _finish(self, exc: BaseException | None) -> None:
        assert self._span is not None and self._tokens is not None
        span, (otel_token, session_token) = self._span, self._tokens
        self.status = self._final_status(exc)
        if self._replay is not None:
            self.unrequested_calls = self._replay.unrequested()
            span.set_attribute(semconv.REPLAY_UNREQUESTED, len(self.unrequested_calls))
        values: dict[str, Any] = {"status": self.status, "ended_at": dt.datetime.now(dt.UTC)}
        if self.mode == MODE_RESUME:
            # other workers may have resumed the run too: count every call, not just this worker's
            with contextlib.suppress(LedgerError):
                cost, unknown, inp, out = self._runtime.ledger.call_totals(self.run_id)
                self._meter.spent = max(self._meter.spent, cost)
                self._meter.unknown |= unknown
                self._input_tokens, self._output_tokens = (
                    max(self._input_tokens, inp),
                    max(self._output_tokens, out),
                )
        if not self._recovering:
            values.update(
                output=self._output,
                error_type=error_type_name(exc) if exc is not None else None,
                error_message=str(exc) if exc is not None else None,
                cost_usd=self._meter.spent,
                cost_unknown=self._meter.unknown,
                input_tokens=self._input_tokens,
                output_tokens=self._output_tokens,
            )
        ledger_error = self._flush_replayed()
        try:
            self._runtime.ledger.finish_run(self.run_id, **values)
        except LedgerError as err:
            ledger_error = ledger_error or err
        if exc is not None:
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.set_attribute(semconv.ERROR_TYPE, error_type_name(exc))
            span.record_exception(exc)
            for failure in self.compensation_errors:
                exc.add_note(f"agent-relay: {failure}")
        span.set_attributes(
            {
                semconv.RUN_STATUS: self.status,
                semconv.COST_USD: float(self._meter.spent),
                semconv.GEN_AI_USAGE_INPUT_TOKENS: self._input_tokens,
                semconv.GEN_AI_USAGE_OUTPUT_TOKENS: self._output_tokens,
            }
        )
        if self._meter.limit is not None:
            span.set_attribute(semconv.BUDGET_SPENT_USD, float(self._meter.spent))
            span.set_attribute(semconv.BUDGET_EXCEEDED, self._meter.exceeded)
            if self._meter.exceeded:
                span.add_event(
                    semconv.EVENT_BUDGET_EXCEEDED,
                    {
                        semconv.BUDGET_LIMIT_USD: float(self._meter.limit),
                        semconv.BUDGET_SPENT_USD: float(self._meter.spent),
                    },
                )
        self._runtime._instruments.run(
            self.name, self.status, self.mode, budget_exceeded=self._meter.exceeded
        )
        if self._meter.unknown:
            span.set_attribute(semconv.COST_UNKNOWN, True)
        span.end()
        _current_session.reset(session_token)
        otel_context.detach(otel_token)
        if ledger_error is not None:
            if exc is None:
                raise ledger_error
            exc.add_note(f"agent-relay: the end of run {self.run_id} was not recorded: {ledger_error}")

    # --- the saga ------------------------------------------------------------------------------------
    def _unwind_steps(self) -> Iterator[tuple[compensation.Step, Invocation, dict[str, Any]]]:
        """The compensations to run, latest forward call first; planning failures are recorded."""
        self._unwinding = True
        try:
            rows = self._runtime.ledger.succeeded_forward_calls(self.run_id)
            steps = compensation.plan(rows, self._runtime.tools)
        except AgentRelayError as exc:
            self.compensation_errors.append(CompensationFailure("(plan)", None, None, exc))
            return
        for step in steps:
            try:
                call = Invocation.compensating(step, self)
                kwargs = compensation.compensation_kwargs(step)
            except Exception as exc:
                self._failed(step, exc)
                continue
            yield step, call, kwargs

    def _unwind(self) -> None:
        for step, call, kwargs in self._unwind_steps():
            try:
                if step.compensation.is_async:
                    _run_coroutine(execute_async(call, step.compensation.func, (), kwargs))
                else:
                    execute(call, step.compensation.func, (), kwargs)
                self._compensations_run += 1
            except Exception as exc:
                self._failed(step, exc)

    async def _unwind_async(self) -> None:
        for step, call, kwargs in self._unwind_steps():
            try:
                if step.compensation.is_async:
                    await execute_async(call, step.compensation.func, (), kwargs)
                else:
                    execute(call, step.compensation.func, (), kwargs)
                self._compensations_run += 1
            except Exception as exc:
                self._failed(step, exc)

    def _failed(self, step: compensation.Step, exc: BaseException) -> None:
        self.compensation_errors.append(
            CompensationFailure(step.compensation.name, step.forward.name, step.seq, exc)
        )

    # --- used by tool calls --------------------------------------------------------------------------
    def _reserve(self, phase: str, key: str, tool_name: str) -> tuple[str, Any]:
        """A call's fate: ("serve", output json) | ("wait", Flight) | ("run", seq) | ("refuse", error)."""
        with self._lock:
            if self.status != RUNNING:
                raise SessionStateError(
                    f"session {self.name!r} (run {self.run_id}) is {self.status}; tools can only be called "
                    f"inside its with-block."
                )
            done = self._done.get((phase, key), _MISSING)
            if done is not _MISSING:
                self._done.move_to_end((phase, key))
                return "serve", done
            flight = self._inflight.get((phase, key))
            if flight is not None:
                return "wait", flight
            if phase == FORWARD:
                if self._unwinding:
                    return "refuse", SessionStateError(
                        f"tool {tool_name!r} was called while run {self.run_id} is being compensated; "
                        f"compensations cannot start forward calls."
                    )
                if self._meter.exceeded:
                    return "refuse", self._budget_error(tool_name, refused=True)
            fate, payload = ("live", None) if self._replay is None else self._replay.decide(key)
            if fate == "diverge":
                return "diverge", (next(self._seq), payload)
            self._inflight[(phase, key)] = Flight()
            return ("run" if fate == "live" else "replay"), (next(self._seq), payload)

    def _release(self, phase: str, key: str, done: tuple[JSONValue, JSONValue] | None = None) -> None:
        """Settle a reserved call: succeeded (``done`` = its arguments and output) or not; wake waiters."""
        with self._lock:
            if done is not None:
                self._done[(phase, key)] = done
                if len(self._done) > DEDUP_INDEX_SIZE and self._replay is None:
                    (_, dropped), _ = self._done.popitem(last=False)
                    if self._evicted is None:
                        self._evicted = bytearray(_EVICTED_BITS // 8)
                    for bit in _filter_bits(dropped):
                        self._evicted[bit >> 3] |= 1 << (bit & 7)
            flight = self._inflight.pop((phase, key), None)
        if flight is not None:
            flight.land()

    def _maybe_evicted(self, key: str) -> bool:
        """Whether the index may have dropped the call with this key (False: it never held it). A Bloom
        filter: fixed in size, so it may say yes for a key it never dropped (a needless ledger read)."""
        evicted = self._evicted
        return evicted is not None and all(evicted[b >> 3] & (1 << (b & 7)) for b in _filter_bits(key))

    def _record_replayed(self, record: CallRecord, *, flush: bool = False) -> None:
        """Queue a replay's row. A full queue is written in one transaction on the ledger's background
        writer; ``flush`` writes it at once, here. A replay protects no side effect, so its rows need not
        cost the caller a commit each: a replay killed mid-run loses at most its unwritten rows, never a
        real call's record. A batch that failed is raised at the next batch, or when the session ends."""
        with self._lock:
            self._replayed.append(record)
            if not flush and len(self._replayed) < _REPLAY_BATCH:
                return
            batch, self._replayed = self._replayed, []
        if flush:
            self._runtime.ledger.insert_complete(batch)
            return
        write = self._runtime.ledger.write_in_background(batch)
        with self._lock:
            failed = [w for w in self._replay_writes if w.done() and w.exception() is not None]
            self._replay_writes = [w for w in self._replay_writes if not w.done()] + [write]
        for done in failed:
            done.result()  # raises that batch's LedgerError (this one is on its way)

    def _flush_replayed(self) -> LedgerError | None:
        """Write the queued rows and wait for the background batches; the first failure, if any."""
        with self._lock:
            batch, self._replayed = self._replayed, []
            writes, self._replay_writes = self._replay_writes, []
        error: LedgerError | None = None
        for write in writes:
            try:
                write.result()
            except LedgerError as err:
                error = error or err
        try:
            self._runtime.ledger.insert_complete(batch)
        except LedgerError as err:
            error = error or err
        return error

    def _occurrence(self, base_key: str) -> int:
        """How many times a non-deduplicated call with this key was made before in this session."""
        with self._lock:
            n = self._occurrences.get(base_key, 0)
            self._occurrences[base_key] = n + 1
            return n

    def _after_call(self, record: CallRecord, cost: Decimal | None, *, raise_budget: bool = True) -> None:
        """Count a finished call's cost and tokens; raise if it passed the budget or could not be priced."""
        with self._lock:
            self._input_tokens += record.input_tokens or 0
            self._output_tokens += record.output_tokens or 0
            passed = self._meter.add(cost) if cost is not None else False
            if record.cost_unknown:
                self._meter.add(None)
        if record.cost_unknown:
            self._unpriced(record.model or "?", None, raise_error=raise_budget)
        if passed and raise_budget and record.phase == FORWARD:
            raise self._budget_error(record.tool_name)

    def _unpriced(self, model: str, provider: str | None, *, raise_error: bool = True) -> None:
        if self._meter.limit is not None:
            if raise_error:
                raise UnpricedUsageError(model=model, provider=provider, run_id=self.run_id)
            return
        warnings.warn(
            f"agent-relay: no price is known for model {model!r}; run {self.run_id} records its usage as "
            f"unpriced (cost_unknown). Pass cost_usd=, or AgentRuntime(prices=...).",
            UnpricedUsageWarning,
            stacklevel=3,
        )

    def _budget_error(self, tool_name: str | None, *, refused: bool = False) -> BudgetExceededError:
        assert self._meter.limit is not None
        return BudgetExceededError(
            limit=self._meter.limit,
            spent=self._meter.spent,
            run_id=self.run_id,
            tool_name=None if refused else tool_name,
        )


def _filter_bits(key: str) -> tuple[int, int]:
    """Two bit positions for an idempotency key (64 hex digits of SHA-256: already uniformly random)."""
    return int(key[:8], 16) % _EVICTED_BITS, int(key[8:16], 16) % _EVICTED_BITS


def _mode(replay: bool, replay_run_id: str | None, fork_after: int | None, resume_run_id: str | None) -> str:
    """Validate the replay / fork / resume options together; return the run's mode."""
    if resume_run_id is not None:
        if replay or replay_run_id is not None or fork_after is not None:
            raise SessionStateError(
                "resume_run_id cannot be combined with replay, replay_run_id or fork_after."
            )
        if not isinstance(resume_run_id, str) or not resume_run_id:
            raise SessionStateError(f"resume_run_id must be a run id, not {resume_run_id!r}.")
        return MODE_RESUME
    if fork_after is not None:
        if isinstance(fork_after, bool) or not isinstance(fork_after, int) or fork_after < 0:
            raise SessionStateError(f"fork_after must be an int >= 0 (calls to replay), not {fork_after!r}.")
        if replay_run_id is None:
            raise SessionStateError("fork_after needs replay_run_id=..., the run to fork.")
        return MODE_FORK
    if replay_run_id is not None and not isinstance(replay_run_id, str):
        raise SessionStateError(f"replay_run_id must be a run id, not {replay_run_id!r}.")
    if replay and replay_run_id is None:
        raise SessionStateError("replay=True needs replay_run_id=..., the run to replay.")
    if replay_run_id is not None and not replay:
        raise SessionStateError("replay_run_id needs replay=True (or fork_after=K to fork the run).")
    return MODE_REPLAY if replay else MODE_LIVE


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
