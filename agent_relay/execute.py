"""The drivers of a tool call: ``execute`` (sync: waits block the thread) and ``execute_async`` (every
wait awaited on the event loop), which act on the steps ``Invocation`` returns and run the tool body; and
``plain_call``, a tool called outside any session. Only the waiting differs between the two drivers.

The async driver never makes the loop wait on the ledger: a call's claim and outcome go with the other
calls' on the ledger's writer thread (``agent_relay.batching``), and a step that may make a round trip of
its own -- a budget's reservation, a look-up for a caller's key, a global key, an approval, the run's
cancel poll, a take-over, a claim again after waiting -- is taken on a worker thread (``_off_loop``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from . import semconv, spans, stops
from .batching import LoopBatcher, batcher_for
from .calls import ClaimWith, Done, Go, Invocation, Next, Poll
from .calltable import Wait
from .errors import AgentRelayError, ToolTimeoutError
from .ledger.records import Held
from .retry import await_with_timeout, call_in_thread
from .services import Services
from .spec import ToolSpec
from .states import CallStatus, Durability, Phase


def execute(
    call: Invocation,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    live: Callable[[Any], Any] | None = None,
    served: Callable[[Any], Any] | None = None,
) -> Any:
    """Run ``call`` to its end: served, or ``func`` run live and recorded. Waits block this thread.

    ``live`` takes over a live result instead of recording it at once (a stream records itself when it
    has been read to its end); ``served`` shapes a served value (a recorded stream, replayed).
    """
    timeout, tries = call.spec.timeout_s, 1
    while True:  # (once, unless a retry policy says to try again)
        step = call.begin()
        while type(step) is not Go:  # (waiting is rare: straight on, usually)
            if type(step) is Done:
                return served(step.value) if served else step.value
            if isinstance(step, Wait):
                call.wait(step)
                step = call.begin()
            elif isinstance(step, Poll):
                try:
                    time.sleep(step.delay)
                except BaseException as exc:  # interrupted: the span ends and the key is free again
                    call.abandon(exc)
                step = call.poll()
            else:  # (a sync call never asks for a shared claim: nothing else can come)
                raise AssertionError(f"unexpected step {step!r}")
        tokens = call.enter()
        try:
            if timeout is None:
                result = func(*args, **kwargs)
            else:
                result = call_in_thread(func, args, kwargs, timeout, call.spec.name)
        except BaseException as exc:
            Invocation.leave(tokens)
            delay = _retry_delay(call, exc, tries)
            call.failed(exc)
            if delay is None:
                raise
        else:
            Invocation.leave(tokens)
            return live(result) if live else call.succeeded(result)
        time.sleep(delay)
        call, tries = call.again(), tries + 1


def _retry_delay(call: Invocation, exc: BaseException, tries: int) -> float | None:
    """After a failed try of the body (recorded next by the caller): the delay before the next try, or
    None when there is none. A timed-out call that is not safe to run again is in doubt:
    ``CallInDoubtError`` is raised."""
    spec, record = call.spec, call.record
    assert record is not None and call.span is not None
    if isinstance(exc, ToolTimeoutError) and not spec.idempotent and record.durability is Durability.STRICT:
        stops.timed_out(call, exc)
    retry = spec.retry
    delay = retry.delay(tries) if retry is not None and retry.retries(exc, tries) else None
    if delay is not None:
        call.span.add_event(semconv.EVENT_RETRY, {semconv.CALL_ATTEMPT: tries, semconv.RETRY_DELAY: delay})
    return delay


async def execute_async(
    call: Invocation,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    live: Callable[[Any], Any] | None = None,
    served: Callable[[Any], Any] | None = None,
) -> Any:
    """``execute`` for coroutine functions: every wait is awaited on the loop, and the span lasts until
    the awaited body ends. The claim and the outcome are written off the loop, together with those of
    the other calls in flight on it (see ``agent_relay.batching``)."""
    batcher = batcher_for(call.services.ledger.calls)
    if batcher is None:
        return await _execute_async(call, func, args, kwargs, live, served, None)
    batcher.in_flight += 1
    try:
        return await _execute_async(call, func, args, kwargs, live, served, batcher)
    finally:
        batcher.in_flight -= 1


async def _execute_async(
    call: Invocation,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    live: Callable[[Any], Any] | None,
    served: Callable[[Any], Any] | None,
    batcher: LoopBatcher | None,
) -> Any:
    timeout, tries = call.spec.timeout_s, 1
    while True:  # (once, unless a retry policy says to try again)
        step = await _begin(call, batcher)
        while type(step) is not Go:
            if type(step) is Done:
                return served(step.value) if served else step.value
            if isinstance(step, Wait):
                await call.wait_async(step)
                step = await _begin(call, batcher)
            elif isinstance(step, Poll):
                try:
                    await asyncio.sleep(step.delay)
                except BaseException as exc:  # cancelled: the span ends and the key is free again
                    call.abandon(exc)
                step = await _off_loop(call, call.poll)  # (claims again: a round trip)
            elif isinstance(step, ClaimWith):
                step = await _claim_with(call, batcher)
            else:
                raise AssertionError(f"unexpected step {step!r}")
        tokens = call.enter()
        try:
            if timeout is None:
                result = await func(*args, **kwargs)
            else:
                result = await await_with_timeout(func(*args, **kwargs), timeout, call.spec.name)
        except BaseException as exc:
            Invocation.leave(tokens)
            delay = _retry_delay(call, exc, tries)
            await _failed(call, exc, batcher)
            if delay is None:
                raise
        else:
            Invocation.leave(tokens)
            if live:
                return live(result)
            return await _succeeded(call, result, batcher)
        await asyncio.sleep(delay)
        call, tries = call.again(), tries + 1


async def _begin(call: Invocation, batcher: LoopBatcher | None) -> Next:
    """``call.begin``: on the loop, unless it may make a round trip to the ledger of its own."""
    run, spec = call.run, call.spec
    if (
        run.spend.limit is not None  # a budgeted run's reservation
        or call.user_key is not None  # a caller's key: its earlier row is looked up
        or spec.approval is not None
        or spec.global_key is not None
        or (call.phase is Phase.FORWARD and run.cancel_poll_due())
        or (spec.durability is Durability.OUTCOME and run.table.maybe_evicted(call.key))  # (looked up)
    ):
        return await _off_loop(call, functools.partial(call.begin, batch=batcher is not None))
    return call.begin(batch=batcher is not None)


async def _off_loop(call: Invocation, step: Callable[[], Next]) -> Next:
    """Take ``step`` on a worker thread (in this context), so the loop runs on while it waits on the
    ledger. Cancelled meanwhile, the step still ends (it may have claimed the row): then the call is let
    go as a call cancelled while its claim was written is."""
    context = contextvars.copy_context()
    done = asyncio.get_running_loop().run_in_executor(None, context.run, step)
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError as cancelled:
        try:
            after = await _result_of(done)
        except BaseException:  # the step failed: it let the call go itself
            raise cancelled from None
        _let_go(call, after, cancelled)
        raise


async def _result_of(done: asyncio.Future[Next]) -> Next:
    """What a shielded step came to, once it ends (a cancel of this wait does not stop the step)."""
    while True:
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            if done.done():
                return done.result()


def _let_go(call: Invocation, after: Next, cancelled: BaseException) -> None:
    """A cancelled call whose step came to ``after``: its row records the failure (it held the claim),
    or its span ends and its key is free again (nothing of it was written)."""
    if isinstance(after, Go):
        call.failed(cancelled)  # so the row says it failed (the body never ran): key freed
    elif isinstance(after, Poll | ClaimWith):
        call.abandon(cancelled)


async def _claim_with(call: Invocation, batcher: LoopBatcher | None) -> Next:
    """Write the claim with the other calls' of this loop turn; the step after it."""
    assert batcher is not None and call.record is not None
    write = batcher.submit_start(call.record)
    try:
        claim = await batcher.result(write)
    except asyncio.CancelledError as cancelled:  # its claim was written before this went on
        _let_go(call, call.claimed(write.result), cancelled)
        raise
    if (
        isinstance(claim, Held)
        and call.record.status is not CallStatus.AWAITING_APPROVAL
        and (call.spec.global_key is None or call.phase is not Phase.FORWARD)
    ):
        return call.claimed(claim)  # (held, and nothing more to ask the ledger: straight on)
    return await _off_loop(call, functools.partial(call.claimed, claim))


