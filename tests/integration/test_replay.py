"""Replay, fork and resume: recorded runs served by key, divergence named, crashed runs continued."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from agent_relay import (
    AgentRuntime,
    BudgetReservationError,
    CallInDoubtError,
    IdempotencyKeyReuseError,
    ReplayDivergenceError,
    SessionStateError,
    UnknownRunError,
    tool,
)
from agent_relay import semconv as sc
from agent_relay.keys import call_id
from agent_relay.ledger import tool_calls
from agent_relay.testing import SpanCapture
from tests.support import calls_of, dead_owner, run_row


class Inventory:
    """Tools whose bodies count how often they ran."""

    def __init__(self, runtime: AgentRuntime) -> None:
        self.ran: list[str] = []
        ran = self.ran

        @tool(runtime)
        def search(query: str, limit: int = 3) -> list[str]:
            ran.append("search")
            return [f"{query}-{i}" for i in range(limit)]

        @tool(runtime)
        def reserve(sku: str) -> dict:
            ran.append("reserve")
            return {"sku": sku, "hold": f"H-{sku}"}

        @tool(runtime)
        def notify(to: str, text: str) -> str:
            ran.append("notify")
            return f"sent:{to}"

        self.search, self.reserve, self.notify = search, reserve, notify

    def agent(self, query: str, to: str = "ops@example.com") -> dict:
        items = self.search(query)
        holds = [self.reserve(item)["hold"] for item in items[:2]]
        receipt = self.notify(to, f"held {', '.join(holds)}")
        return {"holds": holds, "receipt": receipt}


def record(runtime: AgentRuntime, inv: Inventory, query: str = "lamp") -> tuple[str, dict]:
    with runtime.agent_session(name="shop", input_payload={"q": query}) as session:
        out = inv.agent(query)
        session.set_output(out)
    return session.run_id, out


def test_replay_serves_every_call_and_runs_no_tool_body(runtime: AgentRuntime, spans: SpanCapture) -> None:
    inv = Inventory(runtime)
    source, out = record(runtime, inv)
    inv.ran.clear()
    spans.clear()

    with runtime.agent_session(name="shop", replay=True, replay_run_id=source) as replay:
        replayed = inv.agent("lamp")
        replay.set_output(replayed)

    assert inv.ran == []
    assert replayed == out
    run = run_row(runtime, replay.run_id)
    assert (run["mode"], run["replay_of"], run["status"], run["output"]) == (
        "replay",
        source,
        "succeeded",
        out,
    )
    sequence = [(r["tool_name"], r["idempotency_key"], r["output"]) for r in calls_of(runtime, source)]
    rows = calls_of(runtime, replay.run_id)
    assert [(r["tool_name"], r["idempotency_key"], r["output"]) for r in rows] == sequence
    assert {r["origin"] for r in rows} == {"replayed"}
    tool_spans = spans.tool_spans()
    assert len(tool_spans) == 4 and all(s.attributes[sc.REPLAYED] is True for s in tool_spans)
    assert replay.unrequested_calls == []


def test_divergent_replay_names_the_tool_the_difference_and_the_record(runtime: AgentRuntime) -> None:
    inv = Inventory(runtime)
    source, _ = record(runtime, inv)
    inv.ran.clear()

    with (
        pytest.raises(ReplayDivergenceError) as caught,
        runtime.agent_session(name="shop", replay=True, replay_run_id=source),
    ):
        inv.agent("lamp", to="boss@example.com")
    message = str(caught.value)
    assert inv.ran == []
    assert "diverged at call #4" in message and "notify(" in message
    assert 'to: "ops@example.com" -> "boss@example.com"' in message
    assert '"sent:ops@example.com"' in message  # what the source recorded at that point
    assert caught.value.tool_name == "notify" and caught.value.source_run_id == source
    diverged = calls_of(runtime, caught.value.run_id)[-1]
    assert (diverged["tool_name"], diverged["origin"], diverged["status"]) == ("notify", "diverged", "failed")
    assert diverged["arguments"]["to"] == "boss@example.com"


def test_recorded_failures_replay_as_their_type_when_safe(runtime: AgentRuntime) -> None:
    class QuotaExceeded(Exception):
        pass

    class Undeclared(Exception):
        pass

    @tool(runtime)
    def parse(text: str) -> int:
        return int(text)

    @tool(runtime, raises=(QuotaExceeded,))
    def fetch(url: str) -> str:
        raise QuotaExceeded(f"quota exceeded for {url}")

    @tool(runtime)
    def other(x: int) -> None:
        raise Undeclared("secret internals")

    def agent() -> list[str]:
        seen = []
        for call in (lambda: parse("x1"), lambda: fetch("https://a"), lambda: other(1)):
            try:
                call()
            except Exception as exc:
                seen.append(f"{type(exc).__name__}: {exc}")
        return seen

    with runtime.agent_session(name="errs") as source:
        recorded = agent()
    with runtime.agent_session(name="errs", replay=True, replay_run_id=source.run_id):
        replayed = agent()
    assert recorded[:2] == replayed[:2]
    assert recorded[0].startswith("ValueError: invalid literal")
    assert replayed[2].startswith("ReplayedError") and "Undeclared: secret internals" in replayed[2]


def test_recorded_costs_replay_the_same_budget_decision(runtime: AgentRuntime) -> None:
    ran = []

    @tool(runtime, cost=0.4)
    def step(i: int) -> int:
        ran.append(i)
        return i

    def agent() -> None:
        for i in range(5):
            step(i)

    with (
        pytest.raises(BudgetReservationError) as live,
        runtime.agent_session(name="b", budget_limit=1) as source,
    ):
        agent()
    # step(2) was refused before it ran (0.8 + 0.4 > 1): the replay refuses it again, not a divergence
    with (
        pytest.raises(BudgetReservationError) as again,
        runtime.agent_session(name="b", budget_limit=1, replay=True, replay_run_id=source.run_id) as replay,
    ):
        agent()
    assert ran == [0, 1]
    assert again.value.spent == live.value.spent == Decimal("0.8")
    assert again.value.tool_name == live.value.tool_name == "step"
    assert run_row(runtime, replay.run_id)["cost_usd"] == Decimal("0.8")


def test_unrequested_recorded_calls_are_reported(runtime: AgentRuntime) -> None:
    inv = Inventory(runtime)
    source, _ = record(runtime, inv)
    with runtime.agent_session(name="shop", replay=True, replay_run_id=source) as replay:
        inv.search("lamp")
    assert [r.tool_name for r in replay.unrequested_calls] == ["reserve", "reserve", "notify"]


def test_unknown_source_run_fails_before_the_agent_runs(runtime: AgentRuntime) -> None:
    ran = []
    with (
        pytest.raises(UnknownRunError, match="no run 'missing'"),
        runtime.agent_session(name="x", replay=True, replay_run_id="missing"),
    ):
        ran.append("agent")
    assert ran == []
    with runtime.ledger.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM agent_runs").scalar() == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"replay": True}, "needs replay_run_id"),
        ({"replay_run_id": "r"}, "needs replay=True"),
        ({"resume_run_id": "r", "replay": True}, "cannot be combined"),
        ({"fork_after": 2}, "needs replay_run_id"),
        ({"replay_run_id": "r", "fork_after": -1}, "fork_after must be"),
    ],
)
def test_replay_options_are_checked(runtime: AgentRuntime, options: dict, message: str) -> None:
    with pytest.raises(SessionStateError, match=message):
        runtime.agent_session(name="x", **options)


def test_fork_serves_the_first_k_calls_then_goes_live(runtime: AgentRuntime) -> None:
    ran: list[int] = []

    @tool(runtime)
    def step(i: int, prompt: str) -> str:
        ran.append(i)
        return f"{prompt}-{i}"

    with runtime.agent_session(name="six") as source:
        first = [step(i, "v1") for i in range(6)]
    ran.clear()
    with runtime.agent_session(name="six", replay_run_id=source.run_id, fork_after=3) as fork:
        forked = [step(i, "v1") for i in range(3)] + [step(i, "v2") for i in range(3, 6)]
    assert ran == [3, 4, 5]
    assert forked == [*first[:3], "v2-3", "v2-4", "v2-5"]
    run = run_row(runtime, fork.run_id)
    assert (run["mode"], run["replay_of"], run["fork_after"]) == ("fork", source.run_id, 3)
    assert [r["origin"] for r in calls_of(runtime, fork.run_id)] == ["replayed"] * 3 + ["live"] * 3


def test_non_deduplicated_tool_repeats_and_replays_in_order(runtime: AgentRuntime) -> None:
    ticks = iter(range(100))

    @tool(runtime, deduplicate=False)
    def poll(job: str) -> str:
        return "done" if next(ticks) >= 2 else "running"

    def agent() -> list[str]:
        states = [poll("j1")]
        while states[-1] != "done":
            states.append(poll("j1"))
        return states

    with runtime.agent_session(name="poll") as source:
        assert agent() == ["running", "running", "done"]
    with runtime.agent_session(name="poll", replay=True, replay_run_id=source.run_id):
        assert agent() == ["running", "running", "done"]
    assert next(ticks) == 3  # the replay ran no body
    assert len({r["idempotency_key"] for r in calls_of(runtime, source.run_id)}) == 3


def test_caller_supplied_key_reused_with_other_arguments_is_refused(runtime: AgentRuntime) -> None:
    charges = []

    @tool(runtime, key=lambda args: args["order_id"])
    def charge(order_id: str, amount: int) -> str:
        charges.append(amount)
        return f"ch-{order_id}"

    with runtime.agent_session(name="pay") as session:
        assert charge("o-1", 500) == "ch-o-1"
        assert charge("o-1", 500) == "ch-o-1"  # same key, same request: served
        with pytest.raises(IdempotencyKeyReuseError, match="amount: 500 -> 700") as caught:
            charge("o-1", 700)
    assert charges == [500]
    assert isinstance(caught.value, ValueError) and caught.value.user_key == "o-1"
    assert len(calls_of(runtime, session.run_id)) == 1


def test_eight_threads_racing_on_one_call_run_its_body_once(runtime: AgentRuntime) -> None:
    bodies = []
    gate = threading.Barrier(8)

    @tool(runtime)
    def transfer(account: str, cents: int) -> str:
        bodies.append(account)
        return "tx-1"

    def racer() -> str:
        gate.wait(5)
        return transfer("acc-9", 100)

    with runtime.agent_session(name="race") as session, ThreadPoolExecutor(8) as pool:
        results = [f.result() for f in [pool.submit(contextvars.copy_context().run, racer) for _ in range(8)]]
    assert bodies == ["acc-9"] and results == ["tx-1"] * 8
    assert len(calls_of(runtime, session.run_id)) == 1


def test_resume_serves_succeeded_calls_and_reruns_failed_ones(
    runtime: AgentRuntime, spans: SpanCapture
) -> None:
    ran: list[str] = []
    flaky = {"fail": True}

    @tool(runtime)
    def fetch(doc: str) -> str:
        ran.append(f"fetch {doc}")
        return doc.upper()

    @tool(runtime)
    def publish(text: str) -> str:
        ran.append(f"publish {text}")
        if flaky["fail"]:
            raise ConnectionError("CMS down")
        return "post-1"

    def agent() -> str:
        return publish(fetch("a") + fetch("b"))

    with pytest.raises(ConnectionError), runtime.agent_session(name="pub", budget_limit=5) as first:
        agent()
    flaky["fail"] = False
    spans.clear()
    with runtime.agent_session(name="pub", resume_run_id=first.run_id) as resumed:
        assert agent() == "post-1"
    assert resumed.run_id == first.run_id
    assert ran == ["fetch a", "fetch b", "publish AB", "publish AB"]
    rows = calls_of(runtime, first.run_id)
    assert [(r["tool_name"], r["status"], r["attempts"]) for r in rows] == [
        ("fetch", "succeeded", 1),
        ("fetch", "succeeded", 1),
        ("publish", "succeeded", 2),
    ]
    run = run_row(runtime, first.run_id)
    assert (run["status"], run["mode"], run["budget_limit_usd"]) == ("succeeded", "resume", Decimal(5))
    assert [s.attributes.get(sc.RESUMED) for s in spans.tool_spans()] == [True, True, None]


def test_a_compensated_run_cannot_be_resumed(runtime: AgentRuntime) -> None:
    @tool(runtime, compensation="undo")
    def do(x: int) -> int:
        return x

    @tool(runtime)
    def undo(x: int) -> None: ...

    with pytest.raises(RuntimeError), runtime.agent_session(name="c") as session:
        do(1)
        raise RuntimeError("stop")
    with (
        pytest.raises(SessionStateError, match="compensated"),
        runtime.agent_session(name="c", resume_run_id=session.run_id),
    ):
        pass


def test_an_in_doubt_call_is_named_and_can_be_settled_by_hand(runtime: AgentRuntime) -> None:
    ran = []

    @tool(runtime)
    def wire(amount: int) -> str:
        ran.append(amount)
        return "w-1"

    with pytest.raises(RuntimeError), runtime.agent_session(name="wire") as session:
        raise RuntimeError("before any call")
    # What a process that died inside wire() leaves behind: a pending row owned by a dead process.
    key_row = {"run_id": session.run_id, "amount": 10}
    with runtime.agent_session(name="probe") as probe:
        wire(10)
    (template,) = calls_of(runtime, probe.run_id)
    dead_call = call_id(session.run_id, "forward", template["idempotency_key"])
    with runtime.ledger.engine.begin() as conn:
        conn.execute(
            tool_calls.insert().values(
                {
                    **template,
                    "call_id": dead_call,
                    "run_id": session.run_id,
                    "status": "pending",
                    "output": None,
                    "owner": dead_owner(),
                    "ended_at": None,
                }
            )
        )
    ran.clear()
    with (
        pytest.raises(CallInDoubtError, match="settle") as caught,
        runtime.agent_session(name="wire", resume_run_id=session.run_id),
    ):
        wire(key_row["amount"])
    assert ran == [] and caught.value.call_id == dead_call
    runtime.settle_call(dead_call, "succeeded", output="w-1")
    with runtime.agent_session(name="wire", resume_run_id=session.run_id) as resumed:
        assert wire(10) == "w-1"
    assert ran == [] and resumed.status == "succeeded"
