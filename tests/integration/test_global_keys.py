"""Keys across runs (issue 16): ``@tool(key=..., key_scope="global")`` runs a key once for every run on the
ledger — a second run is served the first's result, in its own run, with a span saying so; the Stripe rule
holds across runs; a key runs again after its retention, after its holder failed or was compensated; a
holder in flight elsewhere is waited for, and one whose process died is in doubt."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from agent_relay import (
    AgentRuntime,
    CallInDoubtError,
    ConfigurationError,
    IdempotencyKeyReuseError,
    tool,
)
from agent_relay import semconv as sc
from agent_relay.ledger.schema import tool_call_keys
from agent_relay.testing import SpanCapture
from tests.support import calls_of, run_row


def payments(runtime: AgentRuntime, charged: list[tuple[str, int]], **options: object) -> Callable[..., str]:
    @tool(runtime, key=lambda a: a["order_id"], key_scope="global", compensation="refund", **options)  # type: ignore[arg-type]
    def charge(order_id: str, amount: int) -> str:
        charged.append((order_id, amount))
        if amount < 0:
            raise ValueError("negative amount")
        return f"ch-{order_id}-{len(charged)}"

    @tool(runtime)
    def refund(order_id: str, amount: int) -> None:
        charged.append((order_id, -amount))

    return charge


def key_rows(runtime: AgentRuntime) -> list[dict[str, object]]:
    with runtime.ledger.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(tool_call_keys))]


def test_an_order_is_charged_once_across_runs(runtime: AgentRuntime, spans: SpanCapture) -> None:
    charged: list[tuple[str, int]] = []
    charge = payments(runtime, charged)
    with runtime.agent_session("checkout") as first:
        receipt = charge("o-1", 30)
    with runtime.agent_session("checkout-retry") as second:
        again = charge("o-1", 30)
        other = charge("o-2", 30)

    assert charged == [("o-1", 30), ("o-2", 30)]  # o-1 ran once, ever
    assert again == receipt == "ch-o-1-1" and other == "ch-o-2-2"
    [served, live] = calls_of(runtime, second.run_id)
    assert (served["status"], served["origin"], served["output"]) == ("succeeded", "deduplicated", receipt)
    assert served["cost_usd"] is None and live["origin"] == "live"
    assert second.status == "succeeded"
    [span] = [s for s in spans.tool_spans() if s.attributes[sc.RUN_ID] == second.run_id][:1]
    assert span.attributes[sc.DEDUPLICATED] is True and span.attributes[sc.KEY_SCOPE] == "global"
    assert span.attributes[sc.SERVED_FROM_RUN_ID] == first.run_id
    first_call = calls_of(runtime, first.run_id)[0]
    assert span.attributes[sc.SERVED_FROM_CALL_ID] == first_call["call_id"]
    [row] = [k for k in key_rows(runtime) if k["run_id"] == first.run_id]
    assert (row["status"], row["output"], row["expires_at"]) == ("succeeded", receipt, None)
    # the key is not the run-scoped key, and never reaches a span
    keys_on_spans = {s.attributes.get(sc.IDEMPOTENCY_KEY) for s in spans.tool_spans()}
    assert row["scope_key"] not in keys_on_spans
    # agent-relay export rebuilds the served call's span as served
    from opentelemetry.sdk.resources import Resource

    from agent_relay.cli.export import spans_of

    exported = list(spans_of(run_row(runtime, second.run_id), calls_of(runtime, second.run_id), Resource({})))
    assert [s.attributes.get(sc.DEDUPLICATED) for s in exported[1:]] == [True, None]


def test_the_stripe_rule_holds_across_runs(runtime: AgentRuntime) -> None:
    charged: list[tuple[str, int]] = []
    charge = payments(runtime, charged)
    with runtime.agent_session("checkout") as first:
        charge("o-1", 30)
    with pytest.raises(IdempotencyKeyReuseError) as caught, runtime.agent_session("other") as second:
        charge("o-1", 99)
    assert charged == [("o-1", 30)]
    assert caught.value.run_id == first.run_id and "amount" in str(caught.value)
    [row] = calls_of(runtime, second.run_id)
    assert row["status"] == "failed" and row["error_type"].endswith("IdempotencyKeyReuseError")


def test_a_failed_or_compensated_holder_frees_its_key(runtime: AgentRuntime) -> None:
    charged: list[tuple[str, int]] = []
    charge = payments(runtime, charged)
    with pytest.raises(ValueError), runtime.agent_session("bad"):
        charge("o-1", -1)
    assert key_rows(runtime) == []
    with pytest.raises(RuntimeError), runtime.agent_session("declined") as declined:
        charge("o-1", 30)  # the same key, other arguments: its holder failed, so it is free
        raise RuntimeError("out of stock")
    assert declined.status == "compensated" and key_rows(runtime) == []  # refunded: the key is free again
    with runtime.agent_session("checkout"):
        assert charge("o-1", 30) == "ch-o-1-4"
    assert charged == [("o-1", -1), ("o-1", 30), ("o-1", -30), ("o-1", 30)]


def test_a_key_runs_again_after_its_retention_and_survives_prune_until_then(runtime: AgentRuntime) -> None:
    charged: list[tuple[str, int]] = []
    charge = payments(runtime, charged, retain=dt.timedelta(days=30))
    with runtime.agent_session("checkout") as first:
        charge("o-1", 30)
    pruned = runtime.ledger.prune(dt.timedelta(0))  # the holder's run is gone; its key keeps its result
    assert pruned.runs == 1 and calls_of(runtime, first.run_id) == []
    with runtime.agent_session("later") as later:
        assert charge("o-1", 30) == "ch-o-1-1"
    assert charged == [("o-1", 30)] and calls_of(runtime, later.run_id)[0]["origin"] == "deduplicated"
    [row] = key_rows(runtime)
    assert row["expires_at"] is not None
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)  # (as if 30 days went by)
    with runtime.ledger.engine.begin() as conn:
        conn.execute(tool_call_keys.update().values(expires_at=past))
    with runtime.agent_session("next-month") as next_month:
        assert charge("o-1", 30) == "ch-o-1-2"
    assert charged == [("o-1", 30), ("o-1", 30)]
    [row] = key_rows(runtime)
    assert row["run_id"] == next_month.run_id
    with runtime.ledger.engine.begin() as conn:
        conn.execute(tool_call_keys.update().values(expires_at=past))
    runtime.ledger.prune(dt.timedelta(days=1))  # expired keys go with a prune
    assert key_rows(runtime) == []


def test_bad_options_are_refused_naming_the_fix(runtime: AgentRuntime) -> None:
    with pytest.raises(ConfigurationError, match="needs key="):
        tool(runtime, key_scope="global")
    with pytest.raises(ConfigurationError, match=r"'run'.*or 'global'"):
        tool(runtime, key=lambda a: "k", key_scope="everywhere")
    with pytest.raises(ConfigurationError, match=r"retain=\.\.\. needs key_scope='global'"):
        tool(runtime, key=lambda a: "k", retain=dt.timedelta(days=1))
    with pytest.raises(ConfigurationError, match=r"positive datetime\.timedelta"):
        tool(runtime, key=lambda a: "k", key_scope="global", retain=30)  # type: ignore[arg-type]


AGENT = textwrap.dedent(
    """
    import os, sys, time
    from agent_relay import AgentRuntime, tool

    url, log, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    runtime = AgentRuntime(url)

    @tool(runtime, key=lambda a: a["order_id"], key_scope="global")
    def charge(order_id: str, amount: int) -> str:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\\n")
        if mode == "die":
            os._exit(3)  # the process dies mid-call: its outcome is unknown
        time.sleep(0.3)  # (long enough that the other process meets it in flight)
        return f"ch-{os.getpid()}"

    with runtime.agent_session("checkout") as session:
        print(session.run_id, charge("o-1", 30), flush=True)
    runtime.shutdown()
    """
)


def _agent(tmp_path: Path, url: str, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, str(script), url, str(tmp_path / "charges.log"), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def test_two_processes_charge_an_order_once(runtime: AgentRuntime, database_url: str, tmp_path: Path) -> None:
    procs = [_agent(tmp_path, database_url, "live") for _ in range(2)]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outs.append(out.split())
    pids = (tmp_path / "charges.log").read_text().split()
    assert len(pids) == 1  # one body ran, in one of the two processes
    [(run_a, result_a), (run_b, result_b)] = outs
    assert result_a == result_b == f"ch-{pids[0]}"
    origins = sorted(calls_of(runtime, run)[0]["origin"] for run in (run_a, run_b))
    assert origins == ["deduplicated", "live"]


def test_a_holder_whose_process_died_is_in_doubt_until_settled(
    runtime: AgentRuntime, database_url: str, tmp_path: Path
) -> None:
    dead = _agent(tmp_path, database_url, "die")
    dead.communicate(timeout=120)
    assert dead.returncode == 3

    charged: list[tuple[str, int]] = []
    charge = payments(runtime, charged)
    with pytest.raises(CallInDoubtError) as caught, runtime.agent_session("checkout") as blocked:
        charge("o-1", 30)
    assert charged == [] and blocked.status == "in_doubt"  # stopped, not unwound
    holder = caught.value.call_id
    assert "settle_call" in str(caught.value) and caught.value.run_id != blocked.run_id
    runtime.settle_call(holder, "succeeded", output="ch-settled")
    with runtime.agent_session("checkout", resume_run_id=blocked.run_id) as resumed:
        assert charge("o-1", 30) == "ch-settled"
    assert charged == [] and resumed.status == "succeeded"


def test_a_call_meeting_its_key_in_flight_in_another_run_waits_for_it(runtime: AgentRuntime) -> None:
    import threading
    import time

    from agent_relay import CallInProgressError

    release, ran = threading.Event(), []

    @tool(runtime, key=lambda a: a["order_id"], key_scope="global")
    def charge(order_id: str) -> str:
        ran.append(order_id)
        assert release.wait(60)
        return "ch-1"

    results: dict[str, object] = {}

    def agent(name: str) -> None:
        with runtime.agent_session(name) as session:
            results[name] = (session.run_id, charge("o-1"))

    first = threading.Thread(target=agent, args=("first",))
    first.start()
    while not ran:  # (until the first run's body is running)
        time.sleep(0.01)
    second = threading.Thread(target=agent, args=("second",))
    second.start()
    while not _pending_rows(runtime, 2):  # (until the second run's call is claimed, waiting on the key)
        time.sleep(0.01)

    impatient = AgentRuntime(runtime.ledger.db.url.render_as_string(hide_password=False), wait_timeout_s=0.1)
    try:
        with pytest.raises(CallInProgressError), impatient.agent_session("third"):
            _same_tool(impatient)("o-1")
    finally:
        impatient.shutdown()
    release.set()
    first.join(60)
    second.join(60)
    assert ran == ["o-1"]
    (_, a), (run_b, b) = results["first"], results["second"]  # type: ignore[misc]
    assert a == b == "ch-1" and calls_of(runtime, run_b)[0]["origin"] == "deduplicated"


def _same_tool(runtime: AgentRuntime) -> Callable[..., str]:
    @tool(runtime, name="charge", key=lambda a: a["order_id"], key_scope="global")
    def charge(order_id: str) -> str:
        raise AssertionError("never runs: the first run holds the key")

    return charge


def _pending_rows(runtime: AgentRuntime, count: int) -> bool:
    from agent_relay.ledger.schema import tool_calls

    with runtime.ledger.engine.connect() as conn:
        found = conn.execute(
            sa.select(sa.func.count()).select_from(tool_calls).where(tool_calls.c.status == "pending")
        ).scalar_one()
    return bool(found >= count)


def test_async_runs_gathered_on_one_loop_charge_an_order_once(runtime: AgentRuntime) -> None:
    import asyncio

    ran: list[str] = []

    @tool(runtime, key=lambda a: a["order_id"], key_scope="global")
    async def charge(order_id: str) -> str:
        ran.append(order_id)
        await asyncio.sleep(0.05)  # (the other run's call meets it in flight)
        return f"ch-{order_id}"

    async def checkout(name: str) -> tuple[str, str]:
        async with runtime.agent_session(name) as session:
            return session.run_id, await charge("o-1")

    async def both() -> list[tuple[str, str]]:
        return list(await asyncio.gather(checkout("a"), checkout("b")))

    results = asyncio.run(both())
    assert ran == ["o-1"] and [r for _, r in results] == ["ch-o-1", "ch-o-1"]
    origins = sorted(calls_of(runtime, run)[0]["origin"] for run, _ in results)
    assert origins == ["deduplicated", "live"]
