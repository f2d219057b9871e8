"""A budgeted run's running totals on its ``agent_runs`` row, shared by every worker of the run:
``cost_usd`` (what its finished calls cost) and ``reserved_usd`` (what its calls in flight may cost at most).

A reservation is taken before a call runs, and only if spent + reserved + it stays within the run's
``budget_limit_usd`` — atomically: on PostgreSQL one conditional ``UPDATE``, on SQLite the check inside a
``BEGIN IMMEDIATE`` transaction, on which every writer of the file queues. The write of the call's outcome
settles it in that write's own transaction: the reservation released, the cost added. Each writer backend
runs these statements its own way (plain ``sqlite3``, psycopg, SQLAlchemy); they are all here. Money stays
exact: PostgreSQL adds NUMERICs; SQLite's decimal text is added in Python.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .records import CallRecord, Reserved
from .schema import agent_runs, money_text

_r = agent_runs.c
_ZERO = Decimal(0)


def settles(record: CallRecord) -> bool:
    """Whether writing ``record``'s outcome must settle its run's budget totals too."""
    hold = record.budget_hold
    return hold is not None and (hold != 0 or bool(record.cost_usd))


def _within(spent: Decimal, reserved: Decimal, limit: Decimal | None, amount: Decimal) -> bool:
    """The rule a reservation is granted by (the PostgreSQL statements say it in SQL)."""
    return limit is not None and spent + reserved + amount <= limit


def amounts(record: CallRecord) -> tuple[str, Decimal, Decimal]:
    """(its run, the cost to add, the reservation to release): what settling ``record`` writes."""
    return record.run_id, record.cost_usd or _ZERO, record.budget_hold or _ZERO


# --- plain sqlite3, inside the caller's BEGIN IMMEDIATE transaction ----------------------------------------
_SELECT_SQLITE = "SELECT cost_usd, reserved_usd, budget_limit_usd FROM agent_runs WHERE run_id = ?"
_SETTLE_SQLITE = "UPDATE agent_runs SET cost_usd = ?, reserved_usd = ? WHERE run_id = ?"
_RESERVE_SQLITE = "UPDATE agent_runs SET reserved_usd = ? WHERE run_id = ?"


def _money(value: Any) -> Decimal:
    return Decimal(str(value))


def settle_sqlite(conn: sqlite3.Connection, run_id: str, cost: Decimal, hold: Decimal) -> None:
    """Add ``cost`` to run ``run_id``'s cost and release ``hold`` of its reservations."""
    row = conn.execute(_SELECT_SQLITE, (run_id,)).fetchone()
    if row is not None:
        spent, reserved = _money(row[0]) + cost, _money(row[1]) - hold
        conn.execute(_SETTLE_SQLITE, (money_text(spent), money_text(reserved), run_id))


def reserve_sqlite(conn: sqlite3.Connection, run_id: str, amount: Decimal) -> Reserved:
    """Reserve ``amount`` on run ``run_id`` if it stays within the run's limit."""
    row = conn.execute(_SELECT_SQLITE, (run_id,)).fetchone()
    if row is None:
        return reserved(False, None)
    spent, others = _money(row[0]), _money(row[1])
    limit = None if row[2] is None else _money(row[2])
    if not _within(spent, others, limit, amount):
        return Reserved(False, spent, others, limit)
    conn.execute(_RESERVE_SQLITE, (money_text(others + amount), run_id))
    return Reserved(True, spent, others, limit)


# --- psycopg: one statement each ------------------------------------------------------------------------
SETTLE_PG = (
    "UPDATE agent_runs SET cost_usd = cost_usd + %s, reserved_usd = reserved_usd - %s WHERE run_id = %s"
)
RESERVE_PG = (
    "UPDATE agent_runs SET reserved_usd = reserved_usd + %s WHERE run_id = %s "
    "AND budget_limit_usd IS NOT NULL AND cost_usd + reserved_usd + %s <= budget_limit_usd "
    "RETURNING cost_usd, reserved_usd - %s, budget_limit_usd"
)
SELECT_PG = "SELECT cost_usd, reserved_usd, budget_limit_usd FROM agent_runs WHERE run_id = %s"


def settle_statement(write: str) -> str:
    """``write`` (a statement with ``RETURNING``) and the settle as one statement: the settle happens only
    if ``write`` wrote its row, and a row comes back only then. Its parameters: ``write``'s, then
    ``settle_params(record)``."""
    return f"WITH done AS ({write}) {SETTLE_PG} AND EXISTS (SELECT 1 FROM done) RETURNING 1"


def settle_params(record: CallRecord) -> tuple[Any, ...]:
    run_id, cost, hold = amounts(record)
    return cost, hold, run_id


def reserved(granted: bool, row: Any) -> Reserved:
    """A ``Reserved`` from a row (cost, others' reservations, limit); none: the run has no row."""
    if row is None:
        return Reserved(False, _ZERO, _ZERO, None)
    return Reserved(granted, row[0], row[1], row[2])


# --- SQLAlchemy, inside the caller's transaction (either database) --------------------------------------
def settle_sqlalchemy(conn: Connection, run_id: str, cost: Decimal, hold: Decimal) -> None:
    """``settle_sqlite`` on a SQLAlchemy connection."""
    where = _r.run_id == run_id
    if conn.dialect.name != "sqlite":
        values = {"cost_usd": _r.cost_usd + cost, "reserved_usd": _r.reserved_usd - hold}
        conn.execute(agent_runs.update().where(where).values(values))
        return
    row = conn.execute(sa.select(_r.cost_usd, _r.reserved_usd).where(where)).first()
    if row is not None:
        values = {"cost_usd": row.cost_usd + cost, "reserved_usd": row.reserved_usd - hold}
        conn.execute(agent_runs.update().where(where).values(values))


def reserve_sqlalchemy(conn: Connection, run_id: str, amount: Decimal) -> Reserved:
    """``reserve_sqlite`` on a SQLAlchemy connection: on PostgreSQL one conditional ``UPDATE``."""
    where = _r.run_id == run_id
    current = sa.select(_r.cost_usd, _r.reserved_usd, _r.budget_limit_usd).where(where)
    if conn.dialect.name != "sqlite":
        granted = conn.execute(
            agent_runs.update()
            .where(
                where,
                _r.budget_limit_usd.is_not(None),
                _r.cost_usd + _r.reserved_usd + amount <= _r.budget_limit_usd,
            )
            .values(reserved_usd=_r.reserved_usd + amount)
            .returning(_r.cost_usd, _r.reserved_usd - amount, _r.budget_limit_usd)
        ).first()
        return (
            reserved(True, granted) if granted is not None else reserved(False, conn.execute(current).first())
        )
    row = conn.execute(current).first()
    if row is None:
        return reserved(False, None)
    spent, others, limit = row
    if not _within(spent, others, limit, amount):
        return Reserved(False, spent, others, limit)
    conn.execute(agent_runs.update().where(where).values(reserved_usd=others + amount))
    return Reserved(True, spent, others, limit)
