"""``Run``: one run as its tool calls see it — its ids and mode, its call table, its spend, the run it
replays — and the context variable that carries it to every call made inside its session.

The session (``AgentSession``) owns the run and drives its lifecycle; calls only read the run and ask it
for their fate. The run is carried by a context variable, so it follows threads started with
``contextvars.copy_context()`` and every asyncio task created inside the session.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from decimal import Decimal

from .calltable import CallTable, Fate, Live, NewCall, Refuse
from .errors import LedgerError, RunCancelledError, SessionStateError
from .keys import KeyScheme
from .ledger.writer import ServedRows
from .replay import ReplaySource
from .services import Services
from .spend import RunSpend
from .states import Phase, RunMode
from .usage import TokenUsage

_current: ContextVar[Run | None] = ContextVar("agent_relay_run", default=None)

CANCEL_POLL_S = 1.0
"""How often a run asks the ledger whether another process cancelled it: a cancel made elsewhere refuses
the run's calls that start from at most this long after it."""


def current_run() -> Run | None:
    """The run whose session is open in this context, if any."""
    return _current.get()


class Run:
    """The state one run's calls share. Thread-safe where calls touch it (``fate``); the lifecycle
    attributes (``open``, ``unwinding``) are set by the owning session only."""

    def __init__(
        self,
        services: Services,
        run_id: str,
        name: str,
        mode: RunMode,
        spend: RunSpend,
        *,
        replay: ReplaySource | None = None,
        first_seq: int = 1,
        keys: KeyScheme | None = None,
    ) -> None:
        self.services = services
        self.keys = keys or services.keys.current  # how its calls are keyed: a recorded run's own way
        self.run_id = run_id
        self.name = name
        self.mode = mode
        self.spend = spend
        self.replay = replay
        self.table = CallTable(first_seq=first_seq, keep_all=replay is not None)
        self._decide = self._new_call  # (bound once: it is passed on every call)
        self.served = ServedRows(services.ledger.calls)
        self.open = False  # between the session's start and its end: calls may be made
        self.unwinding = False  # its saga is running: no new forward calls
        self.model_call_parents: set[int] = set()  # spans that wrap a model call recorded here
        self._children: dict[str, list[str]] | None = None  # recorded child runs by name, not yet matched
        self._children_lock = threading.Lock()
        self.awaiting_approval: list[str] = []  # ids of calls that stopped the run to await a decision
        self.in_doubt: list[str] = []  # ids of calls met in doubt: the run stops there, without unwinding
        self.secrets: set[str] = set()  # redacted values its calls saw: scrubbed out of the run's messages
        self.cancelled = False  # cancelled from outside (runtime.cancel): forward calls are refused
        self.parent: Run | None = None  # the run open here its session was opened in (its cancel is ours)
        self.cancel_reason: str | None = None
        self._cancel_checked = -CANCEL_POLL_S  # (monotonic) when the ledger was last asked

    def recorded_child(self, name: str) -> str | None:
        """The recorded child run a session named ``name`` opened now inside this run stands for: the
        k-th child of that name the recorded run opened, for the k-th such session opened here (a replay
        or fork: of the replayed run; a resume: of this run). ``None``: it opened no such child."""
        if self.mode is RunMode.RESUME:
            source = self.run_id
        elif self.replay is not None:
            source = self.replay.run_id
        else:
            return None
        with self._children_lock:
            if self._children is None:
                self._children = {}
                for run_id, child_name in self.services.ledger.child_runs(source):
                    self._children.setdefault(child_name, []).append(run_id)
            recorded = self._children.get(name)
            return recorded.pop(0) if recorded else None

    @property
    def serving_recorded(self) -> bool:
        """Whether this run is still serving recorded calls (a replay; a fork before its point; a
        resume), so a child session it opens covers the recorded child."""
        if self.mode in (RunMode.REPLAY, RunMode.RESUME):
            return True
        return self.mode is RunMode.FORK and self.replay is not None and self.replay.before_fork_point

    @property
    def replay_of(self) -> str | None:
        return None if self.replay is None else self.replay.run_id

    def enter(self) -> Token[Run | None]:
        """Make this the current run in this context, until ``leave``."""
        return _current.set(self)

    @staticmethod
    def leave(token: Token[Run | None]) -> None:
        _current.reset(token)

    def charge(self, usage: TokenUsage, cost: Decimal | None) -> bool:
        """Count usage made outside any recorded call (its metrics too); True when it passed the budget.
        Never raises: a budget passed this way refuses the next call."""
        self.services.instruments.usage(
            usage.model, usage.provider, usage.input_tokens, usage.output_tokens, cost, agent=self.name
        )
        if cost and self.spend.limit is not None:
            # a budgeted run's cost is counted in the ledger too, so every worker of the run reserves
            # against it (if that write fails, the ledger's count lags: this worker still counts it)
            with contextlib.suppress(LedgerError):
                self.services.ledger.calls.release(self.run_id, Decimal(0), cost)
        return self.spend.charge(
            cost, input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, unknown=cost is None
        )

    def fate(self, phase: str, key: str, tool_name: str) -> Fate:
        """What to do with a call of ``tool_name`` keyed ``key``: served from this run, wait for the
        identical call in flight, refused, served from the replayed run, diverged from it, or run."""
        if not self.open:
            raise SessionStateError(
                f"the session of run {self.run_id} ({self.name!r}) is not open; tools can only be called "
                f"inside its with-block."
            )
        if not self.cancelled and phase == Phase.FORWARD:  # a cancel from another process: asked at most
            now = time.monotonic()  # every CANCEL_POLL_S (one in this process is told at once)
            parent = self.parent
            while parent is not None and not parent.cancelled:
                parent = parent.parent
            if parent is not None:  # a run it was opened in was cancelled: it refuses its calls too
                why = f": {parent.cancel_reason}" if parent.cancel_reason else ""
                self.cancel(f"its parent run {parent.run_id} was cancelled{why}")
            elif self._poll_due(now):  # (the ledger answers for its parents too)
                self._cancel_checked = now
                self.cancelled, self.cancel_reason = self.services.ledger.cancel_requested(self.run_id)
        return self.table.reserve(phase, key, self._decide, tool_name)

    def cancel_poll_due(self) -> bool:
        """Whether the next forward call's ``fate`` asks the ledger whether the run was cancelled."""
        return not self.cancelled and self._poll_due(time.monotonic())

    def _poll_due(self, now: float) -> bool:
        return now - self._cancel_checked >= CANCEL_POLL_S

    def cancel(self, reason: str | None) -> None:
        """Refuse this run's forward calls from now on (a cancel asked in this process)."""
        self.cancel_reason = reason
        self.cancelled = True

    def _new_call(self, next_seq: Callable[[], int], phase: str, key: str, tool_name: str) -> NewCall:
        """The fate of a call neither served nor in flight (under the call table's lock)."""
        if phase == Phase.FORWARD:
            if self.unwinding:
                return Refuse(
                    SessionStateError(
                        f"tool {tool_name!r} was called while run {self.run_id} is being compensated; "
                        f"compensations cannot start forward calls."
                    )
                )
            if self.cancelled:
                return Refuse(
                    RunCancelledError(run_id=self.run_id, tool_name=tool_name, reason=self.cancel_reason)
                )
            if self.spend.exceeded:
                return Refuse(self.spend.budget_error(None))
        if self.replay is None:
            return Live(next_seq())
        return self.replay.decide(key, next_seq)
