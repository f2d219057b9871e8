"""``GroupCommit`` without a database: who writes what, and how each thread gets its own result when the
shared write fails. (Against PostgreSQL: ``tests/integration/test_pg_group_commit.py``.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from agent_relay.errors import LedgerError
from agent_relay.ledger.group import GroupCommit
from agent_relay.ledger.records import CallRecord, Claim, Held


def _record(n: int) -> CallRecord:
    return CallRecord(
        run_id="run", call_id=f"call-{n}", seq=n, tool_name="charge", phase="forward",
        idempotency_key=f"{n:064x}", arguments={"n": n}, owner="test-host:1",
    )  # fmt: skip


class Ledger:
    """Fake writes: the first one alone waits for ``go``; batches are recorded, and ``fail`` decides
    what a batch does."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.go = threading.Event()
        self.alone: list[str] = []
        self.batches: list[list[str]] = []
        self.fail = fail

    def claim_alone(self, record: CallRecord) -> Claim:
        self.alone.append(record.call_id)
        self.go.wait(60)
        return Held(1)

    def finish_alone(self, record: CallRecord) -> None:
        self.alone.append(record.call_id)

    def batch(
        self, starts: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | LedgerError], list[LedgerError | None]]:
        self.batches.append([r.call_id for r in [*starts, *finishes]])
        if self.fail is not None:
            raise self.fail
        return [Held(1) for _ in starts], [None for _ in finishes]

    @staticmethod
    def error(record: CallRecord, finish: bool, exc: BaseException) -> LedgerError:
        return LedgerError(f"could not write {record.call_id}: {exc}", database="fake", run_id=record.run_id)


def _run(ledger: Ledger, queued: int, leaders: int = 1) -> tuple[GroupCommit, dict[int, object]]:
    """Threads 0.. write alone (held at the server until the others have queued), the ``queued`` threads
    after them queue: claims, and one finish (the last)."""
    group = GroupCommit(
        ledger.claim_alone, ledger.finish_alone, ledger.batch, ledger.error, most_in_flight=leaders
    )
    results: dict[int, object] = {}

    def write(n: int) -> None:
        try:
            results[n] = group.finish(_record(n)) if n == leaders + queued - 1 else group.claim(_record(n))
        except LedgerError as err:
            results[n] = err

    deadline = time.monotonic() + 60
    first = [threading.Thread(target=write, args=(n,)) for n in range(leaders)]
    for n, t in enumerate(first):
        t.start()
        while len(ledger.alone) <= n:  # (thread n is writing)
            assert time.monotonic() < deadline
            time.sleep(0.001)
    others = [threading.Thread(target=write, args=(n,)) for n in range(leaders, leaders + queued)]
    for t in others:
        t.start()
    while group.waiting < queued:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    ledger.go.set()
    for t in [*first, *others]:
        t.join()
    return group, results


def test_the_writes_queued_meanwhile_go_in_one_batch_after_the_first() -> None:
    ledger = Ledger()
    group, results = _run(ledger, queued=4)
    assert ledger.alone == ["call-0"]
    assert [sorted(b) for b in ledger.batches] == [["call-1", "call-2", "call-3", "call-4"]]
    assert results == {0: Held(1), 1: Held(1), 2: Held(1), 3: Held(1), 4: None}
    assert group.shared == 4 and group.waiting == 0


def test_two_writes_go_at_once_and_the_next_ones_share_a_commit_after_them() -> None:
    """With two writes in flight (the default), a second thread writes alone too while the first waits
    for its commit; only the threads after those queue, and share one batch."""
    ledger = Ledger()
    group, results = _run(ledger, queued=3, leaders=2)
    assert ledger.alone == ["call-0", "call-1"]
    assert [sorted(b) for b in ledger.batches] == [["call-2", "call-3", "call-4"]]
    assert results == {0: Held(1), 1: Held(1), 2: Held(1), 3: Held(1), 4: None}
    assert group.shared == 3 and group.waiting == 0


def test_a_group_needs_room_for_one_write() -> None:
    ledger = Ledger()
    with pytest.raises(ValueError, match="at least one write in flight, not 0"):
        GroupCommit(ledger.claim_alone, ledger.finish_alone, ledger.batch, ledger.error, most_in_flight=0)


@pytest.mark.parametrize("failure", [RuntimeError("connection lost"), KeyboardInterrupt()])
def test_a_failed_shared_write_reaches_each_of_its_callers_as_its_own_ledger_error(
    failure: BaseException,
) -> None:
    ledger = Ledger(fail=failure)
    if isinstance(failure, KeyboardInterrupt):  # the thread writing the batch is interrupted: it goes on
        threading.excepthook, hook = (lambda args: None), threading.excepthook
    try:
        _, results = _run(ledger, queued=3)
    finally:
        if isinstance(failure, KeyboardInterrupt):
            threading.excepthook = hook
    errors = [results[n] for n in (1, 2, 3)]
    assert all(isinstance(e, LedgerError) for e in errors)
    assert len({id(e) for e in errors}) == 3  # one each: threads never raise one shared object
    assert [str(e) for e in errors] == [f"could not write call-{n}: {failure}" for n in (1, 2, 3)]


def test_a_thread_on_its_own_never_waits_and_never_batches() -> None:
    ledger = Ledger()
    ledger.go.set()
    group = GroupCommit(ledger.claim_alone, ledger.finish_alone, ledger.batch, ledger.error)
    for n in range(3):
        assert group.claim(_record(n)) == Held(1)
        group.finish(_record(n))
    assert ledger.alone == [f"call-{n}" for n in range(3) for _ in (0, 1)]
    assert ledger.batches == [] and group.shared == 0
