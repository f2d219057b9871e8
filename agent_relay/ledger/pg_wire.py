"""A call's hottest statements on PostgreSQL -- its claim, a strict call's outcome, an outcome call's row --
sent through libpq itself (psycopg's ``pgconn``), as text parameters the backend encodes once per call.

Why: through a psycopg cursor one of these statements cost about 90 µs of the client's CPU on a 2-core
machine (the query's conversion, a dumper per value, the wait loop in Python); libpq's blocking
``PQexecPrepared``, which psycopg runs with the GIL released, about 45. Two statements a call, on the
CPUs the server shares: the client's CPU is what limited a worker and a process's threads
(``bench/RESULTS_WORKERS.md``). Everything else (look-ups, take-overs, batches, budgets) stays on the
cursor: rare, or already shared by several calls.

Each connection prepares a statement the first time it runs it (the name is this module's, never one
psycopg gives its own); with ``prepare_threshold=None`` among the connect arguments (behind a pooler that
cannot keep prepared statements) each runs unprepared. A failed statement raises the psycopg exception the
cursor would have raised (``psycopg.errors.error_from_result``), and a lost connection shows as
``Lent.broken``, so the backend's retry on a fresh connection is the cursor path's.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Sequence

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGresult

from .pg_pool import Lent

_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
Params = Sequence[bytes | None]


class Statement:
    """One statement's text for libpq (``$1``, ``$2`` ... for psycopg's ``%s``) and its prepared name,
    made from the text (the same statement made again is the one a connection already prepared)."""

    __slots__ = ("name", "sql")

    def __init__(self, sql: str) -> None:
        if "%%" in sql or re.search(r"%[^s]", sql):
            raise ValueError(f"a wire statement takes plain %s placeholders only: {sql!r}")
        numbers = itertools.count(1)
        self.sql = re.sub("%s", lambda _: f"${next(numbers)}", sql).encode()
        self.name = f"agent_relay_{hashlib.sha256(self.sql).hexdigest()[:24]}".encode()


class Wire:
    """Runs ``Statement``s on lent connections: prepared once per connection (``prepare``), or not."""

    def __init__(self, *, prepare: bool) -> None:
        self.prepare = prepare

    def run(self, lent: Lent, statement: Statement, params: Params, *, prepare: bool = True) -> PGresult:
        """The statement's result (unprepared if not ``prepare``: a statement of a rare shape); raises the
        ``psycopg.Error`` its failure is (a lost connection's included: ``lent.broken`` then says so)."""
        conn = lent.conn.pgconn
        if not (prepare and self.prepare):
            return _checked(lent, conn.exec_params(statement.sql, params))
        if statement.name not in lent.prepared:
            _checked(lent, conn.prepare(statement.name, statement.sql))
            lent.prepared.add(statement.name)
        # (libpq takes None for NULL; psycopg's annotation leaves it out)
        return _checked(lent, conn.exec_prepared(statement.name, params))  # type: ignore[arg-type]


def _checked(lent: Lent, result: PGresult) -> PGresult:
    if result.status in _OK:
        return result
    if lent.broken or result.status != pq.ExecStatus.FATAL_ERROR:
        raise psycopg.OperationalError(
            f"the ledger's connection to PostgreSQL was lost: {result.error_message.decode(errors='replace')}"
        )
    raise psycopg.errors.error_from_result(result)


def returned(result: PGresult) -> bytes | None:
    """The first column of the first row a statement returned (``None``: no row)."""
    return result.get_value(0, 0) if result.ntuples else None


def count(result: PGresult) -> int:
    """How many rows the statement wrote."""
    return result.command_tuples or 0
