"""The pure decisions behind keys across runs (``keyscope.decide``) and the multi-agent saga's order
(``compensation.interleave``): no database."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any

from agent_relay import compensation
from agent_relay.keyscope import Busy, Doubt, Serve, Take, decide
from agent_relay.ledger.connection import IN_DOUBT_OWNER
from agent_relay.ledger.key_claims import Holder
from tests.support import dead_owner

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ALIVE = "elsewhere:1"  # (another host: never provably gone)


def holder(**over: Any) -> Holder:
    values: dict[str, Any] = dict(
        run_id="r1", call_id="c1", status="pending", arguments={"a": 1}, output=None, owner=ALIVE,
        expires_at=None, call_status="pending", call_output=None, call_owner=ALIVE,
    )  # fmt: skip
    values.update(over)
    return Holder(**values)


def test_what_a_key_holder_means_for_another_call() -> None:
    done = holder(status="succeeded", output="ch-1", call_status="succeeded", call_output="ch-1")
    assert decide(done, "c2", NOW, False) == Serve(done, "ch-1")
    pruned = holder(status="succeeded", output="ch-1", call_status=None)  # its run was pruned
    assert decide(pruned, "c2", NOW, False) == Serve(pruned, "ch-1")
    settled = holder(call_status="succeeded", call_output="ch-9")  # key row left pending, call settled
    assert decide(settled, "c2", NOW, False) == Serve(settled, "ch-9")
    for free in (holder(call_status="failed"), holder(call_status=None), holder(call_status="rejected")):
        assert isinstance(decide(free, "c2", NOW, False), Take)
    assert isinstance(decide(holder(), "c2", NOW, False), Busy)
    assert isinstance(decide(holder(call_status="awaiting_approval"), "c2", NOW, False), Busy)
    assert isinstance(decide(holder(), "c1", NOW, False), Take)  # its own key (a retry, a resume)


def test_expiry_and_dead_holders() -> None:
    past, future = NOW - dt.timedelta(seconds=1), NOW + dt.timedelta(days=1)
    expired = holder(status="succeeded", output="x", call_status="succeeded", expires_at=past)
    assert isinstance(decide(expired, "c2", NOW, False), Take)
    naive = holder(status="succeeded", output="x", expires_at=past.replace(tzinfo=None))  # (SQLite)
    assert isinstance(decide(naive, "c2", NOW, False), Take)
    kept = holder(status="succeeded", output="x", expires_at=future)
    assert isinstance(decide(kept, "c2", NOW, False), Serve)
    gone = holder(owner=dead_owner(), call_owner=None)
    assert isinstance(decide(gone, "c2", NOW, False), Doubt)
    assert isinstance(decide(gone, "c2", NOW, True), Take)  # idempotent: safe to run again
    timed_out = holder(call_owner=IN_DOUBT_OWNER)  # its body timed out: its row was let go
    assert isinstance(decide(timed_out, "c2", NOW, False), Doubt)


def test_children_are_unwound_where_they_started_among_the_calls() -> None:
    def at(minute: int) -> dt.datetime:
        return NOW + dt.timedelta(minutes=minute)

    def step(seq: int, minute: int) -> compensation.Step:
        return compensation.Step(f"c{seq}", seq, None, None, {}, None, at(minute))  # type: ignore[arg-type]

    def child(name: str, minute: int) -> compensation.Child:
        return compensation.Child(SimpleNamespace(run_id=name, started_at=at(minute)))

    steps = [step(3, 30), step(2, 20), step(1, 10)]  # latest first
    kids = [child("late", 40), child("middle", 25), child("tie", 10), child("first", 5)]
    order = compensation.interleave(steps, kids)
    names = [item.run_id if isinstance(item, compensation.Child) else item.seq for item in order]
    assert names == ["late", 3, "middle", 2, "tie", 1, "first"]
    assert compensation.interleave([], kids) == kids
