"""``AgentRelayInstrumentor``: AgentRelay for ``opentelemetry-instrument python app.py``.

Registered as the ``agent_relay`` entry point of the ``opentelemetry_instrumentor`` group, so the
OpenTelemetry auto-instrumentation loads it (after the distro has set the global tracer provider) before
the application runs. What it does: every ``AgentRuntime`` the application creates from then on is
instrumented (``agent_relay.instrument.adopt``): calls of the installed ``openai`` / ``anthropic``
clients made inside that runtime's sessions are recorded in its ledger and replayed from it, as if the
application had called ``agent_relay.instrument(runtime)`` itself. Its tool and session spans join the
application's traces because ``AgentRuntime`` records on the global SDK provider the distro set. Outside
a session the clients behave as before. ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=agent_relay`` turns it off.

Called by hand, ``AgentRelayInstrumentor().instrument(runtime=rt, apis=[...])`` instruments that one
runtime (``agent_relay.instrument(rt, apis)``); ``apis=`` alone limits what every runtime records.

Dependencies: either client will do, and neither is required of the package, so
``instrumentation_dependencies()`` names none (the manual ``instrument()`` checks that every named one is
installed). The auto-instrumentation reads the distribution's ``instruments-any`` extra instead (openai or
anthropic): with neither installed it skips this instrumentor without loading it.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]

from ..runtime import AgentRuntime
from .patch import adopt, instrument, selected, uninstrument


class AgentRelayInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Record LLM client calls made in the sessions of every ``AgentRuntime`` the application creates."""

    _original_init: Any = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # openai or anthropic: any one (the package's ``instruments-any`` extra says so)

    def _instrument(self, **kwargs: Any) -> None:
        runtime: AgentRuntime | None = kwargs.get("runtime")
        apis = kwargs.get("apis")
        if runtime is not None:
            instrument(runtime, apis)
            return
        selected(apis)  # a bad name fails here, not when the application creates its runtime
        original = AgentRuntime.__init__

        @functools.wraps(original)
        def __init__(created: AgentRuntime, *args: Any, **options: Any) -> None:
            original(created, *args, **options)
            adopt(created, apis)

        type(self)._original_init = original
        AgentRuntime.__init__ = __init__  # type: ignore[method-assign,assignment]

    def _uninstrument(self, **kwargs: Any) -> None:
        original = type(self)._original_init
        if original is not None:
            AgentRuntime.__init__ = original  # type: ignore[method-assign]
            type(self)._original_init = None
        uninstrument()