async def _succeeded(call: Invocation, result: Any, batcher: LoopBatcher | None) -> Any:
    """``call.succeeded``, with the outcome of a batched call written off the loop (the span ends
    first)."""
    if batcher is None or not call.batched:  # (its outcome is written by the span's end: off the loop)
        return await asyncio.to_thread(call.succeeded, result)
    cost = call.outcome(result)
    assert call.span is not None and call.record is not None
    call.span.end()
    call.record.ended_ns = time.time_ns()
    write = batcher.submit_finish(call.record)
    try:
        error = await batcher.result(write)
    except asyncio.CancelledError as cancelled:  # the row was written before it went on
        try:
            call.settled(result, cost, write.result)
        except AgentRelayError as err:  # a ledger or budget failure still reaches the caller
            cancelled.add_note(f"agent-relay: {type(err).__name__}: {err}")
        raise
    return call.settled(result, cost, error)


async def _failed(call: Invocation, exc: BaseException, batcher: LoopBatcher | None) -> None:
    """``call.failed``, with the outcome of a batched call written off the loop."""
    record = call.record
    assert record is not None
    if batcher is None or not call.batched or record.status is not CallStatus.PENDING:
        return await asyncio.to_thread(call.failed, exc)
    cost = call.failing(exc)
    record.ended_ns = time.time_ns()
    write = batcher.submit_finish(record)
    try:
        error = await batcher.result(write)
    except asyncio.CancelledError as cancelled:  # the row was written before it went on
        try:
            call.failure_settled(exc, cost, write.result)
        except AgentRelayError as err:
            cancelled.add_note(f"agent-relay: {type(err).__name__}: {err}")
        raise
    call.failure_settled(exc, cost, error)


@contextlib.contextmanager
def plain_call(services: Services, spec: ToolSpec) -> Iterator[None]:
    """A tool called outside any session: a span, no ledger row, the function's own behaviour."""
    with services.tracer.start_as_current_span(
        spec.span_name,
        attributes=spans.plain_tool_attributes(spec.name),
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        try:
            yield
        except BaseException as exc:
            span.set_attribute(semconv.ERROR_TYPE, spans.error_type_name(exc))
            raise
