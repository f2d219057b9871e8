"""Replay and fork: serve a recorded run's calls by key, and say exactly where a replay went off it.

Pure decisions over the source run's ledger rows; the session asks, the wrapper serves. A replay serves
every forward call the source recorded (by idempotency key) and refuses any other; a fork serves the
first ``fork_after`` distinct calls, then lets the run go live.
"""

from __future__ import annotations

import builtins
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .calltable import Diverge, Live, Replay
from .encoding import JSONValue
from .errors import ReplayDivergenceError, ReplayedError

_MAX_SHOWN = 200


class ReplaySource:
    """The recorded forward calls of one run, indexed by key. Thread-safe."""

    def __init__(self, run_id: str, rows: Sequence[Any], fork_after: int | None = None) -> None:
        self.run_id = run_id
        self.rows = list(rows)
        self.by_key = {row.idempotency_key: row for row in self.rows}
        self.fork_after = fork_after
        self._lock = threading.Lock()
        self._requested: dict[str, int] = {}  # key -> position in the order the replay first asked

    def decide(self, key: str, next_seq: Callable[[], int]) -> Replay | Diverge | Live:
        """The fate of a call with ``key`` (numbered by ``next_seq``): serve the recorded row, diverge (the
        source has no such call), or run live (a fork past its point)."""
        with self._lock:
            position = self._requested.get(key)
            if position is None:
                position = self._requested[key] = len(self._requested)
        if self.fork_after is not None and position >= self.fork_after:
            return Live(next_seq())
        row = self.by_key.get(key)
        return Replay(next_seq(), row) if row is not None else Diverge(next_seq(), position)

    @property
    def before_fork_point(self) -> bool:
        """Whether a fork still serves recorded calls (fewer distinct calls asked for than ``fork_after``);
        always True for a replay."""
        with self._lock:
            return self.fork_after is None or len(self._requested) < self.fork_after

    def unrequested(self) -> list[Any]:
        """Recorded calls the replay never asked for (only meaningful once it has ended)."""
        with self._lock:
            asked = set(self._requested)
        limit = len(self.rows) if self.fork_after is None else self.fork_after
        return [row for row in self.rows[:limit] if row.idempotency_key not in asked]

    def divergence(
        self,
        *,
        tool_name: str,
        arguments: dict[str, JSONValue],
        position: int,
        run_id: str,
        redact: Callable[[JSONValue], JSONValue] = lambda value: value,
    ) -> ReplayDivergenceError:
        """The error for a call the source does not have, compared with what it recorded there
        (arguments passed through ``redact``, as on spans: the message reaches spans and the ledger)."""
        raw, arguments = arguments, redact(arguments)
        call = _call_text(tool_name, arguments)
        expected = self.rows[position] if position < len(self.rows) else None
        if expected is None:
            where = f"the recorded run has only {len(self.rows)} forward call(s)"
        else:
            where = (
                f"the recorded run has {_call_text(expected.tool_name, redact(expected.arguments or {}))} "
                f"there ({expected.status}, output {_short(redact(expected.output))})"
            )
            if expected.tool_name == tool_name:
                where += f"; arguments differ: {argument_diff(expected.arguments or {}, raw, redact)}"
        return ReplayDivergenceError(
            f"replay of run {self.run_id} diverged at call #{position + 1}: the agent called {call}, which "
            f"the recorded run does not have; {where}. No tool body ran. Replay with the inputs of the "
            f"recorded run, or fork it (fork_after=...) to go live from the point of change.",
            tool_name=tool_name,
            run_id=run_id,
            source_run_id=self.run_id,
            position=position,
        )


def argument_diff(
    recorded: dict[str, JSONValue],
    now: dict[str, JSONValue],
    redact: Callable[[JSONValue], JSONValue] = lambda value: value,
) -> str:
    """``subject: 'Hello' -> 'Hi'; cc: missing -> 'x'`` — what changed, argument by argument, each value
    shown through ``redact`` (a redacted field that changed shows as ``[REDACTED] -> [REDACTED]``)."""
    shown_before, shown_after = redact(recorded), redact(now)
    parts = []
    for name in sorted(set(recorded) | set(now)):
        if recorded.get(name, _MISSING) != now.get(name, _MISSING):
            before, after = shown_before.get(name, _MISSING), shown_after.get(name, _MISSING)
            parts.append(f"{name}: {_short(before)} -> {_short(after)}")
    return "; ".join(parts) or "none (the key differs by tool options)"


def rebuild_error(
    tool_name: str, error_type: str | None, message: str | None, declared: Iterable[type[BaseException]] = ()
) -> BaseException:
    """The recorded failure as an exception to raise: its own type when that is safe, else ReplayedError.

    Safe: a built-in exception class, or one of the tool's declared ``raises=`` types, rebuilt from the
    message alone.
    """
    name = error_type or "Exception"
    candidates = {f"{cls.__module__}.{cls.__qualname__}": cls for cls in declared}
    candidates.update({cls.__qualname__: cls for cls in declared if cls.__module__ == "builtins"})
    cls = candidates.get(name)
    if cls is None and "." not in name:
        found = getattr(builtins, name, None)
        if isinstance(found, type) and issubclass(found, Exception):
            cls = found
    if cls is not None:
        try:
            return cls(message or "")
        except Exception:
            pass
    return ReplayedError(tool_name=tool_name, original_type=name, original_message=message or "")


class _Missing:
    def __repr__(self) -> str:
        return "missing"


_MISSING: Any = _Missing()


def _short(value: Any) -> str:
    text = repr(value) if value is _MISSING else json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _call_text(tool_name: str, arguments: dict[str, JSONValue]) -> str:
    return f"{tool_name}({', '.join(f'{k}={_short(v)}' for k, v in arguments.items())})"
