"""Helpers shared by the tests: read the ledger with plain SQL, as a user would."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import sqlalchemy as sa

from agent_relay import AgentRuntime
from agent_relay.ledger import agent_runs, tool_calls


def calls_of(runtime: AgentRuntime, run_id: str) -> list[dict[str, Any]]:
    """The run's tool_calls rows, in seq order, read with plain SQL like a user would."""
    with runtime.ledger.engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(tool_calls).where(tool_calls.c.run_id == run_id).order_by(tool_calls.c.seq)
            )
            .mappings()
            .all()
        )
    return [dict(r) for r in rows]


def run_row(runtime: AgentRuntime, run_id: str) -> dict[str, Any]:
    with runtime.ledger.engine.connect() as conn:
        row = conn.execute(sa.select(agent_runs).where(agent_runs.c.run_id == run_id)).mappings().one()
    return dict(row)


def dead_owner() -> str:
    """host:pid of a process of this host that has exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return f"{socket.gethostname()}:{proc.pid}"
