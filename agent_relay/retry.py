"""Retries and timeouts of a tool's live calls: ``@tool(retry=Retry(...), timeout_s=...)``.

A retry is the same call again — same key, same row: the ledger's ``attempts`` counts the tries, and each
failed try is kept in ``tool_call_attempts`` (the ``call_attempts`` view shows them all). Every attempt has
its own ``execute_tool`` span with ``agent_relay.call.attempt``; a failed attempt that will be retried
ends with an ``agent_relay.retry`` event naming the delay. Before each retry the run is asked again, so a
budget passed or a run cancelled meanwhile stops the retries (that error is raised, not the tool's).

A timeout ends the wait for the body with ``ToolTimeoutError``. An ``async`` body is cancelled; a sync
body cannot be stopped (Python cannot kill a thread), so it runs in a worker thread and is left to finish
on its own, its result discarded. Either way the side effect may have happened, or may still: the call
is *in doubt* — recorded so, with ``CallInDoubtError`` raised and the run stopped without unwinding, to be
settled by hand (``runtime.settle_call``) — unless the tool is ``idempotent=True``; then the timeout is
an ordinary failure, retried when the policy says so.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import AgentRelayError, ConfigurationError, ToolTimeoutError

_log = logging.getLogger("agent_relay")


@dataclasses.dataclass(frozen=True)
class Retry:
    """How often, and after how long, a failed live call is tried again.

    ``attempts``: tries in all, the first included (``Retry(attempts=1)`` never retries). The n-th retry
    waits ``initial_delay_s * multiplier ** (n - 1)``, at most ``max_delay_s``; with ``jitter`` a random
    part of that ("full jitter"), so workers failing together do not retry together. ``retry_on``: the
    exception classes that are retried (default: any ``Exception`` the tool raises; AgentRelay's own
    errors — budget, ledger, in doubt — never are, except ``ToolTimeoutError``).
    """

    attempts: int = 3
    initial_delay_s: float = 0.1
    multiplier: float = 2.0
    max_delay_s: float = 30.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = (Exception,)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or isinstance(self.attempts, bool) or self.attempts < 1:
            raise ConfigurationError(f"Retry(attempts=...) must be an int >= 1, not {self.attempts!r}.")
        for name in ("initial_delay_s", "multiplier", "max_delay_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"Retry({name}=...) must be a number >= 0, not {value!r}.")
        classes = self.retry_on if isinstance(self.retry_on, tuple) else (self.retry_on,)
        if not classes or not all(isinstance(c, type) and issubclass(c, BaseException) for c in classes):
            raise ConfigurationError(
                f"Retry(retry_on=...) must be exception classes (e.g. (TimeoutError, ConnectionError)), not "
                f"{self.retry_on!r}."
            )
        object.__setattr__(self, "retry_on", classes)

    def retries(self, exc: BaseException, attempt: int) -> bool:
        """Whether a call whose try number ``attempt`` raised ``exc`` is tried again."""
        if attempt >= self.attempts or not isinstance(exc, self.retry_on):
            return False
        return not isinstance(exc, AgentRelayError) or isinstance(exc, ToolTimeoutError)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the try after ``attempt``."""
        ceiling = min(self.max_delay_s, self.initial_delay_s * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling) if self.jitter else ceiling


def retry_policy(value: Retry | int | None, tool_name: str) -> Retry | None:
    """``@tool(retry=...)``: a ``Retry``, or an int of attempts (``retry=3``); None: no retries."""
    if value is None or isinstance(value, Retry):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Retry(attempts=value)
    raise ConfigurationError(
        f"@tool({tool_name!r}, retry=...) must be a Retry(...) or a number of attempts, not {value!r}."
    )


def timeout_seconds(value: float | None, tool_name: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise ConfigurationError(f"@tool({tool_name!r}, timeout_s=...) must be a number > 0, not {value!r}.")
    return float(value)


def call_in_thread(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], timeout: float, tool_name: str
) -> Any:
    """``func(*args, **kwargs)`` in a worker thread (with this context: the span, ``current_call()``),
    waited on for ``timeout`` seconds; ``ToolTimeoutError`` if it has not ended by then, when it is left
    running on its own."""
    outcome: list[Any] = []
    done = threading.Event()
    context = contextvars.copy_context()

    def body() -> None:
        try:
            outcome.append((True, context.run(func, *args, **kwargs)))
        except BaseException as exc:
            outcome.append((False, exc))
        finally:
            done.set()
            if abandoned.is_set():
                late = time.monotonic() - started - timeout
                _log.warning(
                    "agent-relay: tool %r ended %.1f s after it timed out (result discarded)", tool_name, late
                )

    abandoned = threading.Event()
    started = time.monotonic()
    threading.Thread(target=body, name=f"agent-relay tool {tool_name}", daemon=True).start()
    if not done.wait(timeout):
        abandoned.set()
        if not done.is_set():
            raise ToolTimeoutError(tool_name=tool_name, timeout_s=timeout)
    ok, value = outcome[0]
    if ok:
        return value
    raise value


async def await_with_timeout(awaitable: Awaitable[Any], timeout: float, tool_name: str) -> Any:
    """Await ``awaitable`` for at most ``timeout`` seconds; then cancel it and raise ``ToolTimeoutError``."""
    try:
        async with asyncio.timeout(timeout) as scope:
            return await awaitable
    except TimeoutError as exc:
        if not scope.expired():  # the tool's own TimeoutError: a failure like any other
            raise
        raise ToolTimeoutError(tool_name=tool_name, timeout_s=timeout) from exc
