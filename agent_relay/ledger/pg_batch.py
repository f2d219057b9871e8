"""Several calls' writes on PostgreSQL in one statement: the claims one multi-row ``INSERT``, the strict
calls' outcomes one ``UPDATE ... FROM (VALUES ...)`` (each onto its row while still pending under its
owner, as one outcome's ``UPDATE`` does), the outcome calls' rows one multi-row ``INSERT``, each a
``WITH`` part of one autocommitted statement sent through libpq (``pg_wire``): one round trip, one
commit, and no transaction left open by a client that dies. A batch with an outcome that settles its
run's budget (a statement of its own), or with more rows of a kind than one statement takes, goes as
those statements in one pipeline between ``BEGIN`` and ``COMMIT`` on the cursor instead.

Why not a statement per record in a pipeline: each costs the client psycopg's per-statement machinery
and a message of its own, and the server a plan execution; a batch of four claims took about three times
the client CPU of one claim that way, and well under twice as one statement. The statements and their
conflict rules are the one-record statements' (``pg_calls``), written for several rows; each row's result
comes back by its key in ``RETURNING``.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from sqlalchemy.dialects import postgresql

from ..states import CallStatus, Durability
from . import columns as col
from . import pg_wire
from .pg_pool import Lent
from .records import CallRecord, Held
from .schema import tool_calls

ROWS_PER_STATEMENT = 256  # (a statement takes at most 65,535 parameters; a row has about 25)
_IDLE = psycopg.pq.TransactionStatus.IDLE

_claim_params = col.postgres_params(col.CLAIM)
_row_params = col.postgres_params(col.ROW)
_finish_params = col.postgres_params((*col.OUTCOME, "call_id", "owner"))
wire_claim_params = col.wire_params(col.CLAIM)
wire_row_params = col.wire_params(col.ROW)
wire_finish_params = col.wire_params((*col.OUTCOME, "call_id", "owner"))
PREPARED_ROWS = 8  # a batch of at most this many rows is prepared (a few shapes, kept by each connection)


def assign(names: tuple[str, ...], source: str) -> str:
    return ", ".join(f"{name} = {source.format(name)}" for name in names)


def retry(returning: str) -> str:
    """The conflict clause of a claim or a finished row: a new try over a failed row of the same key
    writes its attempt and outcome columns anew and counts the attempt; over any other row, nothing
    (no row returned)."""
    return (
        f" ON CONFLICT ({', '.join(col.KEY)}) DO UPDATE SET {assign(col.RETRY_SET, 'excluded.{}')}, "
        f"attempts = tool_calls.attempts + 1 WHERE tool_calls.status = '{CallStatus.FAILED}' "
        f"RETURNING {returning}"
    )


def _cast(name: str) -> str:
    """A placeholder typed as the column is, without its length or precision: the assignment to the
    column checks those, as it does for a single row (an explicit cast to ``VARCHAR(32)`` would cut a
    longer text silently)."""
    compiled: str = tool_calls.c[name].type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    kind = re.sub(r"\(.*?\)", "", compiled)
    return f"%s::{kind}"


def _rows(placeholders: str, rows: int) -> str:
    return ", ".join([f"({placeholders})"] * rows)


@functools.cache
def claims_sql(rows: int) -> str:
    names = col.CLAIM
    return (
        f"INSERT INTO tool_calls ({', '.join(names)}) VALUES {_rows(', '.join(['%s'] * len(names)), rows)}"
        + retry(f"{', '.join(col.KEY)}, attempts")
    )


@functools.cache
def outcomes_sql(rows: int) -> str:
    names = col.ROW
    return (
        f"INSERT INTO tool_calls ({', '.join(names)}) VALUES {_rows(', '.join(['%s'] * len(names)), rows)}"
        + retry(", ".join(col.KEY))
    )


@functools.cache
def finishes_sql(rows: int) -> str:
    """The strict outcomes' ``UPDATE``. The status each row must still have comes from the ``VALUES``
    list, not a constant: against the constant ``'pending'`` the planner scanned the status index (its
    statistics see few pending rows; under churn the index holds many dead entries for them) and
    filtered by call id, instead of looking each call id up in the primary key. (A one-row ``VALUES`` is
    folded into constants: one row is the one-record statement.)"""
    names = (*col.OUTCOME, "call_id", "owner")
    if rows == 1:
        return (
            f"UPDATE tool_calls SET {assign(col.OUTCOME, '%s')} WHERE call_id = %s "
            f"AND status = '{CallStatus.PENDING}' AND owner = %s RETURNING call_id"
        )
    values = _rows(", ".join(_cast(name) for name in names) + f", '{CallStatus.PENDING}'", rows)
    return (
        f"UPDATE tool_calls SET {assign(col.OUTCOME, 'v.{}')} "
        f"FROM (VALUES {values}) AS v ({', '.join(names)}, was) "
        "WHERE tool_calls.call_id = v.call_id AND tool_calls.status = v.was AND tool_calls.owner = v.owner "
        "RETURNING tool_calls.call_id"
    )


@functools.lru_cache(maxsize=256)
def combined(claims: int, finishes: int, wholes: int) -> pg_wire.Statement:
    """The one statement of a batch with these numbers of claims, strict outcomes and outcome rows: each
    kind a ``WITH`` part, and what each part wrote in one result (kind 0: a claim's key and attempts;
    1: an outcome's call id; 2: an outcome row's key)."""
    parts: list[str] = []
    selects: list[str] = []
    key = ", ".join(col.KEY)
    if claims:
        parts.append(f"c AS ({claims_sql(claims)})")
        selects.append(f"SELECT 0, {key}, attempts FROM c")
    if finishes:
        parts.append(f"f AS ({finishes_sql(finishes)})")
        selects.append("SELECT 1, call_id, NULL, NULL, NULL FROM f")
    if wholes:
        parts.append(f"w AS ({outcomes_sql(wholes)})")
        selects.append(f"SELECT 2, {key}, NULL FROM w")
    return pg_wire.Statement(f"WITH {', '.join(parts)} {' UNION ALL '.join(selects)}")


def _write_one(
    wire: pg_wire.Wire,
    lent: Lent,
    claims: Sequence[CallRecord],
    strict: Sequence[CallRecord],
    whole: Sequence[CallRecord],
) -> tuple[dict[tuple[str, str, str], int], set[Any]]:
    """The batch as ``combined``'s statement: the attempts of each claim written, by key; the call ids of
    the outcomes written and the keys of the outcome rows written."""
    params = [v for r in claims for v in (r.encoded or wire_claim_params(r))]
    params += [v for r in strict for v in (r.encoded or wire_finish_params(r))]
    params += [v for r in whole for v in (r.encoded or wire_row_params(r))]
    statement = combined(len(claims), len(strict), len(whole))
    rows = len(claims) + len(strict) + len(whole)
    result = wire.run(lent, statement, params, prepare=rows <= PREPARED_ROWS)
    held: dict[tuple[str, str, str], int] = {}
    done: set[Any] = set()
    for i in range(result.ntuples):
        kind, first = result.get_value(i, 0), _text(result.get_value(i, 1))
        if kind == b"1":
            done.add(first)
            continue
        row_key = (first, _text(result.get_value(i, 2)), _text(result.get_value(i, 3)))
        if kind == b"0":
            held[row_key] = int(result.get_value(i, 4) or 0)
        else:
            done.add(row_key)
    return held, done


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode()


def _key(record: CallRecord) -> tuple[str, str, str]:
    return (record.run_id, record.phase, record.idempotency_key)


Alone = Callable[[CallRecord], "tuple[str, tuple[Any, ...], bool] | None"]
"""For an outcome that needs a statement of its own (one that also settles its run's budget): that
statement, its parameters, and whether it says it wrote by returning a row (else by its rowcount)."""


def encode(record: CallRecord, finish: bool, alone: Alone) -> tuple[bytes | None, ...] | None:
    """The record's parameters in ``combined``'s statement, made ahead (``CallRecord.encoded``, which
    ``_write_one`` takes over its own); ``None`` for an outcome ``alone`` gives a statement of its own."""
    if not finish:
        return wire_claim_params(record)
    if alone(record) is not None:
        return None
    return wire_row_params(record) if record.durability is Durability.OUTCOME else wire_finish_params(record)


def write(
    wire: pg_wire.Wire,
    lent: Lent,
    claims: Sequence[CallRecord],
    finishes: Sequence[CallRecord],
    alone: Alone,
) -> tuple[list[Held | None], list[bool | Exception]]:
    """Write the batch in one transaction on ``lent`` (autocommit mode): each claim ``Held``, or ``None``
    where another row holds its key; whether each outcome found its row. Outcomes ``alone`` gives a
    statement of their own go as that statement, in the same transaction. A failed statement fails the
    whole batch (raised; nothing was written) and leaves the connection ready for the next caller."""
    singles = {id(r): one for r in finishes if (one := alone(r)) is not None}
    strict = [r for r in finishes if id(r) not in singles and r.durability is not Durability.OUTCOME]
    whole = [r for r in finishes if id(r) not in singles and r.durability is Durability.OUTCOME]
    if not singles and max(len(claims), len(strict), len(whole)) <= ROWS_PER_STATEMENT:
        held, done = _write_one(wire, lent, claims, strict, whole)
    else:
        held, done = _pipelined(lent.conn, claims, strict, whole, singles)
    claimed = [Held(held[_key(r)]) if _key(r) in held else None for r in claims]
    finished: list[bool | Exception] = [
        id(r) in done
        if id(r) in singles
        else (_key(r) in done if r.durability is Durability.OUTCOME else r.call_id in done)
        for r in finishes
    ]
    return claimed, finished


def _pipelined(
    conn: psycopg.Connection[Any],
    claims: Sequence[CallRecord],
    strict: Sequence[CallRecord],
    whole: Sequence[CallRecord],
    singles: dict[int, tuple[str, tuple[Any, ...], bool]],
) -> tuple[dict[tuple[str, str, str], int], set[Any]]:
    """The batch as a statement per kind (and per ``ROWS_PER_STATEMENT`` rows) and one per single, in one
    pipelined transaction on the cursor; what ``_write_one`` returns, with the singles written by id."""
    plan: list[tuple[str, Sequence[Any], str]] = []  # (statement, parameters, kind)
    for kind, records, statement, params_of in (
        ("claim", claims, claims_sql, _claim_params),
        ("finish", strict, finishes_sql, _finish_params),
        ("whole", whole, outcomes_sql, _row_params),
    ):
        for first in range(0, len(records), ROWS_PER_STATEMENT):
            chunk = records[first : first + ROWS_PER_STATEMENT]
            plan.append((statement(len(chunk)), [v for r in chunk for v in params_of(r)], kind))
    plan += [(sql, params, f"single {key}") for key, (sql, params, _) in singles.items()]
    if len(plan) == 1:
        sql, params, kind = plan[0]
        cursors = [(kind, conn.execute(sql, params))]
    else:
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                cursors = [(kind, conn.execute(sql, params)) for sql, params, kind in plan]
                conn.execute("COMMIT")
        except psycopg.Error:
            if not conn.broken and conn.info.transaction_status != _IDLE:
                with contextlib.suppress(psycopg.Error):
                    conn.execute("ROLLBACK")
            raise
    held: dict[tuple[str, str, str], int] = {}
    done: set[Any] = set()
    for kind, cur in cursors:
        if kind.startswith("single"):
            key = int(kind.split()[1])
            if (cur.fetchone() is not None) if singles[key][2] else cur.rowcount == 1:
                done.add(key)
            continue
        for row in cur.fetchall():
            if kind == "claim":
                held[row[0], row[1], row[2]] = row[3]
            else:
                done.add(row[0] if kind == "finish" else tuple(row))
    return held, done
