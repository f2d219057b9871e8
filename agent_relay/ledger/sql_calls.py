"""The SQLAlchemy writer backend (PostgreSQL, and any SQLite ledger a test opens through it): a tool
call's statements as SQLAlchemy Core, built once per database from the column lists in ``columns``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from ..states import CallStatus, Durability
from . import columns as col
from .budget_rows import amounts, reserve_sqlalchemy, settle_sqlalchemy, settles
from .connection import utc
from .records import CallRecord, Claim, Found, Held, Reserved
from .schema import tool_calls

_c = tool_calls.c


def _params(names: tuple[str, ...]) -> dict[str, Any]:
    return {name: sa.bindparam(name, type_=_c[name].type) for name in names}


def _with_retry(insert: Any) -> Any:
    """A new try over a failed row of the same key: its attempt and outcome columns anew, the attempt
    counted (the row and its ``call_id`` stay); over any other row, nothing (no row returned)."""
    return insert.on_conflict_do_update(
        index_elements=[_c[name] for name in col.KEY],
        set_={name: insert.excluded[name] for name in col.RETRY_SET} | {"attempts": _c.attempts + 1},
        where=_c.status == CallStatus.FAILED,
    ).returning(_c.attempts)


class SqlCalls:
    """The writer backend on a SQLAlchemy engine: each method its own transaction (``batch``: one for
    all). Thread-safe: each method checks a connection out of the pool."""

    instrumented = True  # driver instrumentations may see the engine: always suppress them

    def __init__(self, write_engine: Engine, read_engine: Engine) -> None:
        self._write = write_engine
        self._read = read_engine
        insert = sqlite.insert if write_engine.dialect.name == "sqlite" else postgresql.insert
        self._claim = _with_retry(insert(tool_calls).values(_params(col.CLAIM)))
        self._insert_outcome = _with_retry(insert(tool_calls).values(_params(col.ROW)))
        self._insert_row = tool_calls.insert()
        self._find = sa.select(*(_c[name] for name in col.FOUND)).where(
            *(_c[name] == sa.bindparam(f"b_{name}") for name in col.KEY)
        )
        self._finish = (
            tool_calls.update()
            .where(
                _c.call_id == sa.bindparam("b_call_id"),
                _c.status == CallStatus.PENDING,
                _c.owner == sa.bindparam("b_owner"),
            )
            .values(_params(col.OUTCOME))
        )
        self._take_over = (
            tool_calls.update()
            .where(
                _c.call_id == sa.bindparam("b_call_id"),
                _c.status == CallStatus.PENDING,
                _c.owner == sa.bindparam("b_owner"),
                sa.or_(
                    _c.lease_expires_at.is_(None),
                    _c.lease_expires_at < sa.bindparam("b_before", type_=_c.lease_expires_at.type),
                ),
            )
            .values(_params(col.ATTEMPT) | {"attempts": _c.attempts + 1})
            .returning(_c.attempts)
        )
        self._renew = (
            tool_calls.update()
            .where(
                _c.status == CallStatus.PENDING,
                _c.owner == sa.bindparam("b_owner"),
                _c.call_id.in_(sa.bindparam("b_ids", expanding=True)),
            )
            .values(lease_expires_at=sa.bindparam("b_until", type_=_c.lease_expires_at.type))
            .returning(_c.call_id)
        )
        self._claim_values = col.python_params(col.CLAIM)
        self._row_values = col.python_params(col.ROW)
        self._outcome_values = col.python_params(col.OUTCOME)
        self._attempt_values = col.python_params(col.ATTEMPT)

    def close(self) -> None:
        pass  # connections go back to the pool after each method

    def claim(self, record: CallRecord) -> Claim:
        try:
            with self._write.begin() as conn:
                return self._claim_on(conn, record)
        except sa.exc.IntegrityError as exc:
            if not _unique_violation(exc):
                raise
        # Another worker inserted the row between this insert's check and its own index entries: the
        # server arbitrates ON CONFLICT on one unique index only, and tool_calls has two (the primary key
        # call_id, and (run_id, phase, idempotency_key), both naming the call). That row is committed now,
        # so claiming again meets it.
        with self._write.begin() as conn:
            return self._claim_on(conn, record)

    def finish(self, record: CallRecord) -> bool:
        with self._write.begin() as conn:
            return self._finish_on(conn, record)

    def batch_if_free(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]] | None:
        """Never: a server's write is a round trip, made on the writer's thread (``None``)."""
        return None

    def encode(self, record: CallRecord, finish: bool) -> None:
        """Nothing ahead: SQLAlchemy binds the parameters of ``batch`` itself."""
        return None

    def batch(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]]:
        """All in one plain transaction; if a statement fails (rare: on PostgreSQL it aborts the whole
        transaction), the batch is written again with a savepoint around each statement, so only the
        failing ones fail. Savepoints cost two round trips per statement, which the first try saves."""
        try:
            return self._batch(claims, finishes, savepoints=False)
        except sa.exc.DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            return self._batch(claims, finishes, savepoints=True)

    def _batch(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord], *, savepoints: bool
    ) -> tuple[list[Claim | Exception], list[bool | Exception]]:
        results: list[Any] = []
        writes: list[tuple[Callable[[Connection, CallRecord], Any], CallRecord]] = [
            *((self._claim_on, r) for r in claims),
            *((self._finish_on, r) for r in finishes),
        ]
        with self._write.begin() as conn:
            for write, record in writes:
                if not savepoints:
                    results.append(write(conn, record))  # a failure aborts: tried again with savepoints
                    continue
                for last_try in (False, True):  # (a claim that lost a race on the other index: again)
                    savepoint = conn.begin_nested()
                    try:
                        results.append(write(conn, record))
                    except sa.exc.DBAPIError as exc:
                        savepoint.rollback()
                        racing = isinstance(exc, sa.exc.IntegrityError) and _unique_violation(exc)
                        if last_try or write != self._claim_on or not racing:
                            results.append(exc)
                            break
                        continue
                    savepoint.commit()
                    break
        return results[: len(claims)], results[len(claims) :]

    def insert_rows(self, records: Sequence[CallRecord]) -> None:
        with self._write.begin() as conn:
            conn.execute(self._insert_row, [self._row_values(r) for r in records])

    def find(self, record: CallRecord) -> Found | None:
        with self._read.connect() as conn:
            return self._find_on(conn, record)

    def take_over(self, record: CallRecord, owner: str | None, before_ns: int) -> int | None:
        values = self._attempt_values(record) | {
            "b_call_id": record.call_id,
            "b_owner": owner,
            "b_before": utc(before_ns),
        }
        with self._write.begin() as conn:
            attempts = conn.execute(self._take_over, values).scalar()
        return None if attempts is None else int(attempts)

    def renew(self, owner: str, call_ids: Sequence[str], until_ns: int) -> set[str]:
        values = {"b_owner": owner, "b_ids": list(call_ids), "b_until": utc(until_ns)}
        with self._write.begin() as conn:
            return set(conn.execute(self._renew, values).scalars())

    def reserve(self, run_id: str, amount: Decimal) -> Reserved:
        with self._write.begin() as conn:
            return reserve_sqlalchemy(conn, run_id, amount)

    def settle_run(self, run_id: str, cost: Decimal, hold: Decimal) -> None:
        with self._write.begin() as conn:
            settle_sqlalchemy(conn, run_id, cost, hold)

    def _find_on(self, conn: Connection, record: CallRecord) -> Found | None:
        key = {f"b_{name}": getattr(record, name) for name in col.KEY}
        row = conn.execute(self._find, key).first()
        return None if row is None else col.found(row)

    def _claim_on(self, conn: Connection, record: CallRecord) -> Claim:
        attempts = conn.execute(self._claim, self._claim_values(record)).scalar()
        if attempts is not None:
            return Held(attempts)
        found = self._find_on(conn, record)
        assert found is not None  # the conflicting row: it was there inside the same transaction
        return found

    def _finish_on(self, conn: Connection, record: CallRecord) -> bool:
        if record.durability is Durability.OUTCOME:
            written = conn.execute(self._insert_outcome, self._row_values(record)).scalar() is not None
        else:
            values = self._outcome_values(record) | {"b_call_id": record.call_id, "b_owner": record.owner}
            written = conn.execute(self._finish, values).rowcount == 1
        if written and record.budget_hold is not None and settles(record):
            settle_sqlalchemy(conn, *amounts(record))
        return written


def _unique_violation(exc: sa.exc.IntegrityError) -> bool:
    """Whether ``exc`` is a unique violation (SQLSTATE 23505), not another integrity error."""
    return getattr(exc.orig, "sqlstate", None) == "23505"
