"""Retention: delete old runs with their calls and attempts, in batches.

Each batch is its own short transaction (at most a few hundred runs, and a few thousand calls: the
foreign keys cascade to their calls and attempts), so processes recording calls meanwhile wait at most
one batch for the write lock on SQLite, and on PostgreSQL not at all (they write other rows). On SQLite
a prune pauses ``SQLITE_PAUSE_S`` between batches, longer than the longest sleep of SQLite's busy handler
(100 ms), so every writer that queued on a batch takes the lock before the next one: without it the
prune takes the lock back within a millisecond and a writer can starve past its busy timeout. On
PostgreSQL a prune first refreshes the planner's statistics of the three tables (``ANALYZE``, which
blocks no writer): on a ledger never analyzed (filled in one go, or new), the foreign keys' cascades
were planned as whole-table scans, and 100,000 runs took minutes instead of seconds. Runs are picked
oldest first by ``started_at`` alone, which its index serves in order. A run still running, or waiting
for a person (``in_doubt``, ``awaiting_approval``, ``compensation_failed``), is never deleted, whatever
its age: the status is checked again by the ``DELETE`` itself, so a run resumed meanwhile stays.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from ..states import RunStatus
from .connection import Database
from .derived import AWAITING_ACTION
from .schema import agent_runs, tool_call_attempts, tool_calls

SQLITE_PAUSE_S = 0.11
"""The pause between two batches of a prune on SQLite (see the module's docstring)."""
KEPT = (RunStatus.RUNNING, *AWAITING_ACTION)
"""Statuses of runs never pruned."""
PRUNABLE = tuple(s for s in RunStatus if s not in KEPT and s is not RunStatus.NEW)


@dataclasses.dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune deleted (or, ``dry_run``, would delete): runs, and their calls (their attempts
    went with them)."""

    runs: int
    calls: int
    before: dt.datetime
    dry_run: bool


def cutoff(older_than: dt.timedelta | dt.datetime, now: dt.datetime | None = None) -> dt.datetime:
    """The instant runs must have started before: ``older_than`` ago, or that instant (naive: UTC)."""
    if isinstance(older_than, dt.timedelta):
        if older_than < dt.timedelta(0):
            raise ValueError(f"older_than must not be negative, not {older_than}")
        return (now or dt.datetime.now(dt.UTC)) - older_than
    if isinstance(older_than, dt.datetime):
        return (
            older_than.replace(tzinfo=dt.UTC) if older_than.tzinfo is None else older_than.astimezone(dt.UTC)
        )
    raise TypeError(
        f"older_than must be a datetime.timedelta (runs older than that) or a datetime.datetime (runs "
        f"started before it), not {type(older_than).__name__}: {older_than!r}"
    )


def check_statuses(statuses: Iterable[str] | None) -> tuple[str, ...]:
    """The statuses a prune may delete: those given (each a prunable status), or all prunable ones."""
    if statuses is None:
        return tuple(PRUNABLE)
    chosen = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    for status in chosen:
        if status in KEPT:
            raise ValueError(
                f"runs of status {status!r} are never pruned (still running, or waiting for a person: "
                f"settle and resume, or compensate, them first); prunable: {', '.join(PRUNABLE)}"
            )
        if status not in PRUNABLE:
            raise ValueError(f"unknown run status {status!r}; prunable: {', '.join(PRUNABLE)}")
    if not chosen:
        raise ValueError(f"statuses is empty: name some of {', '.join(PRUNABLE)}, or pass None for all")
    return chosen


def prune(
    db: Database,
    older_than: dt.timedelta | dt.datetime,
    *,
    statuses: Iterable[str] | None = None,
    dry_run: bool = False,
    batch: int = 500,
    max_calls: int = 5_000,
    progress: Callable[[int], None] | None = None,
) -> Pruned:
    """Delete the runs that started before ``older_than`` (ago), of ``statuses`` (default: every status
    but running, in doubt, awaiting approval and compensation failed), with their calls and attempts: per
    transaction at most ``batch`` runs, and no more runs than keep their calls within ``max_calls`` (but
    at least one run); on SQLite with a pause between batches that lets waiting writers in;
    ``progress`` is told how many runs each batch deleted. ``dry_run``: count, delete none. Bad arguments
    raise ``ValueError``/``TypeError`` before anything is read."""
    before = cutoff(older_than)
    chosen = check_statuses(statuses)
    for name, value in (("batch", batch), ("max_calls", max_calls)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, not {value!r}")
    r = agent_runs.c
    matching = sa.and_(r.started_at < before, r.status.in_(chosen))
    if dry_run:
        runs = sa.select(sa.func.count()).select_from(agent_runs).where(matching)
        their_calls = sa.select(sa.func.count()).select_from(tool_calls.join(agent_runs)).where(matching)
        with db.guard("count the runs to prune"), db.engine.connect() as conn:
            return Pruned(
                conn.execute(runs).scalar_one(), conn.execute(their_calls).scalar_one(), before, True
            )
    their = sa.select(sa.func.count()).where(tool_calls.c.run_id == r.run_id).scalar_subquery()
    pick = sa.select(r.run_id, their).where(matching).order_by(r.started_at).limit(batch)
    total_runs = total_calls = 0
    if not db.is_sqlite:
        with db.guard("refresh the planner's statistics before a prune"), db.write_engine.begin() as conn:
            for table in (agent_runs, tool_calls, tool_call_attempts):
                conn.exec_driver_sql(f"ANALYZE {table.name}")
    while True:
        if total_runs and db.is_sqlite:
            time.sleep(SQLITE_PAUSE_S)
        with db.guard("prune old runs"), db.write_engine.begin() as conn:
            picked = conn.execute(pick).all()
            ids = _within(picked, max_calls)
            if not ids:
                break
            among = sa.and_(r.run_id.in_(ids), matching)  # (a run resumed since it was picked stays)
            count = sa.select(sa.func.count()).select_from(tool_calls.join(agent_runs)).where(among)
            calls = conn.execute(count).scalar_one()
            deleted = conn.execute(agent_runs.delete().where(among)).rowcount
        total_runs += deleted
        total_calls += calls
        if progress is not None:
            progress(deleted)
        if len(picked) < batch and len(ids) == len(picked):
            break
    return Pruned(total_runs, total_calls, before, False)


def _within(picked: Sequence[Any], max_calls: int) -> list[str]:
    """The first picked runs (run id, number of calls) whose calls add up to at most ``max_calls``; at
    least one, however many calls it has."""
    ids: list[str] = []
    calls = 0
    for run_id, count in picked:
        if ids and calls + count > max_calls:
            break
        ids.append(run_id)
        calls += count
    return ids
