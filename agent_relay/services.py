"""``Services``: what every session and tool call of one runtime shares — the ledger, the tracer, the
instruments, the prices and the tool registry. ``AgentRuntime`` builds one and is its public face;
sessions and calls depend on this, never on the runtime itself."""

from __future__ import annotations

import dataclasses
import threading
import warnings
from collections.abc import Mapping
from typing import Protocol

from opentelemetry.trace import Tracer

from . import compensation
from .errors import DuplicateToolError, RuntimeClosedError, UnrecordedCallWarning
from .keyring import KeyRing
from .ledger.store import LedgerStore
from .metrics import Instruments
from .pricing import PriceTable
from .spec import ToolSpec
from .states import Durability


class Cancellable(Protocol):
    """An open run, as a cancel reaches it (``Run``)."""

    def cancel(self, reason: str | None) -> None: ...


@dataclasses.dataclass(eq=False)
class Services:
    """Shared by every session and call of one runtime. Thread-safe."""

    ledger: LedgerStore
    tracer: Tracer
    instruments: Instruments
    prices: PriceTable
    owner: str  # host:pid, stored on the rows this process claims
    wait_timeout_s: float
    durability: Durability
    keys: KeyRing  # how new runs key their calls, and how recorded runs did
    span_key_chars: int  # how much of a call's key its span shows (64, 16 or 0 hex digits)
    tools: dict[str, ToolSpec] = dataclasses.field(default_factory=dict)
    closed: bool = False
    open_sessions: int = 0  # sessions between their start and their end, in any thread
    open_runs: dict[str, list[Cancellable]] = dataclasses.field(default_factory=dict)  # by run id
    warned_unrecorded: set[str] = dataclasses.field(default_factory=set)  # tools warned about once
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def register(self, spec: ToolSpec) -> None:
        """Add a tool; ``DuplicateToolError`` when its name is taken."""
        with self.lock:
            existing = self.tools.get(spec.name)
            if existing is not None:
                raise DuplicateToolError(spec.name, existing.qualified_name, spec.qualified_name)
            self.tools[spec.name] = spec

    def snapshot(self) -> Mapping[str, ToolSpec]:
        with self.lock:
            return dict(self.tools)

    def session_opened(self, opened: bool, run_id: str, run: Cancellable) -> None:
        """A session of this runtime starting (``True``) or ending, recording ``run``."""
        with self.lock:
            self.open_sessions += 1 if opened else -1
            runs = self.open_runs.setdefault(run_id, [])
            if opened:
                runs.append(run)
            else:
                runs.remove(run)
                if not runs:
                    del self.open_runs[run_id]

    def cancel_open(self, run_id: str, reason: str | None) -> None:
        """Tell the sessions of run ``run_id`` open in this process that it was cancelled."""
        with self.lock:
            runs = list(self.open_runs.get(run_id, ()))
        for run in runs:
            run.cancel(reason)

    def unrecorded(self, spec: ToolSpec) -> None:
        """A tool ran outside any session: warn once per tool if a session is open elsewhere (the call
        probably came from a thread that did not copy the session's context)."""
        if not self.open_sessions or spec.name in self.warned_unrecorded:
            return
        with self.lock:
            if spec.name in self.warned_unrecorded:
                return
            self.warned_unrecorded.add(spec.name)
        warnings.warn(
            f"agent-relay: tool {spec.name!r} ran unrecorded: it was called outside any session's context "
            f"while a session of its runtime is open (a thread pool's worker does not inherit the caller's "
            f"context). Submit it with contextvars.copy_context().run(...), or asyncio.to_thread, to record "
            f"it in the session.",
            UnrecordedCallWarning,
            stacklevel=4,
        )

    def check_open(self) -> None:
        if self.closed:
            raise RuntimeClosedError(
                f"the runtime on {self.ledger.database} was shut down; create a new AgentRuntime to record "
                f"more runs."
            )

    def check_compensations(self) -> None:
        """Every compensation a tool names resolves (raised when a session starts, not at unwind time)."""
        tools = self.snapshot()
        for spec in tools.values():
            if spec.compensation is not None:
                compensation.resolve(spec, tools)


class HasServices(Protocol):
    """What a session knows of the runtime that opened it."""

    @property
    def services(self) -> Services: ...
