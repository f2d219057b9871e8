"""Helpers for testing code that uses AgentRelay: an in-memory runtime and span capture.

    from agent_relay.testing import capture_spans, in_memory_runtime

    runtime = in_memory_runtime()
    spans = capture_spans(runtime)
    ...  # decorate tools, run sessions
    assert [s.name for s in spans.tool_spans()] == ["execute_tool send_email"]

The in-memory runtime is a real runtime on a private SQLite database in memory (one connection shared by
the runtime's threads); it is gone when the runtime is shut down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from . import semconv
from ._fake_llm import FakeLLMServer
from .runtime import AgentRuntime

__all__ = ["FakeLLMServer", "SpanCapture", "capture_spans", "in_memory_runtime"]


def in_memory_runtime(**kwargs: Any) -> AgentRuntime:
    """A runtime whose ledger lives in memory; keyword arguments go to ``AgentRuntime``."""
    return AgentRuntime("sqlite://", **kwargs)


class SpanCapture:
    """Every span the runtime's provider ends, kept in memory, in the order they ended."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter

    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()

    def tool_spans(self) -> list[ReadableSpan]:
        """``execute_tool`` spans only."""
        return [s for s in self.spans() if _operation(s) == semconv.OPERATION_EXECUTE_TOOL]

    def session_spans(self) -> list[ReadableSpan]:
        """``invoke_agent`` spans only."""
        return [s for s in self.spans() if _operation(s) == semconv.OPERATION_INVOKE_AGENT]

    def clear(self) -> None:
        self.exporter.clear()


def _operation(span: ReadableSpan) -> Any:
    return (span.attributes or {}).get(semconv.GEN_AI_OPERATION_NAME)


def capture_spans(runtime: AgentRuntime) -> SpanCapture:
    """Start keeping every span ``runtime`` records (synchronously, so tests see them at once)."""
    exporter = InMemorySpanExporter()
    runtime.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    return SpanCapture(exporter)
