"""What a tool takes or returns comes back from the ledger exactly as JSON said it: ``1.0`` stays a float,
integers of any size stay integers, and money is exact — on SQLite and PostgreSQL, served by a replay,
a resume or from an older call of a long session."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

import pytest

from agent_relay import AgentRuntime, tool
from tests.support import calls_of, run_row

VALUES: list[Any] = [
    1.0,
    -0.5,
    2**70,
    -(2**80),
    1e300,
    0.1,
    {"price": 1.0, "qty": 2**65, "nested": [1.0, 2, [3.0, {"x": 1e-7}]]},
]


def _same(a: Any, b: Any) -> bool:
    """Equal, and of the same JSON types all the way down (``1 == 1.0`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:20] for v in VALUES])
def test_a_result_is_served_back_exactly_by_replay_and_resume(database_url: str, value: Any) -> None:
    runtime = AgentRuntime(database_url)
    ran: list[Any] = []
    try:

        @tool(runtime)
        def price() -> Any:  # no return annotation: the stored JSON comes back as it is
            ran.append(1)
            return value

        @tool(runtime)
        def charge(amount: Any) -> str:
            ran.append(amount)
            return "charged"

        def agent() -> Any:
            got = price()
            charge(amount=got)  # a deterministic agent passes the value on
            return got

        with runtime.agent_session(name="shop") as source:
            live = agent()
        with runtime.agent_session(name="shop", replay=True, replay_run_id=source.run_id):
            replayed = agent()  # diverges if the served value differs from the recorded one
        assert len(ran) == 2  # the source run's two bodies; the replay ran none
        with pytest.raises(RuntimeError), runtime.agent_session(name="shop") as failing:
            price()
            raise RuntimeError("stop after the first call")
        ran.clear()
        with runtime.agent_session(name="shop", resume_run_id=failing.run_id):
            resumed = price()  # served from the ledger's row
        rows = calls_of(runtime, source.run_id)
    finally:
        runtime.shutdown()
    assert _same(live, value) and _same(replayed, value) and _same(resumed, value)
    assert ran == []  # the resume ran no body
    assert _same(rows[0]["output"], value) and _same(rows[1]["arguments"], {"amount": value})


def test_an_annotated_big_integer_replays(database_url: str) -> None:
    runtime = AgentRuntime(database_url)
    try:

        @tool(runtime)
        def balance() -> int:
            return 2**70 + 1

        with runtime.agent_session(name="bank") as source:
            assert balance() == 2**70 + 1
        with runtime.agent_session(name="bank", replay=True, replay_run_id=source.run_id):
            served = balance()
    finally:
        runtime.shutdown()
    assert served == 2**70 + 1 and type(served) is int


def test_money_is_exact(database_url: str) -> None:
    runtime = AgentRuntime(database_url)
    try:

        @tool(runtime, cost=Decimal("0.1"))
        def lookup(n: int) -> int:
            return n

        with pytest.raises(RuntimeError), runtime.agent_session(name="tenth", budget_limit=5) as first:
            for n in range(10):
                lookup(n)
            raise RuntimeError("crash after ten calls")
        # resuming sums the calls' recorded costs: exactly ten tenths
        with runtime.agent_session(name="tenth", resume_run_id=first.run_id) as resumed:
            assert resumed.cost_usd == Decimal("1")
            lookup(10)
        run = run_row(runtime, first.run_id)
        rows = calls_of(runtime, first.run_id)
    finally:
        runtime.shutdown()
    assert run["cost_usd"] == Decimal("1.1") and run["budget_limit_usd"] == Decimal("5")
    assert sum((r["cost_usd"] for r in rows), Decimal(0)) == Decimal("1.1")
    assert {r["cost_usd"] for r in rows} == {Decimal("0.1")}


def test_sqlite_stores_the_exact_text(tmp_path: Any) -> None:
    """What a user's own SQL reads from a SQLite ledger: the JSON text as written and exact money."""
    path = tmp_path / "ledger.db"
    runtime = AgentRuntime(f"sqlite:///{path}")
    try:

        @tool(runtime, cost=Decimal("0.1"))
        def price(big: int) -> float:
            return 1.0

        with runtime.agent_session(name="shop") as session:
            price(2**70)
    finally:
        runtime.shutdown()
    with sqlite3.connect(path) as conn:
        stored = conn.execute(
            "SELECT arguments, typeof(arguments), output, typeof(output), cost_usd, typeof(cost_usd) "
            "FROM tool_calls WHERE run_id = ?",
            (session.run_id,),
        ).fetchone()
    assert stored == (f'{{"big":{2**70}}}', "text", "1.0", "text", "0.1", "text")
