"""Children belong to their parent: replaying, forking or resuming an orchestrator covers the sub-agent
sessions it opened — their tools are served from the child runs recorded under it, never run live."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agent_relay import AgentRuntime, ReplayDivergenceError, tool
from tests.support import calls_of, run_row


def _orchestrator(runtime: AgentRuntime, ran: list[str]) -> Callable[[str], list[str]]:
    @tool(runtime)
    def plan(goal: str) -> list[str]:
        ran.append(f"plan {goal}")
        return ["flights", "hotels"]

    @tool(runtime)
    def search(topic: str) -> str:
        ran.append(f"search {topic}")
        return f"found {topic}"

    def agent(goal: str) -> list[str]:
        results = []
        for topic in plan(goal):
            with runtime.agent_session(name="researcher", input_payload={"topic": topic}) as child:
                results.append(search(topic))
                child.set_output(results[-1])
        return results

    return agent


def _children(runtime: AgentRuntime, run_id: str) -> list[dict[str, Any]]:
    import sqlalchemy as sa

    from agent_relay.ledger import agent_runs

    with runtime.ledger.engine.connect() as conn:
        rows = conn.execute(
            sa.select(agent_runs)
            .where(agent_runs.c.parent_run_id == run_id)
            .order_by(agent_runs.c.started_at)
        )
        return [dict(r._mapping) for r in rows]


def test_replaying_a_parent_replays_its_children(runtime: AgentRuntime) -> None:
    ran: list[str] = []
    agent = _orchestrator(runtime, ran)
    with runtime.agent_session(name="trip") as source:
        recorded = agent("Rome")
    ran.clear()
    with runtime.agent_session(name="trip", replay=True, replay_run_id=source.run_id) as replay:
        assert agent("Rome") == recorded
    assert ran == []  # no tool body ran, the children's included
    source_children = _children(runtime, source.run_id)
    children = _children(runtime, replay.run_id)
    assert [(c["mode"], c["replay_of"]) for c in children] == [
        ("replay", recorded_child["run_id"]) for recorded_child in source_children
    ]
    assert all(r["origin"] == "replayed" for c in children for r in calls_of(runtime, c["run_id"]))


def test_a_replay_whose_agent_opens_another_child_diverges(runtime: AgentRuntime) -> None:
    ran: list[str] = []
    agent = _orchestrator(runtime, ran)
    with runtime.agent_session(name="trip") as source:
        agent("Rome")
    ran.clear()
    with (
        pytest.raises(ReplayDivergenceError, match="'writer'"),
        runtime.agent_session(name="trip", replay=True, replay_run_id=source.run_id),
        runtime.agent_session(name="writer"),
    ):
        pass
    assert ran == []


def test_a_fork_replays_the_children_before_its_point_and_runs_the_rest_live(runtime: AgentRuntime) -> None:
    ran: list[str] = []
    agent = _orchestrator(runtime, ran)
    with runtime.agent_session(name="trip") as source:
        agent("Rome")
    ran.clear()
    with runtime.agent_session(name="trip", replay_run_id=source.run_id, fork_after=1) as fork:
        agent("Rome")  # plan() is the first call: served; the children come after the fork point
    assert ran == ["search flights", "search hotels"]
    assert [c["mode"] for c in _children(runtime, fork.run_id)] == ["live", "live"]


def test_resuming_a_parent_resumes_its_children(runtime: AgentRuntime) -> None:
    ran: list[str] = []
    agent = _orchestrator(runtime, ran)

    tries: list[str] = []

    @tool(runtime)
    def book(topic: str) -> str:
        ran.append(f"book {topic}")
        tries.append(topic)
        if len(tries) == 1:
            raise KeyboardInterrupt  # the process dies inside the last child, after the researchers
        return f"booked {topic}"

    def booking_agent(goal: str) -> list[str]:
        results = agent(goal)
        with runtime.agent_session(name="booker"):
            results.append(book("flights"))
        return results

    with pytest.raises(KeyboardInterrupt), runtime.agent_session(name="trip") as first:
        booking_agent("Rome")
    ran.clear()
    with runtime.agent_session(name="trip", resume_run_id=first.run_id) as resumed:
        assert booking_agent("Rome") == ["found flights", "found hotels", "booked flights"]
    assert ran == ["book flights"]  # only the call that never finished ran again
    children = _children(runtime, first.run_id)
    assert [(c["name"], c["status"]) for c in children] == [
        ("researcher", "succeeded"),
        ("researcher", "succeeded"),
        ("booker", "succeeded"),
    ]  # the same child runs, resumed: no new ones
    assert resumed.status == "succeeded" and run_row(runtime, first.run_id)["status"] == "succeeded"
