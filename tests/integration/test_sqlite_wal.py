"""SQLite's WAL is checkpointed off the callers' commits, and still starts over: it does not grow with
the number of calls.

The checkpointer's work is observed in the WAL file itself, not timed. A WAL's 32-byte header carries two
salts, and every frame repeats them; when SQLite starts a WAL over (every frame copied into the database, no
reader left on it), the next commit writes its frames from the start of the file again, under a header with
new salts. New salts in the header are that restart: the file's old frames are reused, not appended to.
"""

from __future__ import annotations

import itertools
import struct
import threading
import time
from pathlib import Path

import pytest

from agent_relay import AgentRuntime, LedgerOptions, tool
from agent_relay.ledger import checkpoint

WAL_HEADER = 32
FRAME_HEADER = 24
# A call writes about 10 WAL frames (pages) over its two commits; this leaves room for B-tree splits.
FRAMES_PER_CALL = 20
# Only a checkpointer that never gets to run takes this long to let the WAL start over: a deadline, not a
# speed (the checkpointer wakes every CHECKPOINT_EVERY commits, and once a second while commits come).
RESTART_DEADLINE_S = 60.0


def _wal_header(wal: Path) -> tuple[int, ...] | None:
    """A SQLite WAL file's header fields (magic, version, page size, checkpoint sequence, salt 1, salt 2),
    or None when there is no WAL yet or its header is being written (its checksum does not match)."""
    try:
        with wal.open("rb") as f:
            header = f.read(WAL_HEADER)
    except FileNotFoundError:
        return None
    if len(header) < WAL_HEADER:
        return None
    *fields, check1, check2 = struct.unpack(">8I", header)
    if fields[0] not in (0x377F0682, 0x377F0683):
        return None
    # SQLite's checksum over the first 24 bytes, in the byte order the magic's last bit names
    words = struct.unpack((">" if fields[0] & 1 else "<") + "6I", header[:24])
    s0 = s1 = 0
    for x0, x1 in zip(words[::2], words[1::2], strict=True):
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return tuple(fields) if (s0, s1) == (check1, check2) else None


def wal_salts(wal: Path) -> tuple[int, ...] | None:
    """The salts of a SQLite WAL file's header: new ones each time the WAL starts over (None: no WAL)."""
    header = _wal_header(wal)
    return None if header is None else header[4:6]


def _checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "agent-relay-checkpoint"]


def test_a_long_session_starts_the_wal_over_again_and_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpoint, "CHECKPOINT_EVERY", 50)
    runtime = AgentRuntime(f"sqlite:///{tmp_path / 'ledger.db'}")
    wal = tmp_path / "ledger.db-wal"
    rounds, per_round = 20, 100
    calls_per_round = []  # the round's calls, and those made while waiting for the WAL to start over
    try:

        @tool(runtime)
        def send(to: str) -> str:
            return "sent"

        with runtime.agent_session(name="mailing"):
            send("first@example.com")
            for batch in range(rounds):
                before = wal_salts(wal)
                assert before is not None
                for i in range(per_round):
                    send(f"{batch}-{i}@example.com")
                calls = per_round
                # Connections run with wal_autocheckpoint=0: only the checkpointer lets the WAL start over.
                # It runs on its own thread, so wait for it (the next commit then writes the new header).
                deadline = time.monotonic() + RESTART_DEADLINE_S
                while wal_salts(wal) in (before, None) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    send(f"{batch}-{calls}@example.com")
                    calls += 1
                assert wal_salts(wal) not in (before, None), f"the WAL never started over in round {batch}"
                calls_per_round.append(calls)
            assert len(_checkpoint_threads()) == 1
            header, size = _wal_header(wal), wal.stat().st_size
    finally:
        runtime.shutdown()
    assert not _checkpoint_threads()  # stopped with the runtime
    # The WAL started over in every round, so no stretch of frames spans more than two rounds' calls: the
    # file is that long at most, where 2,000 calls appended without a restart would take ~20,000 frames.
    assert header is not None
    most_calls = max(a + b for a, b in itertools.pairwise(calls_per_round)) + 1
    bound = WAL_HEADER + most_calls * FRAMES_PER_CALL * (FRAME_HEADER + header[2])  # [2]: the page size
    assert size <= bound, (size, bound, calls_per_round)


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
