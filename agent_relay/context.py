"""What is current in this context: the session, and the tool call whose body is running.

Both travel in context variables, so they follow asyncio tasks and ``contextvars.copy_context()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING

from .errors import CallInProgressError

if TYPE_CHECKING:
    from .session import AgentSession

_current_call: ContextVar[CallInfo | None] = ContextVar("agent_relay_current_call", default=None)


@dataclasses.dataclass(frozen=True, slots=True)
class CallInfo:
    """The ledger's view of the tool call in progress.

    Forward ``idempotency_key`` to an external API's own idempotency header (Stripe's
    ``Idempotency-Key``, for one) to make the side effect exactly-once end to end: a retried or resumed
    call carries the same key. ``attempt`` is 1 on the first try and counts re-runs of a failed call.
    """

    run_id: str
    call_id: str
    tool_name: str
    phase: str
    idempotency_key: str
    attempt: int
    seq: int


def current_call() -> CallInfo | None:
    """The tool call running in this context, or ``None`` outside a tool body or outside a session."""
    return _current_call.get()


# --- the session open in this context (set by AgentSession, read by the tool wrapper) ------------------

_current_session: ContextVar[AgentSession | None] = ContextVar("agent_relay_session", default=None)


def current_session() -> AgentSession | None:
    """The session open in this context, if any."""
    return _current_session.get()


def error_type_name(exc: BaseException) -> str:
    """``error.type`` as OpenTelemetry spells it: the qualified class name (no module for builtins)."""
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class Flight:
    """A live call that callers with the same key wait for (threads block, tasks poll).

    A lock taken when the call starts and released when it ends: cheaper to make than an ``Event`` and
    made on every live call, while waiting is rare.
    """

    __slots__ = ("_running", "thread_id")

    def __init__(self) -> None:
        self._running = threading.Lock()
        self._running.acquire()
        self.thread_id = threading.get_ident()

    def land(self) -> None:
        """The call ended: wake the waiters."""
        self._running.release()

    def wait(self, timeout: float, *, tool_name: str, run_id: str, key: str) -> None:
        # the same thread waiting on its own call would wait forever (a tool calling itself)
        if self.thread_id == threading.get_ident() or not self._running.acquire(timeout=timeout):
            raise CallInProgressError(tool_name=tool_name, run_id=run_id, idempotency_key=key)
        self._running.release()  # let the next waiter through

    async def wait_async(self, timeout: float, *, tool_name: str, run_id: str, key: str) -> None:
        deadline = time.monotonic() + timeout
        while self._running.locked():
            if time.monotonic() > deadline:
                raise CallInProgressError(tool_name=tool_name, run_id=run_id, idempotency_key=key)
            await asyncio.sleep(0.001)
