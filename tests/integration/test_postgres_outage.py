"""PostgreSQL connections killed mid-run (``pg_terminate_backend``): no duplicate, the run goes on."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, tool
from tests.support import calls_of, run_row


def kill_other_backends(url: str) -> int:
    """Terminate every other connection to the ledger's database, as a failover or an admin would."""
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        killed = conn.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    engine.dispose()
    return int(killed)


def _shipping(
    url: str, kill_at: tuple[int, ...]
) -> tuple[AgentRuntime, Callable[[int], str], list[int], list[int]]:
    """A runtime and its ``ship`` tool, which kills the runtime's connections when it ships an order of
    ``kill_at``; the orders it ran, and how many connections each kill ended."""
    rt = AgentRuntime(url)
    ran: list[int] = []
    killed: list[int] = []

    @tool(rt)
    def ship(order: int) -> str:
        ran.append(order)
        if order in kill_at:
            killed.append(kill_other_backends(url))  # the runtime's pooled connections die here
        return f"shipped-{order}"

    return rt, ship, ran, killed


# a PostgreSQL outage: SQLite has no server connections to kill
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_connections_killed_during_a_call_neither_duplicate_nor_stop_the_run(database_url: str) -> None:
    rt, ship, ran, killed = _shipping(database_url, kill_at=(2,))
    with rt.agent_session(name="outage") as session:
        results = [ship(i) for i in range(5)]
        assert ship(2) == "shipped-2"  # still deduplicated after the outage
    assert killed and killed[0] >= 1
    assert ran == [0, 1, 2, 3, 4] and results == [f"shipped-{i}" for i in range(5)]
    assert [r["status"] for r in calls_of(rt, session.run_id)] == ["succeeded"] * 5
    assert run_row(rt, session.run_id)["status"] == "succeeded"

    kill_other_backends(database_url)  # between sessions too: the next one just works
    with rt.agent_session(name="after") as after:
        assert ship(9) == "shipped-9"
    assert run_row(rt, after.run_id)["status"] == "succeeded"
    rt.shutdown()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_connections_killed_while_threads_share_commits_neither_duplicate_nor_fail_a_call(
    database_url: str,
) -> None:
    """8 threads' claims and outcomes go through the group's writer threads in shared commits; every
    connection is killed mid-run, twice (a batch may be in flight): each call still runs once and is
    recorded once."""
    rt, ship, ran, killed = _shipping(database_url, kill_at=(40, 120))

    def share(first: int) -> None:
        for n in range(first, 160, 8):
            assert ship(n) == f"shipped-{n}"

    try:
        with rt.agent_session(name="threads-outage") as session:
            threads = [
                threading.Thread(target=contextvars.copy_context().run, args=(share, t)) for t in range(8)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        rows = calls_of(rt, session.run_id)
        run = run_row(rt, session.run_id)
        group = rt.ledger.calls.group
        assert group is not None
        shared = group.shared
    finally:
        rt.shutdown()
    assert len(killed) == 2 and all(k >= 1 for k in killed)
    assert sorted(ran) == list(range(160))  # each call ran once: none again after a lost commit
    assert sorted(r["output"] for r in rows) == sorted(f"shipped-{n}" for n in range(160))
    assert {r["status"] for r in rows} == {"succeeded"} and {r["attempts"] for r in rows} == {1}
    assert run["status"] == "succeeded"
    assert shared > 0  # the threads' writes did share commits
