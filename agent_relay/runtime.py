"""``AgentRuntime``: the ledger, the tracer provider and the tool registry, shared by every session.

A runtime is thread-safe and meant to live as long as the program: create it once (``from_env()`` or the
constructor), decorate tools with ``@tool(runtime, ...)``, open sessions with ``runtime.agent_session``,
and ``shutdown()`` (or use it as a context manager) at exit. Nothing happens at import time; the
constructor opens the ledger (creating its tables on an empty database) and builds the provider.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from types import MappingProxyType, TracebackType
from typing import Any

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.trace import Tracer

from . import semconv
from ._version import __version__
from .calls import active_invocation
from .content import ContentPolicy
from .errors import ConfigurationError, SessionStateError, UnknownRunError
from .keyring import KeyRing, SecretSource, span_key_chars, supplied_secrets
from .ledger import LedgerOptions, LedgerSpanProcessor, LedgerStore
from .ledger.connection import default_owner, owner_is_gone
from .ledger.records import check_durability, durability_from_env
from .metrics import Instruments
from .pricing import ModelPrice, PriceTable
from .run import current_run
from .services import Services
from .session import AgentSession
from .spec import ToolSpec
from .states import CallStatus, Durability, RunStatus
from .telemetry import (
    DATABASE_URL_ENV,
    DEFAULT_DATABASE_URL,
    build_meter_provider,
    build_tracer_provider,
    global_sdk_provider,
    metric_readers_from_env,
    sdk_provider,
    span_exporters_from_env,
    stoppable,
)
from .usage import TokenUsage

_TRACER_NAME = "agent_relay"
_FLUSH_GRACE_S = 1.0


class AgentRuntime:
    """Owns the ledger's database connection, the tracer provider and the registry of tools.

    ``database_url``: a SQLAlchemy URL (default ``sqlite:///agent_relay.db`` in the working directory).
    ``tracer_provider``: an OpenTelemetry SDK ``TracerProvider`` (or a proxy exposing one as
    ``.provider``) to record on; AgentRuntime adds its ``LedgerSpanProcessor`` to it and leaves the rest
    (exporters, shutdown) to its owner. Without one, the provider the application set globally is used
    the same way (``use_global_provider=False``, or ``span_exporters``, to opt out); failing that the
    runtime builds and owns a provider exporting to ``span_exporters`` (default: none) under
    ``service_name``. The global tracer provider is never set. Metrics go to ``meter_provider``, or to a
    provider of the runtime's own reading with ``metric_readers`` (none: metrics are not recorded).
    ``content``: whether arguments and results reach spans, and what is redacted
    (``ContentPolicy``; default: they do not). ``prices``: your own prices by model name
    (``{"my-model": ModelPrice(input_per_mtok=1, output_per_mtok=2)}``), consulted before the
    ``genai-prices`` table. ``durability``: what a live tool call commits, by default for every tool
    (``@tool(durability=...)`` overrides it): ``"strict"`` (default) a pending row before the body runs
    and the outcome before the call returns, so a crash mid-call leaves a call known to be in doubt;
    ``"outcome"`` only the outcome, one commit instead of two, so a call whose process died mid-body
    simply runs again on resume (at-least-once, as a DBOS step or a Temporal activity). See the README's
    "Durability". ``key_secret``: the secret idempotency keys are keyed with (text or bytes of 16+ bytes;
    a list, newest first, to keep older runs replayable; or a callable returning either), default
    ``AGENT_RELAY_KEY_SECRET``, else the ledger's own. ``span_key``: what a call's span shows of its
    key — ``"full"`` (default, or ``AGENT_RELAY_SPAN_KEY``), ``"short"`` (16 hex digits) or ``"none"``;
    the ledger always has the whole key. See the README's "Idempotency keys".
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        tracer_provider: TracerProvider | None = None,
        span_exporters: Sequence[SpanExporter] = (),
        meter_provider: MeterProvider | None = None,
        metric_readers: Sequence[MetricReader] = (),
        service_name: str | None = None,
        content: ContentPolicy | None = None,
        ledger_options: LedgerOptions | None = None,
        prices: Mapping[str, ModelPrice] | None = None,
        wait_timeout_s: float = 60.0,
        durability: str = Durability.STRICT,
        use_global_provider: bool = True,
        key_secret: SecretSource | None = None,
        span_key: str | None = None,
    ) -> None:
        checked = check_durability(durability, "AgentRuntime(durability=...)")
        secrets = supplied_secrets(key_secret)
        key_chars = span_key_chars(span_key)
        if tracer_provider is not None:
            given, tracer_provider = tracer_provider, sdk_provider(tracer_provider)
            if tracer_provider is None:
                raise ConfigurationError(
                    f"tracer_provider must be an opentelemetry.sdk.trace.TracerProvider, or a proxy with one "
                    f"as its .provider (the ledger is a span processor on it), not {type(given).__name__}."
                )
        elif use_global_provider and not span_exporters:
            tracer_provider = global_sdk_provider()  # the application's own setup, when it made one
        if tracer_provider is not None and span_exporters:
            raise ConfigurationError(
                "pass span_exporters only when the runtime builds its own provider; add exporters to your "
                "own tracer_provider yourself."
            )
        prices_table = PriceTable(prices)
        self.ledger = LedgerStore(database_url or DEFAULT_DATABASE_URL, ledger_options)
        try:
            self.ledger.open()
            keys = KeyRing(secrets, self.ledger, self.ledger.database)
        except BaseException:
            self.ledger.dispose()
            raise
        self._owns_provider = tracer_provider is None
        self._exporters = stoppable(span_exporters)
        self._provider = tracer_provider or build_tracer_provider(service_name, self._exporters, os.environ)
        self._processor = LedgerSpanProcessor(
            self.ledger.calls, usage_sink=self._count_foreign_usage, own_scope=_TRACER_NAME
        )
        self._provider.add_span_processor(self._processor)
        tracer: Tracer = self._provider.get_tracer(_TRACER_NAME, __version__)
        self._owns_meter_provider = meter_provider is None and bool(metric_readers)
        self._meter_provider = meter_provider or (
            build_meter_provider(self._provider.resource, metric_readers) if metric_readers else None
        )
        meter = (self._meter_provider or NoOpMeterProvider()).get_meter(_TRACER_NAME, __version__)
        self.content = content or ContentPolicy()
        self._services = Services(
            ledger=self.ledger,
            tracer=tracer,
            instruments=Instruments(meter, recording=self._meter_provider is not None),
            prices=prices_table,
            owner=default_owner(),
            wait_timeout_s=wait_timeout_s,
            durability=checked,
            keys=keys,
            span_key_chars=key_chars,
        )
        if self._owns_provider:
            atexit.register(_shutdown_at_exit, weakref.ref(self))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> AgentRuntime:
        """A runtime configured by ``AGENT_RELAY_DATABASE_URL`` and the standard ``OTEL_*`` variables.

        ``OTEL_TRACES_EXPORTER`` (``otlp``, ``console``, ``none``; default ``otlp`` when an OTLP endpoint
        is set, else none), ``OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL`` (``http/protobuf`` or ``grpc``),
        ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` and ``OTEL_SERVICE_NAME``; metrics likewise
        (``OTEL_METRICS_EXPORTER``, ``..._METRICS_ENDPOINT``); ``AGENT_RELAY_CAPTURE_CONTENT`` and
        ``AGENT_RELAY_REDACT`` for arguments and results on spans; ``AGENT_RELAY_DURABILITY``
        (``strict`` or ``outcome``). Keyword arguments override.
        """
        env = os.environ if environ is None else environ
        kwargs.setdefault("database_url", env.get(DATABASE_URL_ENV) or DEFAULT_DATABASE_URL)
        joins_global = kwargs.get("use_global_provider", True) and global_sdk_provider() is not None
        if "tracer_provider" not in kwargs and not joins_global:  # (the application's provider exports)
            kwargs.setdefault("span_exporters", span_exporters_from_env(env))
            kwargs.setdefault("service_name", env.get("OTEL_SERVICE_NAME"))
        if "meter_provider" not in kwargs:
            kwargs.setdefault("metric_readers", metric_readers_from_env(env))
        kwargs.setdefault("content", ContentPolicy.from_env(env))
        durability = durability_from_env(env)
        if durability is not None:
            kwargs.setdefault("durability", durability)
        return cls(**kwargs)

    # --- public --------------------------------------------------------------------------------------
    @property
    def tracer_provider(self) -> TracerProvider:
        """The SDK provider tool and session spans are recorded on; add your own processors to it."""
        return self._provider

    @property
    def meter_provider(self) -> MeterProvider | None:
        """The metrics provider the runtime records on, if any."""
        return self._meter_provider

    @property
    def services(self) -> Services:
        """What this runtime's sessions and tool calls share (the ledger, the tracer, the registry);
        the plumbing under the public API, not meant for application code."""
        return self._services

    @property
    def prices(self) -> PriceTable:
        """Model prices: yours (``prices=``), then the ``genai-prices`` table."""
        return self._services.prices

    @property
    def owner(self) -> str:
        """``host:pid``, stored on the rows this process claims."""
        return self._services.owner

    @property
    def wait_timeout_s(self) -> float:
        return self._services.wait_timeout_s

    @property
    def durability(self) -> Durability:
        return self._services.durability

    @property
    def database(self) -> str:
        """The ledger's URL, password masked."""
        return self.ledger.database

    @property
    def tools(self) -> Mapping[str, ToolSpec]:
        """The registered tools by name (read-only)."""
        return MappingProxyType(self._services.tools)

    def agent_session(
        self,
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
    ) -> AgentSession:
        """A session recording one run; use it as ``with`` or ``async with``.

        ``input_payload`` is stored on the run's row (canonical JSON). ``budget_limit``: USD the run may
        spend; the call that passes it is recorded, then ``BudgetExceededError`` is raised and no later
        call runs.

        ``replay=True, replay_run_id=X``: a new run (mode ``replay``) whose forward calls are all served
        from X's ledger; no tool body runs, and a call X does not have raises ``ReplayDivergenceError``.
        ``replay_run_id=X, fork_after=K``: serve X's first K calls, then go live (mode ``fork``).
        ``resume_run_id=X``: continue run X — succeeded calls are served, failed ones run again, and a
        call left pending by a dead process runs again only if its tool is ``idempotent=True``.

        ``parent_run_id=P``: a child of run P recorded elsewhere (another process, another ledger: the
        caller whose request this session serves), instead of the run open here. With ``child_key=K``
        the run's id is derived from (P, ``name``, K), so a session opened again with the same three (a
        retried request) continues that run, even once it succeeded: succeeded calls are served, failed
        ones run again, as in a resume.

        A child run (opened inside another session, or given ``parent_run_id``) is unwound with its
        parent: when the parent's saga runs (it failed, or was cancelled), the child's compensations run
        too, where the child came among the parent's calls, and the child ends ``compensated``.
        ``unwind_with_parent=False`` leaves a child's effects in place. A cancelled parent's children
        refuse their calls as it does.

        Bad arguments raise here; an unknown run id raises when the session starts, before the agent
        runs.
        """
        self._services.check_open()
        return AgentSession(
            self,
            name,
            input_payload,
            budget_limit=budget_limit,
            replay=replay,
            replay_run_id=replay_run_id,
            fork_after=fork_after,
            resume_run_id=resume_run_id,
            parent_run_id=parent_run_id,
            child_key=child_key,
            unwind_with_parent=unwind_with_parent,
        )

    def cancel(self, run_id: str, *, reason: str | None = None) -> None:
        """Cancel run ``run_id``, wherever it runs: its next forward call is refused before it runs with
        ``RunCancelledError``, its saga unwinds, and it ends ``cancelled``. In this process that is the next
        call; in another, the next call from at most ``agent_relay.run.CANCEL_POLL_S`` (1 s) after this.
        A run stopped in doubt is refused its calls when resumed (``compensate`` unwinds it at once)."""
        self._services.check_open()
        if reason is not None and not isinstance(reason, str):
            raise ConfigurationError(f"cancel(reason=...) must be text, not {reason!r}.")
        self.ledger.request_cancel(run_id, reason)
        self._services.cancel_open(run_id, reason)

    def approve(self, call_id: str, *, by: str, note: str | None = None) -> None:
        """Approve a call awaiting approval: resuming its run runs it (its earlier calls served)."""
        self._decide(call_id, CallStatus.APPROVED, by, note)

    def reject(self, call_id: str, *, by: str, note: str | None = None) -> None:
        """Reject a call awaiting approval: resuming its run raises ``ApprovalRejectedError`` where the
        agent called it (handled there, or the saga unwinds); the tool never runs."""
        self._decide(call_id, CallStatus.REJECTED, by, note)

    def _decide(self, call_id: str, status: CallStatus, by: str, note: str | None) -> None:
        self._services.check_open()
        self.ledger.decide_call(call_id, status, by, note)

    def settle_call(
        self, call_id: str, status: str, *, output: Any = None, error_message: str | None = None
    ) -> None:
        """Record by hand the real outcome of a call left in doubt (``pending``): its process died, froze
        past its lease, or its body timed out. (``agent-relay settle CALL succeeded|failed`` does the same.)

        ``status`` is ``"succeeded"`` (with its ``output``, as the tool would have returned it) or
        ``"failed"``. A resumed run then serves it, or runs it again, like any other call.
        """
        self._services.check_open()
        self.ledger.settle_call(call_id, status, output=output, error_message=error_message)

    def compensate(self, run_id: str, *, force: bool = False) -> AgentSession:
        """Unwind run ``run_id`` (its process died before it could, or some compensations failed).

        Runs, latest first, the compensation of every succeeded forward call that has not been compensated
        yet; compensations that already succeeded are not run again, so calling this twice is safe. The
        tools (and their compensations) must be registered on this runtime. A run still ``running`` in a
        live process is refused unless ``force=True`` (its owner on another host cannot be checked).
        Returns the finished recovery session: ``status`` and ``compensation_errors`` say how it went.
        """
        self._services.check_open()
        row = self.ledger.get_run(run_id)
        if row is None:
            raise UnknownRunError(run_id, self.database)
        if row.status == RunStatus.SUCCEEDED:
            raise SessionStateError(f"run {run_id} succeeded; there is nothing to compensate.")
        if row.status == RunStatus.RUNNING and not force and not owner_is_gone(row.owner):
            raise SessionStateError(
                f"run {run_id} is still running in {row.owner}; wait for it, or pass force=True if that "
                f"process is gone."
            )
        session = AgentSession.recovery(self, row)
        with session:  # entering it unwinds the run
            pass
        return session

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush and stop exporting, then close the ledger. Idempotent.

        Export gets a second to flush; a collector that is still not answering then has the exporters
        stopped (their retries cut short), and ``timeout_s`` bounds the whole.

        A provider passed in by the user is flushed but not shut down: it is theirs.
        """
        with self._services.lock:
            if self._services.closed:
                return
            self._services.closed = True

        # An exporter stuck on an unreachable collector must not hold the program: run the SDK's shutdowns
        # in daemon threads, side by side, and stop waiting after the timeout.
        def traces() -> None:
            if self._owns_provider:
                self._provider.shutdown()
            else:
                self._provider.force_flush(int(timeout_s * 1000))

        def metrics() -> None:
            if self._owns_meter_provider and self._meter_provider is not None:
                self._meter_provider.shutdown(timeout_millis=timeout_s * 1000)

        workers = [
            threading.Thread(target=t, name="agent-relay-shutdown", daemon=True) for t in (traces, metrics)
        ]
        deadline = time.monotonic() + timeout_s
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(max(min(_FLUSH_GRACE_S, deadline - time.monotonic()), 0))
        if any(worker.is_alive() for worker in workers):
            # Still flushing after the grace period: the collector is slow or down. Stopping the span
            # exporters cuts their retry backoff short (metric exports are bounded by their own short
            # timeout); whatever could not be sent by the deadline is dropped.
            for exporter in self._exporters:
                exporter.shutdown()
            for worker in workers:
                worker.join(max(deadline - time.monotonic(), 0))
        self._processor.shutdown()
        self.ledger.dispose()

    def __enter__(self) -> AgentRuntime:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        return f"<AgentRuntime {self.database} tools={len(self._services.tools)}>"

    # --- internal ------------------------------------------------------------------------------------
    def _count_foreign_usage(self, span: ReadableSpan) -> None:
        """Charge the open run for a span of another GenAI instrumentation (OpenLLMetry, OpenInference,
        the official OTel openai instrumentation) that reports token usage — unless the model call is one
        AgentRelay recorded itself (the span ended inside it, or wraps it)."""
        attrs = span.attributes or {}
        inp = _first(
            attrs,
            semconv.GEN_AI_USAGE_INPUT_TOKENS,
            semconv.GEN_AI_USAGE_PROMPT_TOKENS,
            semconv.LLM_TOKEN_COUNT_PROMPT,
        )
        out = _first(
            attrs,
            semconv.GEN_AI_USAGE_OUTPUT_TOKENS,
            semconv.GEN_AI_USAGE_COMPLETION_TOKENS,
            semconv.LLM_TOKEN_COUNT_COMPLETION,
        )
        if not isinstance(inp, int) and not isinstance(out, int):
            return
        run = current_run()
        if run is None or run.services is not self._services or span.context is None:
            return
        call = active_invocation()
        if call is not None and call.model is not None:
            return  # ended inside a model call AgentRelay records: already counted
        if span.context.span_id in run.model_call_parents:
            return  # wraps a model call AgentRelay recorded: already counted
        model = _first(
            attrs, semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MODEL, semconv.LLM_MODEL_NAME
        )
        provider = _first(attrs, semconv.GEN_AI_PROVIDER_NAME, semconv.GEN_AI_SYSTEM, semconv.LLM_PROVIDER)
        usage = TokenUsage(
            str(model) if model else None,
            str(provider) if provider else None,
            inp if isinstance(inp, int) else 0,
            out if isinstance(out, int) else 0,
        )
        run.charge(usage, self._services.prices.cost(usage))


def _first(attributes: Mapping[str, Any], *names: str) -> Any:
    """The first of ``names`` the span carries (GenAI conventions, their older names, OpenInference's)."""
    for name in names:
        value = attributes.get(name)
        if value is not None:
            return value
    return None


def _shutdown_at_exit(ref: weakref.ref[AgentRuntime]) -> None:
    runtime = ref()
    if runtime is not None:
        runtime.shutdown()
