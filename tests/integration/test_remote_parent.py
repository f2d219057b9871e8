"""``agent_session(parent_run_id=..., child_key=...)``: a child of a run recorded in another process (what an
MCP server tool records under), opened again — not anew — when the same request comes again."""

from __future__ import annotations

import pytest

from agent_relay import AgentRuntime, SessionStateError, tool
from tests.support import calls_of, run_row


def test_the_same_request_continues_its_child_run(runtime: AgentRuntime) -> None:
    ran: list[str] = []

    @tool(runtime)
    def charge(order: str) -> str:
        ran.append(order)
        if ran.count("B") == 1 and order == "B":  # the first try of B fails
            raise ConnectionError("card network down")
        return f"charged {order}"

    with runtime.agent_session("charge", parent_run_id="caller-run", child_key="key-1") as first:
        assert charge("A") == "charged A"
    with runtime.agent_session("charge", parent_run_id="caller-run", child_key="key-1") as retried:
        assert charge("A") == "charged A"  # served: the retried request does not charge again
    assert ran == ["A"] and retried.run_id == first.run_id and retried.mode == "resume"
    row = run_row(runtime, first.run_id)
    assert (row["parent_run_id"], row["status"]) == ("caller-run", "succeeded")
    assert [c["status"] for c in calls_of(runtime, first.run_id)] == ["succeeded"]

    other = runtime.agent_session("charge", parent_run_id="caller-run", child_key="key-2")
    with pytest.raises(ConnectionError), other:
        charge("B")
    assert other.run_id != first.run_id and other.status == "failed"
    with runtime.agent_session("charge", parent_run_id="caller-run", child_key="key-2") as again:
        assert charge("B") == "charged B"  # a failed call runs again
    assert again.run_id == other.run_id and run_row(runtime, other.run_id)["status"] == "succeeded"

    # the given parent, not the run open here
    with runtime.agent_session("outer") as outer, runtime.agent_session("charge", parent_run_id="p") as inner:
        pass
    assert inner.parent_run_id == "p" != outer.run_id


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"child_key": "k"}, "needs parent_run_id"),
        ({"parent_run_id": ""}, "non-empty string"),
        ({"parent_run_id": "p", "child_key": 7}, "non-empty string"),
        ({"parent_run_id": "p", "replay": True, "replay_run_id": "r"}, "cannot be combined"),
        ({"parent_run_id": "p", "resume_run_id": "r"}, "cannot be combined"),
    ],
)
def test_bad_remote_parents_are_refused(runtime: AgentRuntime, options: dict, message: str) -> None:
    with pytest.raises(SessionStateError, match=message):
        runtime.agent_session("charge", **options)
