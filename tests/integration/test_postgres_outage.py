"""PostgreSQL connections killed mid-run (``pg_terminate_backend``): no duplicate, the run goes on."""

from __future__ import annotations

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


# a PostgreSQL outage: SQLite has no server connections to kill
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_connections_killed_during_a_call_neither_duplicate_nor_stop_the_run(database_url: str) -> None:
    rt = AgentRuntime(database_url)
    ran: list[int] = []
    killed: list[int] = []

    @tool(rt)
    def ship(order: int) -> str:
        ran.append(order)
        if order == 2:
            killed.append(kill_other_backends(database_url))  # the runtime's pooled connections die here
        return f"shipped-{order}"

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
