"""The tool call whose body is running in this context, as ``agent_relay.current_call()`` shows it.

It travels in a context variable, so it follows asyncio tasks and ``contextvars.copy_context()``.
"""

from __future__ import annotations

import dataclasses
from contextvars import ContextVar, Token

from .keys import external_key

_current_call: ContextVar[CallInfo | None] = ContextVar("agent_relay_current_call", default=None)


@dataclasses.dataclass(frozen=True, slots=True)
class CallInfo:
    """The ledger's view of the tool call in progress.

    Forward ``external_key`` to an external API's own idempotency header (Stripe's ``Idempotency-Key``,
    for one) to make the side effect exactly-once end to end: a retried or resumed call of this run carries
    the same key, and a call of another run never does. (``idempotency_key`` names the call within its
    run and is the same in every run: forwarding it would make a second run's payment look like a repeat
    of the first.) ``attempt`` is 1 on the first try and counts re-runs of a failed call.
    """

    run_id: str
    call_id: str
    tool_name: str
    phase: str
    idempotency_key: str
    attempt: int
    seq: int

    @property
    def external_key(self) -> str:
        """The run-scoped key to forward to an external API (64 hex digits)."""
        return external_key(self.run_id, self.phase, self.idempotency_key)

    def enter(self) -> Token[CallInfo | None]:
        """Make this what ``current_call()`` answers in this context, until ``leave``."""
        return _current_call.set(self)

    @staticmethod
    def leave(token: Token[CallInfo | None]) -> None:
        _current_call.reset(token)


def current_call() -> CallInfo | None:
    """The tool call running in this context, or ``None`` outside a tool body or outside a session."""
    return _current_call.get()
