"""``CallBase``: one tool call's identity (arguments, key), and what every path it can take shares —
its span, its metric, its reservation in the run's call table, its cost counted against the run.
``ServedCall`` (served without running) and ``Invocation`` (the live path) build on it."""

from __future__ import annotations

import contextlib
from decimal import Decimal
from typing import Any, NoReturn, Self

from opentelemetry.trace import Span

from . import semconv, spans
from .calltable import Serve
from .compensation import Step
from .encoding import JSONValue, canonical_dumps
from .errors import ConfigurationError, IdempotencyKeyReuseError, LedgerError
from .keys import call_id, idempotency_key
from .ledger.processor import BoundCall
from .ledger.records import CallRecord
from .replay import argument_diff
from .run import Run
from .services import Services
from .spec import ToolSpec
from .states import Origin, Phase

MAX_ERROR_MESSAGE = 4000
_NONE: frozenset[str] = frozenset()
# what a call is, as opposed to what one try of it did (see ``again``)
_IDENTITY = (
    "args_json", "args_text", "call_id", "compensates", "key", "model", "model_call_id", "phase", "run",
    "secrets", "services", "spec", "user_key",
)  # fmt: skip
_ZERO = Decimal(0)


class CallBase:
    """What every path of one tool call shares: its key, its span, its reservation, its cost. Not
    shared between threads."""

    __slots__ = (
        "args_json",
        "args_text",
        "batched",
        "bound",
        "call_id",
        "compensates",
        "deadline",
        "hold",
        "key",
        "model",
        "model_call_id",
        "output_json",
        "phase",
        "record",
        "run",
        "scope",
        "secrets",
        "services",
        "span",
        "spec",
        "usage_cost",
        "user_key",
    )

    def __init__(
        self,
        services: Services,
        run: Run,
        spec: ToolSpec,
        phase: Phase,
        args_json: dict[str, JSONValue],
        *,
        user_key: str | None = None,
        occurrence: int | None = None,
        compensates: Step | None = None,
    ):
        if run.services is not services or services.tools.get(spec.name) is not spec:
            raise ConfigurationError(
                f"tool {spec.name!r} is registered on another runtime than the one running session "
                f"{run.name!r}; register it with @tool(<that session's runtime>, ...)."
            )
        self.services = services
        self.run = run
        self.spec = spec
        self.phase = phase
        self.args_json = args_json
        self.user_key = user_key
        self.compensates = compensates
        model = args_json.get("model") if spec.kind == "llm" else None
        # a model call (an llm tool given a model) has an inference span, as the GenAI conventions say
        self.model = model if isinstance(model, str) else None
        # the arguments' canonical text makes the key and, unless redacted, the ledger's arguments column
        self.args_text = canonical_dumps(args_json) if user_key is None else None
        self.key = idempotency_key(
            spec.name,
            phase,
            args_json,
            user_key=user_key,
            occurrence=occurrence,
            arguments_text=self.args_text,
            scheme=run.keys,
        )
        self.call_id = call_id(run.run_id, phase, self.key)  # the ledger's id of this call
        self.model_call_id: str | None = None  # the model's own id for it, when a framework passed it in
        # the redacted values among the arguments: scrubbed out of every message about this call (and the
        # run's), since an error may quote them
        self.secrets = spec.content.redactor.secrets(args_json) if spec.content.redacts else _NONE
        if self.secrets:
            run.secrets.update(self.secrets)
        self.record: CallRecord | None = None
        self.span: Span | None = None
        self.bound: BoundCall | None = None  # the row's writes (made by the span processor, if it sees them)
        self.batched = False  # its claim went with other calls' (the processor never saw its span)
        self.output_json: JSONValue = None
        self.deadline: float | None = None  # waiting on another worker's row: until when
        self.usage_cost = _ZERO
        self.scope: str | None = None  # this try and its global key (``keyscope``): held, or waited on
        # a budgeted run's live call: what it reserved on the run's row and has not settled (None: no budget)
        self.hold: Decimal | None = None

    def again(self) -> Self:
        """The same call (arguments, key, ids) for another try: nothing of this try's state."""
        other = object.__new__(type(self))
        for name in _IDENTITY:
            setattr(other, name, getattr(self, name))
        other.record = other.span = other.bound = other.output_json = other.deadline = None
        other.batched = False
        other.scope = None
        other.usage_cost = _ZERO
        other.hold = None
        return other

    # --- the span --------------------------------------------------------------------------------------
    def start_span(self, seq: int | None = None, extra: dict[str, Any] | None = None) -> Span:
        step = self.compensates
        spec = self.spec
        attributes = spans.call_attributes(
            spec.name,
            self.phase,
            self.key[: self.services.span_key_chars],
            self.run.run_id,
            self.call_id,
            self.model,
            spec.provider,
            seq,
            None if step is None else (step.call_id, step.seq, step.forward.name),
        )
        if self.model_call_id is not None:  # the model's id names the call on its span; ours stays beside
            attributes[semconv.GEN_AI_TOOL_CALL_ID] = self.model_call_id
            attributes[semconv.CALL_ID] = self.call_id
        if extra:
            attributes.update(extra)
        if self.spec.content.capture:  # opt-in, redacted and truncated before it reaches the span
            attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = self.spec.content.span_text(self.args_json)
        if self.model is None:
            return self.services.tracer.start_span(self.spec.span_name, attributes=attributes)  # (INTERNAL)
        span = self.services.tracer.start_span(
            spans.call_span_name(self.spec.name, self.model),
            kind=spans.call_span_kind(self.model),
            attributes=attributes,
        )
        parent = getattr(span, "parent", None)
        if parent is not None:  # another instrumentation's span around a model call recorded or served here:
            self.run.model_call_parents.add(parent.span_id)  # its usage is this call's, never charged again
        return span

    def metric(self, status: str, origin: str, record: CallRecord | None = None) -> None:
        instruments = self.services.instruments
        if not instruments.recording:
            return
        duration = None
        if record is not None and record.started_ns and record.ended_ns and origin == Origin.LIVE:
            duration = (record.ended_ns - record.started_ns) / 1e9
        instruments.call(
            self.spec.name,
            self.phase,
            status,
            origin,
            agent=self.run.name,
            duration_s=duration,
            cost=record.cost_usd if record is not None else None,
            model=record.model if record else None,
        )

    def release(self, output: Any = None, *, succeeded: bool = False) -> None:
        """Settle the reservation; a succeeded call is kept to serve again (with its arguments only when a
        caller-supplied key must be checked against them: the index grows with every call)."""
        done = Serve(self.args_json if self.user_key is not None else None, output) if succeeded else None
        self.run.table.release(self.phase, self.key, done)
        if self.hold:  # a reservation no outcome's write settled (served after all, or the write failed)
            hold, self.hold = self.hold, None
            # (a failed release fails closed: the run's row keeps it reserved, so fewer calls are admitted)
            with contextlib.suppress(LedgerError):
                self.services.ledger.calls.release(self.run.run_id, hold)

    def abandon(self, exc: BaseException) -> NoReturn:
        """End the span with ``exc``, release the reservation and raise ``exc``; the tool does not run."""
        assert self.span is not None
        spans.end_span(self.span, exc, self.secrets)
        self.release()
        raise exc

    def check_user_key(self, recorded_arguments: Any) -> None:
        """Stripe's rule: a caller-supplied key may only be reused with the same arguments."""
        err = self.key_reuse(recorded_arguments, self.run.run_id)
        if err is None:
            return
        if self.span is not None and self.span.is_recording() and self.record is not None:
            self.abandon(err)
        raise err

    def key_reuse(self, recorded_arguments: Any, run_id: str) -> IdempotencyKeyReuseError | None:
        """The error of a caller-supplied key used before (in run ``run_id``) with other arguments than
        this call's; ``None`` when they are the same (or the ledger's redacted copy of them)."""
        if self.user_key is None or recorded_arguments == self.args_json:
            return None
        redact = self.spec.content.redactor  # (the message reaches spans and the ledger)
        if recorded_arguments == self.spec.content.for_ledger(self.args_json):
            return None  # the ledger's (redacted) copy of the same arguments
        return IdempotencyKeyReuseError(
            tool_name=self.spec.name,
            user_key=self.user_key,
            run_id=run_id,
            difference=argument_diff(recorded_arguments or {}, self.args_json, redact),
        )

    def failed(self, exc: BaseException) -> None:
        """Record the live call as failed with ``exc`` (``Invocation``: the live path)."""
        raise NotImplementedError

    def count(self, cost: Decimal | None, *, raise_budget: bool = True) -> None:
        """Count a finished call's cost and tokens against the run; raise if it passed the budget or
        could not be priced."""
        record, spend = self.record, self.run.spend
        assert record is not None
        if cost is None and record.input_tokens is None and not record.cost_unknown:
            return  # (most tools cost nothing and use no model: nothing to count)
        passed = spend.charge(
            cost,
            input_tokens=record.input_tokens or 0,
            output_tokens=record.output_tokens or 0,
            unknown=record.cost_unknown,
        )
        if record.cost_unknown:
            spend.unpriced(record.model or "?", None, raise_error=raise_budget)
        if passed and raise_budget and record.phase == Phase.FORWARD:
            raise spend.budget_error(record.tool_name)
