"""What the database derives from the ledger's tables by itself: the trigger that keeps a call's earlier
attempts, and the views shipped for plain SQL (and read by ``agent_relay.query``).

Both are made by the code that knows the tables: ``create`` when a ledger is made, and, since a view or
trigger names columns, dropped and made again by the last step of every upgrade (``replace``). The views
are SQLAlchemy Core selects compiled for each backend, so there is one definition of each. Money stays
exact in them: SQLite's ``sum`` adds binary floats, so ``money_sum`` adds amounts there as integers of
1e-10 dollars (the scale PostgreSQL's ``NUMERIC(20, 10)`` keeps) and gives back decimal text; exact for
amounts below $100,000 a row (SQLite reads each amount as a double on the way: 15 significant digits).

- ``call_attempts``: every attempt of every call, one row each (``latest``: the ``tool_calls`` row itself).
- ``call_failures``: failed attempts (``call_attempts`` rows, with the run's name), also those a later
  attempt made good (``latest`` false); replayed copies of a failure are left out.
- ``live_spend``: cost and tokens of each attempt whose body ran here (``origin = 'live'``): replays copy
  their source's cost, which was spent once.
- ``live_spend_daily``: ``live_spend`` summed by UTC day, tool and model.
- ``runs_awaiting_action``: runs stopped for a person (``awaiting_approval``: decide and resume;
  ``in_doubt``: settle and resume;
  ``compensation_failed``: compensate again), with how many of their calls are pending.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import FunctionElement

from ..states import AttemptStatus, CallStatus, Origin, RunStatus
from .schema import Money, agent_runs, tool_call_attempts, tool_calls

AWAITING_ACTION = (RunStatus.IN_DOUBT, RunStatus.AWAITING_APPROVAL, RunStatus.COMPENSATION_FAILED)
"""Run statuses that wait for a person; such runs are never pruned."""

views = sa.MetaData()
"""The views as tables to select from (never created as tables: ``create`` makes them views)."""


class money_sum(FunctionElement[Decimal]):
    """``sum`` of money, exact on both backends (see the module's docstring)."""

    type = Money()
    inherit_cache = True


class any_true(FunctionElement[bool]):
    """Whether any of a group's booleans is true."""

    type = sa.Boolean()
    inherit_cache = True


class utc_day(FunctionElement[dt.date]):
    """The UTC date of a timestamp."""

    type = sa.Date()
    inherit_cache = True


@compiles(money_sum)
def _money_sum(element: money_sum, compiler: Any, **kw: Any) -> str:
    return f"sum({compiler.process(element.clauses, **kw)})"


@compiles(money_sum, "sqlite")
def _money_sum_sqlite(element: money_sum, compiler: Any, **kw: Any) -> str:
    units = f"sum(CAST(round(({compiler.process(element.clauses, **kw)}) * 1e10) AS INTEGER))"
    return (
        f"CASE WHEN {units} IS NULL THEN NULL ELSE printf('%s%d.%010d', CASE WHEN {units} < 0 THEN '-' "
        f"ELSE '' END, abs({units}) / 10000000000, abs({units}) % 10000000000) END"
    )


@compiles(any_true)
def _any_true(element: any_true, compiler: Any, **kw: Any) -> str:
    return f"bool_or({compiler.process(element.clauses, **kw)})"


@compiles(any_true, "sqlite")
def _any_true_sqlite(element: any_true, compiler: Any, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(utc_day)
def _utc_day(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"CAST(timezone('UTC', {compiler.process(element.clauses, **kw)}) AS DATE)"


@compiles(utc_day, "sqlite")
def _utc_day_sqlite(element: utc_day, compiler: Any, **kw: Any) -> str:
    return f"date({compiler.process(element.clauses, **kw)})"  # (stored as UTC 'YYYY-MM-DD HH:MM:SS...')


def _view(name: str, select: sa.Select[Any] | sa.CompoundSelect[Any]) -> sa.Table:
    table = sa.Table(name, views, *(sa.Column(c.name, c.type) for c in select.selected_columns))
    table.info["definition"] = select
    return table


_a, _c, _r = tool_call_attempts.c, tool_calls.c, agent_runs.c
_OUTCOME = (
    "status", "error_type", "error_message", "cost_usd", "cost_unknown", "input_tokens", "output_tokens",
    "model", "trace_id", "span_id", "owner", "started_at", "ended_at",
)  # fmt: skip

call_attempts = _view(
    "call_attempts",
    sa.union_all(
        sa.select(
            _a.call_id, _a.run_id, _a.seq, _c.tool_name, _c.phase, _c.origin, _a.attempt,
            sa.false().label("latest"), *(_a[name] for name in _OUTCOME),
        ).join_from(tool_call_attempts, tool_calls, _a.call_id == _c.call_id),
        sa.select(
            _c.call_id, _c.run_id, _c.seq, _c.tool_name, _c.phase, _c.origin, _c.attempts.label("attempt"),
            sa.true().label("latest"), *(_c[name] for name in _OUTCOME),
        ),
    ),
)  # fmt: skip

_ca = call_attempts.c
call_failures = _view(
    "call_failures",
    sa.select(*_ca, _r.name.label("run_name"))
    .join_from(call_attempts, agent_runs, _ca.run_id == _r.run_id)
    .where(_ca.status == CallStatus.FAILED, _ca.origin != Origin.REPLAYED),
)


def spend_rows(*, live_only: bool) -> sa.Select[Any]:
    """Each attempt that spent something: its cost and tokens, where it ran and when (``day``: UTC)."""
    stmt = sa.select(
        _ca.run_id, _ca.call_id, _ca.attempt, _ca.tool_name, _ca.model, _ca.origin,
        utc_day(_ca.started_at).label("day"), _ca.started_at, _ca.cost_usd, _ca.cost_unknown,
        _ca.input_tokens, _ca.output_tokens,
    ).where(
        sa.or_(_ca.cost_usd.is_not(None), _ca.cost_unknown, _ca.input_tokens.is_not(None),
               _ca.output_tokens.is_not(None))
    )  # fmt: skip
    return stmt.where(_ca.origin == Origin.LIVE) if live_only else stmt


def spend_totals(source: Any, *keys: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """``source``'s spend rows (a view or a subquery of ``spend_rows``) summed by ``keys``."""
    s = source.c
    return sa.select(
        *keys,
        money_sum(s.cost_usd).label("cost_usd"),
        any_true(s.cost_unknown).label("cost_unknown"),
        sa.cast(sa.func.coalesce(sa.func.sum(s.input_tokens), 0), sa.BigInteger).label("input_tokens"),
        sa.cast(sa.func.coalesce(sa.func.sum(s.output_tokens), 0), sa.BigInteger).label("output_tokens"),
        sa.func.count().label("attempts"),
    ).group_by(*keys)


live_spend = _view("live_spend", spend_rows(live_only=True))
_ls = live_spend.c
live_spend_daily = _view("live_spend_daily", spend_totals(live_spend, _ls.day, _ls.tool_name, _ls.model))

_pending = (
    sa.select(sa.func.count())
    .where(_c.run_id == _r.run_id, _c.status == CallStatus.PENDING)
    .scalar_subquery()
    .label("pending_calls")
)
runs_awaiting_action = _view(
    "runs_awaiting_action",
    sa.select(
        _r.run_id, _r.name, _r.status, _r.mode, _r.parent_run_id, _r.owner, _r.error_type, _r.error_message,
        _r.started_at, _r.ended_at, _pending,
    ).where(_r.status.in_([str(s) for s in AWAITING_ACTION])),
)  # fmt: skip

VIEWS = (call_attempts, call_failures, live_spend, live_spend_daily, runs_awaiting_action)
"""In the order they are created (a view after those it selects from)."""

TRIGGER = "tool_calls_keep_attempt"
_KEPT = {c.name: f"OLD.{c.name}" for c in tool_call_attempts.c}
_KEPT["attempt"] = "OLD.attempts"
_KEPT["status"] = (
    f"CASE WHEN OLD.status = '{CallStatus.PENDING}' THEN '{AttemptStatus.IN_DOUBT}' ELSE OLD.status END"
)
_KEEP = f"INSERT INTO {tool_call_attempts.name} ({', '.join(_KEPT)}) VALUES ({', '.join(_KEPT.values())})"
# A new attempt over a row (``attempts`` counted up, by the retry's upsert or a take-over) keeps the old one.
_WHEN = "UPDATE OF attempts ON tool_calls FOR EACH ROW WHEN"
_TRIGGER_DDL = {
    "sqlite": [
        f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER {_WHEN} NEW.attempts > OLD.attempts BEGIN {_KEEP}; END"
    ],
    "postgresql": [
        f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN {_KEEP}; RETURN NULL; END $$",
        f"CREATE OR REPLACE TRIGGER {TRIGGER} AFTER {_WHEN} (NEW.attempts > OLD.attempts) "
        f"EXECUTE FUNCTION {TRIGGER}()",
    ],
}


def view_sql(view: sa.Table, conn: Connection) -> str:
    """The ``SELECT`` that defines ``view``, compiled for the connection's database."""
    select = view.info["definition"]
    return str(select.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))


def create(conn: Connection) -> None:
    """Make the trigger and the views (those already there are left as they are)."""
    dialect = conn.dialect.name
    for ddl in _TRIGGER_DDL["sqlite" if dialect == "sqlite" else "postgresql"]:
        conn.exec_driver_sql(ddl)
    for view in VIEWS:
        verb = "CREATE VIEW IF NOT EXISTS" if dialect == "sqlite" else "CREATE OR REPLACE VIEW"
        conn.exec_driver_sql(f"{verb} {view.name} AS {view_sql(view, conn)}")


def drop(conn: Connection) -> None:
    """Drop the views and the trigger, those that exist (a step may then change the tables under them)."""
    for view in reversed(VIEWS):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {view.name}")
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    else:
        conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER} ON tool_calls")
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {TRIGGER}()")


def replace(conn: Connection) -> None:
    """The current trigger and views in place of whatever version made before."""
    drop(conn)
    create(conn)
