"""Several processes writing one SQLite ledger still checkpoint it and let its WAL start over: the WAL does
not grow with the number of calls.

How small it stays depends on timing (SQLite's busy handlers poll, and a loaded machine schedules the
checkpoint threads late): typically 5-10 MiB here with restarts, 20-40 MiB with PASSIVE checkpoints only.
Never starting over, 9,000 calls would leave ~370 MiB. The bound below catches that, not the timing."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

WORKER = textwrap.dedent(
    """
    import sys
    from agent_relay.ledger import checkpoint

    checkpoint.CHECKPOINT_EVERY = 50  # checkpoint and restart sooner than in production, to test in seconds
    checkpoint.RESTART_FRAMES = int(sys.argv[3])

    from agent_relay import AgentRuntime, tool

    runtime = AgentRuntime(sys.argv[1])

    @tool(runtime)
    def send(to: str) -> str:
        return "sent"

    with runtime.agent_session(name=sys.argv[2]):
        for i in range(int(sys.argv[4])):
            send(f"{i}@example.com")
    runtime.shutdown()
    """
)


def _largest_wal(tmp_path: Path, restart_frames: int, calls: int = 3000) -> int:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    create = f"from agent_relay import AgentRuntime; AgentRuntime({url!r}).shutdown()"
    subprocess.run([sys.executable, "-c", create], check=True, timeout=60)
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, url, f"worker-{i}", str(restart_frames), str(calls)])
        for i in range(3)
    ]
    largest = 0
    deadline = time.monotonic() + 120
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # not there yet, or between checkpoints
            largest = max(largest, os.path.getsize(tmp_path / "ledger.db-wal"))
        time.sleep(0.02)
    assert [w.wait(timeout=60) for w in workers] == [0, 0, 0]
    return largest


def test_three_writer_processes_keep_the_wal_bounded(tmp_path: Path) -> None:
    assert _largest_wal(tmp_path, restart_frames=500) < 96 * 2**20
