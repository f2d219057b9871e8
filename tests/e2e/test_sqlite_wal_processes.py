"""Several processes writing one SQLite ledger still checkpoint it and let its WAL start over: the WAL does
not grow with the number of calls.

Observed in the WAL file, not timed: its header gets new salts each time the WAL starts over (see
tests/integration/test_sqlite_wal.py). How often that happens depends on timing (SQLite's busy handlers
poll, and a loaded machine schedules the checkpoint threads late), so the test asserts that it happens,
repeatedly, while all three processes write; a WAL that never started over would hold every call (9,000
calls: ~370 MiB)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.integration.test_sqlite_wal import RESTART_DEADLINE_S, wal_salts

pytestmark = pytest.mark.e2e

# Each worker calls a tool until told to stop (a file appears), at most MOST_CALLS times.
WORKER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from agent_relay.ledger import checkpoint

    checkpoint.CHECKPOINT_EVERY = 50  # checkpoint and restart sooner than in production, to test in seconds
    checkpoint.RESTART_FRAMES = 500

    from agent_relay import AgentRuntime, tool

    url, name, stop, most = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    runtime = AgentRuntime(url)

    @tool(runtime)
    def send(to: str) -> str:
        return "sent"

    with runtime.agent_session(name=name):
        send("first@example.com")
        (stop.parent / f"{name}.writing").touch()
        for i in range(most):
            if stop.exists():
                break
            send(f"{i}@example.com")
    runtime.shutdown()
    """
)
MOST_CALLS = 3000
RESTARTS = 5


def test_the_wal_starts_over_while_three_processes_write(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    create = f"from agent_relay import AgentRuntime; AgentRuntime({url!r}).shutdown()"
    subprocess.run([sys.executable, "-c", create], check=True, timeout=60)
    stop, wal = tmp_path / "stop", tmp_path / "ledger.db-wal"
    names = [f"worker-{i}" for i in range(3)]
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, url, name, str(stop), str(MOST_CALLS)])
        for name in names
    ]
    seen: list[tuple[int, ...]] = []  # the WAL's headers, each new one a restart, while all three write
    try:
        deadline = time.monotonic() + RESTART_DEADLINE_S
        while len(seen) <= RESTARTS and time.monotonic() < deadline:
            if any(w.poll() is not None for w in workers):
                break  # one finished (its calls ran out) or failed: the WAL did not start over often enough
            salts = wal_salts(wal)
            # counted once every worker has written: then the WAL file stays until they are all done
            writing = all((tmp_path / f"{name}.writing").exists() for name in names)
            if writing and salts is not None and (not seen or salts != seen[-1]):
                seen.append(salts)
            time.sleep(0.005)
    finally:
        stop.touch()
        codes = [w.wait(timeout=120) for w in workers]
    assert codes == [0, 0, 0]
    assert len(seen) > RESTARTS, f"the WAL started over {len(seen) - 1} times while three processes wrote"
