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
    """Fake writes: a claim alone and a batch wait for ``go`` (held at the server); ``started`` counts
    the writes begun; batches are recorded, and ``fail`` decides what a batch does."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.go = threading.Event()
        self.started = 0
        self.alone: list[str] = []
        self.batches: list[list[str]] = []
        self.fail = fail

    def claim_alone(self, record: CallRecord) -> Claim:
        self.alone.append(record.call_id)
        self.started += 1
        self.go.wait(60)
        return Held(1)

    def finish_alone(self, record: CallRecord) -> None:
        self.alone.append(record.call_id)

    def batch(
        self, starts: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | LedgerError], list[LedgerError | None]]:
        self.batches.append([r.call_id for r in [*starts, *finishes]])
        self.started += 1
        self.go.wait(60)
        if self.fail is not None:
            raise self.fail
        return [Held(1) for _ in starts], [None for _ in finishes]

    @staticmethod
    def error(record: CallRecord, finish: bool, exc: BaseException) -> LedgerError:
        return LedgerError(f"could not write {record.call_id}: {exc}", database="fake", run_id=record.run_id)


def _run(
    ledger: Ledger, queued: int, writers: int = 2, group: GroupCommit | None = None, start: int = 0
) -> tuple[GroupCommit, dict[int, object]]:
    """Record ``start`` is written alone and each of the group's ``writers`` writer threads takes one queued
    record (a batch of one), all held at the server until the ``queued`` records after them have queued:
    claims, and one finish (the last). ``group``: one made before (a new one if ``None``)."""
    if group is None:
        group = GroupCommit(
            ledger.claim_alone, ledger.finish_alone, ledger.batch, ledger.error, writers=writers
        )
    results: dict[int, object] = {}
    first, before = start + 1 + writers, ledger.started
    last = first + queued - 1

    def write(n: int) -> None:
        try:
            results[n] = group.finish(_record(n)) if n == last else group.claim(_record(n))
        except LedgerError as err:
            results[n] = err

    deadline = time.monotonic() + 60
    writing = [threading.Thread(target=write, args=(n,)) for n in range(start, first)]
    for n, t in enumerate(writing):
        t.start()
        while ledger.started <= before + n:  # (that record is being written)
            assert time.monotonic() < deadline
            time.sleep(0.001)
    others = [threading.Thread(target=write, args=(n,)) for n in range(first, last + 1)]
    for t in others:
        t.start()
    while group.waiting < queued:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    ledger.go.set()
    for t in [*writing, *others]:
        t.join()
    return group, results


@pytest.mark.parametrize("writers", [1, 2])
def test_records_queued_while_every_writer_thread_writes_share_its_next_commit(writers: int) -> None:
    """The first record goes at once, alone; a record queued while a writer thread is free is on its way
    at once too (a batch of one: it was encoded for one); the records queued while every writer thread
    writes go together in the next."""
    ledger = Ledger()
    group, results = _run(ledger, queued=4, writers=writers)
    threads = group.writer_threads
    group.close()
    first = 1 + writers
    assert ledger.alone == ["call-0"]
    assert [sorted(b) for b in ledger.batches] == [
        *([f"call-{n}"] for n in range(1, first)),
        [f"call-{n}" for n in range(first, first + 4)],
    ]
    assert results == {**{n: Held(1) for n in range(first + 3)}, first + 3: None}
    assert group.shared == 4 and group.waiting == 0
    assert len(threads) == writers and not any(t.is_alive() for t in threads)  # close ended them
    assert group.writer_threads == ()


def test_a_group_needs_a_writer_thread() -> None:
    ledger = Ledger()
    with pytest.raises(ValueError, match="at least one writer thread, not 0"):
        GroupCommit(ledger.claim_alone, ledger.finish_alone, ledger.batch, ledger.error, writers=0)


@pytest.mark.parametrize("failure", [RuntimeError("connection lost"), KeyboardInterrupt()])
def test_a_failed_shared_write_reaches_each_of_its_callers_as_its_own_ledger_error(
    failure: BaseException,
) -> None:
    ledger = Ledger(fail=failure)
    group, results = _run(ledger, queued=3)
    errors = [results[n] for n in (3, 4, 5)]
    assert all(isinstance(e, LedgerError) for e in errors)
    assert len({id(e) for e in errors}) == 3  # one each: threads never raise one shared object
    assert [str(e) for e in errors] == [f"could not write call-{n}: {failure}" for n in (3, 4, 5)]
    # the writer threads went on: records queued while both write still share the next commit
    ledger.fail, ledger.go = None, threading.Event()
    _, after = _run(ledger, queued=2, group=group, start=10)
    group.close()
    assert after == {10: Held(1), 11: Held(1), 12: Held(1), 13: Held(1), 14: None}
    assert sorted(ledger.batches[-1]) == ["call-13", "call-14"]


def test_a_thread_on_its_own_never_waits_and_never_batches() -> None:
    ledger = Ledger()
    ledger.go.set()
    group = GroupCommit(ledger.claim_alone, ledger.finish_alone, ledger.batch, ledger.error)
    for n in range(3):
        assert group.claim(_record(n)) == Held(1)
        group.finish(_record(n))
    assert ledger.alone == [f"call-{n}" for n in range(3) for _ in (0, 1)]
    assert ledger.batches == [] and group.shared == 0
    assert group.writer_threads == ()  # none was needed


def test_after_close_every_record_is_written_alone() -> None:
    ledger = Ledger()
    group, _ = _run(ledger, queued=2)
    threads = group.writer_threads
    group.close()
    ledger.go.clear()  # (the first claim after close is held at the server: the next comes meanwhile)
    first = threading.Thread(target=group.claim, args=(_record(10),))
    first.start()
    deadline = time.monotonic() + 60
    while "call-10" not in ledger.alone:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    group.finish(_record(11))  # a write is in flight, but no writer thread is left to queue for
    ledger.go.set()
    first.join()
    assert ledger.alone[-2:] == ["call-10", "call-11"] and len(ledger.batches) == 3  # (2 of one, 1 of 2)
    assert threads and not any(t.is_alive() for t in threads) and group.writer_threads == ()


def test_a_record_whose_preparation_fails_fails_alone_and_queues_nothing() -> None:
    """``prepare`` runs on the caller's thread before its record queues: what it raises reaches that
    caller only; nothing of it is queued, and the group goes on (records queued after it share a batch)."""
    ledger = Ledger()
    prepared: list[str] = []

    def prepare(record: CallRecord, finish: bool) -> None:
        if record.call_id == "call-1":
            raise LedgerError("could not encode call-1", database="fake", run_id=record.run_id)
        prepared.append(record.call_id)

    group = GroupCommit(ledger.claim_alone, ledger.finish_alone, ledger.batch, ledger.error, prepare=prepare)
    first = threading.Thread(target=group.claim, args=(_record(0),))
    first.start()  # written alone, held at the server: the records after it go the queued way
    deadline = time.monotonic() + 60
    while ledger.started < 1:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    with pytest.raises(LedgerError, match="could not encode call-1"):
        group.claim(_record(1))
    assert group.waiting == 0 and ledger.batches == []
    ledger.go.set()
    first.join()
    ledger.go = threading.Event()
    _, results = _run(ledger, queued=2, group=group, start=2)
    group.close()
    assert results == {2: Held(1), 3: Held(1), 4: Held(1), 5: Held(1), 6: None}
    assert prepared == [f"call-{n}" for n in (3, 4, 5, 6)]  # each queued record, on its own thread
