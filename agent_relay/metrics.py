"""OpenTelemetry metrics: token usage, tool calls and their duration, cost, runs, budget stops, sagas.

Names follow the GenAI conventions where they exist (``gen_ai.client.token.usage``) and live under
``agent_relay.*`` otherwise. Through the collector's Prometheus exporter they appear as
``agent_relay_tool_calls_total``, ``agent_relay_tool_duration_seconds``, ``gen_ai_client_token_usage``,
``agent_relay_cost_usd_total``, ``agent_relay_runs_total``, ``agent_relay_budget_exceeded_total`` and
``agent_relay_compensations_total`` — the names ``exporters/grafana`` dashboards query. Recording never
raises into a tool call.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from opentelemetry.metrics import Meter

from . import semconv
from .states import Origin, Phase

_log = logging.getLogger(__name__)

# Bucket boundaries advised to the SDK: tool calls take milliseconds to minutes (the default buckets start
# at 5 s, which would flatten every fast tool into one bucket); token counts as the GenAI conventions advise.
DURATION_BUCKETS_S = [
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
]
TOKEN_BUCKETS = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864]


class Instruments:
    """The runtime's instruments. Thread-safe (the SDK's instruments are). ``recording=False`` (no meter
    provider: the meter is a no-op) lets callers skip building what they would record."""

    def __init__(self, meter: Meter, *, recording: bool = True) -> None:
        self.recording = recording
        self._calls = meter.create_counter(
            "agent_relay.tool.calls",
            unit="{call}",
            description="Tool calls, by tool, phase, status and origin.",
        )
        self._duration = meter.create_histogram(
            "agent_relay.tool.duration",
            unit="s",
            description="Duration of tool calls that ran live.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Tokens used per model call.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._cost = meter.create_counter(
            "agent_relay.cost.usd", unit="{USD}", description="USD spent, by tool and model."
        )
        self._runs = meter.create_counter("agent_relay.runs", unit="{run}", description="Finished runs.")
        self._budget = meter.create_counter(
            "agent_relay.budget.exceeded", unit="{run}", description="Runs stopped by their budget."
        )
        self._compensations = meter.create_counter(
            "agent_relay.compensations", unit="{call}", description="Compensations run, by tool and status."
        )

    def call(
        self,
        tool: str,
        phase: str,
        status: str,
        origin: str,
        *,
        agent: str,
        duration_s: float | None = None,
        cost: Decimal | None = None,
        model: str | None = None,
    ) -> None:
        """One call's outcome; ``agent`` is its session's name (``gen_ai.agent.name``, as on ``runs``)."""
        try:
            attrs: dict[str, Any] = {
                semconv.GEN_AI_TOOL_NAME: tool,
                semconv.TOOL_PHASE: phase,
                semconv.CALL_STATUS: status,
                semconv.GEN_AI_AGENT_NAME: agent,
            }
            self._calls.add(1, {**attrs, semconv.CALL_ORIGIN: origin})
            if duration_s is not None:
                self._duration.record(duration_s, attrs)
            if cost:  # (by origin: a replay's recorded cost is not new spend, and dashboards filter it out)
                self._cost.add(
                    float(cost),
                    {
                        semconv.GEN_AI_TOOL_NAME: tool,
                        semconv.GEN_AI_REQUEST_MODEL: model or "",
                        semconv.CALL_ORIGIN: origin,
                        semconv.GEN_AI_AGENT_NAME: agent,
                    },
                )
            if phase == Phase.COMPENSATION and origin == Origin.LIVE:
                self._compensations.add(
                    1,
                    {
                        semconv.GEN_AI_TOOL_NAME: tool,
                        semconv.CALL_STATUS: status,
                        semconv.GEN_AI_AGENT_NAME: agent,
                    },
                )
        except Exception:  # telemetry must never break the host
            _log.debug("agent-relay: recording call metrics failed", exc_info=True)

    def usage(
        self,
        model: str | None,
        provider: str | None,
        input_tokens: int,
        output_tokens: int,
        cost: Decimal | None,
        *,
        agent: str,
        tool: str | None = None,
    ) -> None:
        try:
            attrs = {
                semconv.GEN_AI_OPERATION_NAME: "chat",
                semconv.GEN_AI_REQUEST_MODEL: model or "",
                semconv.GEN_AI_PROVIDER_NAME: provider or "",
                semconv.GEN_AI_AGENT_NAME: agent,
            }
            self._tokens.record(input_tokens, {**attrs, semconv.GEN_AI_TOKEN_TYPE: "input"})
            self._tokens.record(output_tokens, {**attrs, semconv.GEN_AI_TOKEN_TYPE: "output"})
            if cost and tool is None:
                self._cost.add(
                    float(cost),
                    {
                        semconv.GEN_AI_TOOL_NAME: "",
                        semconv.GEN_AI_REQUEST_MODEL: model or "",
                        semconv.CALL_ORIGIN: Origin.LIVE,
                        semconv.GEN_AI_AGENT_NAME: agent,
                    },
                )
        except Exception:
            _log.debug("agent-relay: recording usage metrics failed", exc_info=True)

    def run(self, agent: str, status: str, mode: str, *, budget_exceeded: bool) -> None:
        try:
            self._runs.add(
                1, {semconv.GEN_AI_AGENT_NAME: agent, semconv.RUN_STATUS: status, semconv.RUN_MODE: mode}
            )
            if budget_exceeded:
                self._budget.add(1, {semconv.GEN_AI_AGENT_NAME: agent})
        except Exception:
            _log.debug("agent-relay: recording run metrics failed", exc_info=True)
