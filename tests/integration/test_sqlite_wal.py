"""SQLite's WAL is checkpointed off the callers' commits, and still starts over: it does not grow with
the number of calls."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from agent_relay import AgentRuntime, LedgerOptions, tool
from agent_relay.ledger import checkpoint


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "agent-relay-checkpoint"]


def test_a_long_session_keeps_the_wal_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY", 50)
    runtime = AgentRuntime(f"sqlite:///{tmp_path / 'ledger.db'}")
    wal = tmp_path / "ledger.db-wal"
    sizes = []
    try:

        @tool(runtime)
        def send(to: str) -> str:
            return "sent"

        with runtime.agent_session(name="mailing"):
            for batch in range(4):
                for i in range(500):
                    send(f"{batch}-{i}@example.com")
                sizes.append(wal.stat().st_size)
        assert len(_checkpoint_threads()) == 1
    finally:
        runtime.shutdown()
    # ~10 WAL pages per call: never reset, 2,000 calls would leave ~80 MB
    assert max(sizes) < 4 * 2**20, sizes
    assert not _checkpoint_threads()  # stopped with the runtime


@pytest.mark.parametrize("synchronous", ["FULL", "EXTRA"])
def test_every_commit_synced_keeps_sqlite_checkpointing_inline(tmp_path: Path, synchronous: str) -> None:
    runtime = AgentRuntime(
        f"sqlite:///{tmp_path / 'ledger.db'}", ledger_options=LedgerOptions(sqlite_synchronous=synchronous)
    )
    try:

        @tool(runtime)
        def send(to: str) -> str:
            return "sent"

        with runtime.agent_session(name="mailing"):
            send("a@example.com")
        with runtime.ledger.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000  # SQLite's own
        assert not _checkpoint_threads()
    finally:
        runtime.shutdown()
