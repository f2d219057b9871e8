"""Many threads and asyncio tasks on one session: every call recorded, identical calls run once."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from agent_relay import AgentRuntime, tool
from agent_relay.testing import SpanCapture
from tests.support import calls_of


def test_eight_threads_in_one_session_record_every_call(runtime: AgentRuntime) -> None:
    @tool(runtime)
    def write(worker: int, i: int) -> int:
        return worker * 1000 + i

    with runtime.agent_session(name="threads") as session, ThreadPoolExecutor(8) as pool:
        # Threads inherit nothing from the caller's context by default; the session travels explicitly.
        def work(worker: int) -> list[int]:
            return [write(worker, i) for i in range(25)]

        futures = [pool.submit(contextvars.copy_context().run, work, w) for w in range(8)]
        results = [f.result() for f in futures]

    assert sorted(x for r in results for x in r) == sorted(w * 1000 + i for w in range(8) for i in range(25))
    rows = calls_of(runtime, session.run_id)
    assert len(rows) == 200
    assert {r["status"] for r in rows} == {"succeeded"}
    assert sorted(r["seq"] for r in rows) == list(range(1, 201))


def test_identical_calls_racing_on_threads_run_the_tool_once(runtime: AgentRuntime) -> None:
    started = threading.Event()
    release = threading.Event()
    bodies = []

    @tool(runtime)
    def reserve(seat: str) -> str:
        bodies.append(seat)
        started.set()
        release.wait(5)
        return f"res-{seat}"

    with runtime.agent_session(name="race") as session, ThreadPoolExecutor(4) as pool:
        first = pool.submit(contextvars.copy_context().run, reserve, "12A")
        assert started.wait(5)
        others = [pool.submit(contextvars.copy_context().run, reserve, "12A") for _ in range(3)]
        release.set()
        results = [first.result(), *(f.result() for f in others)]

    assert bodies == ["12A"]
    assert results == ["res-12A"] * 4
    assert len(calls_of(runtime, session.run_id)) == 1


@pytest.mark.asyncio
async def test_hundred_asyncio_tasks_in_one_session(runtime: AgentRuntime, spans: SpanCapture) -> None:
    @tool(runtime)
    async def fetch(i: int) -> int:
        await asyncio.sleep(0.02)
        return i * i

    async with runtime.agent_session(name="fanout") as session:
        results = await asyncio.gather(*(fetch(i) for i in range(100)))

    assert results == [i * i for i in range(100)]
    rows = calls_of(runtime, session.run_id)
    assert len(rows) == 100 and {r["status"] for r in rows} == {"succeeded"}
    tool_spans = spans.tool_spans()
    assert len(tool_spans) == 100
    # the span covers the awaited body, not just the creation of the coroutine
    assert min(s.end_time - s.start_time for s in tool_spans) >= 20_000_000
    (session_span,) = spans.session_spans()
    assert {s.parent.span_id for s in tool_spans} == {session_span.context.span_id}


@pytest.mark.asyncio
async def test_identical_async_calls_in_parallel_tasks_run_once(runtime: AgentRuntime) -> None:
    bodies = []

    @tool(runtime)
    async def lookup(sku: str) -> dict:
        bodies.append(sku)
        await asyncio.sleep(0.05)
        return {"sku": sku, "stock": 3}

    async with runtime.agent_session(name="dedup") as session:
        results = await asyncio.gather(*(lookup("A-1") for _ in range(10)))

    assert bodies == ["A-1"]
    assert results == [{"sku": "A-1", "stock": 3}] * 10
    assert len(calls_of(runtime, session.run_id)) == 1


@pytest.mark.asyncio
async def test_session_crosses_into_tasks_created_inside_it(runtime: AgentRuntime) -> None:
    @tool(runtime)
    def note(text: str) -> str:
        return text

    async def subtask() -> str:
        await asyncio.sleep(0)
        return note("from a task")

    async with runtime.agent_session(name="tasks") as session, asyncio.TaskGroup() as tg:
        task = tg.create_task(subtask())
    assert task.result() == "from a task"
    assert [r["output"] for r in calls_of(runtime, session.run_id)] == ["from a task"]
