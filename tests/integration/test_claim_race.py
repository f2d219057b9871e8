"""Workers racing to claim the same calls: exactly one holds each call, the others find its row — never a
unique-key error (PostgreSQL checked the wrong index and failed about 1 call in 4,000 with 8 workers)."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest

from agent_relay.errors import LedgerError
from agent_relay.keys import call_id
from agent_relay.ledger import LedgerStore
from agent_relay.ledger.records import CallRecord, Found, Held

WORKERS = 6
CALLS = 150


# SQLite serialises writers (BEGIN IMMEDIATE): the race needs a server
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_racing_claims_hold_each_call_once(database_url: str) -> None:
    stores = [LedgerStore(database_url) for _ in range(WORKERS)]
    stores[0].open()
    run_id = str(uuid.uuid4())
    stores[0].insert_run(run_id=run_id, name="race", status="running", mode="resume",
                         started_at=dt.datetime.now(dt.UTC))  # fmt: skip
    barrier = threading.Barrier(WORKERS)
    results: list[list[object]] = [[] for _ in range(WORKERS)]

    def worker(n: int) -> None:
        for i in range(CALLS):
            key = f"{i:064x}"
            record = CallRecord(
                run_id=run_id,
                call_id=call_id(run_id, "forward", key),
                seq=i,
                tool_name="charge",
                phase="forward",
                idempotency_key=key,
                arguments={"i": i},
                owner=f"worker-{n}",
                started_ns=time.time_ns(),
            )
            barrier.wait()
            try:
                results[n].append(stores[n].calls.claim(record))
            except LedgerError as err:
                results[n].append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(WORKERS)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for store in stores:
            store.dispose()
    errors = [r for per in results for r in per if isinstance(r, LedgerError)]
    assert not errors, errors[:3]
    for i in range(CALLS):
        outcomes = [results[n][i] for n in range(WORKERS)]
        assert sum(isinstance(o, Held) for o in outcomes) == 1
        assert sum(isinstance(o, Found) for o in outcomes) == WORKERS - 1
