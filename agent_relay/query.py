"""Read the ledger from Python: runs, their calls and every attempt, and what was spent.

``LedgerReader`` only reads: it has no method that writes, and it never creates a ledger (a SQLite file
that does not exist, a database without the ledger's tables, or one of another schema version is refused
with the way out). Results are frozen dataclasses; instants are aware UTC ``datetime``s and money is
``Decimal`` on both backends. It reads the views the schema ships (``call_attempts``, ``call_failures``,
``live_spend``, ``live_spend_daily``, ``runs_awaiting_action``), so Python and plain SQL give the same
answers::

    from agent_relay.query import LedgerReader

    with LedgerReader("sqlite:///agent_relay.db") as ledger:
        for run in ledger.runs(status="failed", since=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)):
            print(run.run_id, run.name, run.cost_usd)
        for row in ledger.spend(by="model"):       # live spend: replays copy their source's cost
            print(row.key, row.cost_usd, row.input_tokens)

Spend by tool, model or day counts what tool calls spent (usage recorded inside a tool, a tool's own
cost), every attempt of them; a run's ``cost_usd`` also counts usage recorded outside any tool.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa

from .errors import AmbiguousRunError, LedgerError, SchemaVersionError, UnknownRunError
from .ledger import derived
from .ledger.connection import DRIVER_ERRORS
from .ledger.schema import SCHEMA_VERSION, agent_runs, tool_calls
from .ledger.store import LedgerStore
from .states import Origin, RunMode

__all__ = ["Attempt", "Awaiting", "Call", "LedgerReader", "Run", "Spend"]

_T = TypeVar("_T")
SpendBy = Literal["run", "tool", "model", "day"]
_SPEND_KEYS: dict[str, str] = {"run": "run_id", "tool": "tool_name", "model": "model", "day": "day"}


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """An ``agent_runs`` row. ``calls``: how many calls it has, when the query counted them."""

    run_id: str
    name: str
    status: str
    mode: str
    replay_of: str | None
    fork_after: int | None
    parent_run_id: str | None
    input_payload: Any
    output: Any
    error_type: str | None
    error_message: str | None
    budget_limit_usd: Decimal | None
    cost_usd: Decimal
    cost_unknown: bool
    input_tokens: int
    output_tokens: int
    trace_id: str | None
    span_id: str | None
    owner: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    key_version: int | None = None  # how its idempotency keys were made (None: version 1)
    key_id: str | None = None  # the fingerprint of the secret of a keyed (version 2) run
    cancel_requested_at: dt.datetime | None = None  # when runtime.cancel asked it to stop
    cancel_reason: str | None = None
    unwind_with_parent: bool = True  # a failing parent run unwinds this (child) run too
    reserved_usd: Decimal = Decimal(0)  # a budgeted run's calls in flight: what they may cost at most
    calls: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a call (a ``call_attempts`` row). ``latest``: the call's current attempt, whose
    outcome its ``tool_calls`` row holds; earlier ones are ``failed``, or ``in_doubt`` when another worker
    took the call over from a process that was gone."""

    call_id: str
    run_id: str
    seq: int
    tool_name: str
    phase: str
    origin: str
    attempt: int
    latest: bool
    status: str
    error_type: str | None
    error_message: str | None
    cost_usd: Decimal | None
    cost_unknown: bool
    input_tokens: int | None
    output_tokens: int | None
    model: str | None
    trace_id: str | None
    span_id: str | None
    owner: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None


@dataclasses.dataclass(frozen=True, slots=True)
class Call:
    """A ``tool_calls`` row (``attempts``: how many tries it took), with ``history``: every attempt,
    oldest first, the last being this row's."""

    call_id: str
    run_id: str
    seq: int
    tool_name: str
    phase: str
    idempotency_key: str
    arguments: Any
    output: Any
    status: str
    error_type: str | None
    error_message: str | None
    cost_usd: Decimal | None
    cost_unknown: bool
    input_tokens: int | None
    output_tokens: int | None
    model: str | None
    trace_id: str | None
    span_id: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    attempts: int
    owner: str | None
    origin: str
    decided_by: str | None  # a call that required approval: who decided, when, why (status says which)
    decided_at: dt.datetime | None
    decision_note: str | None
    lease_expires_at: dt.datetime | None  # until when a pending row's owner holds it (renewed as it runs)
    history: tuple[Attempt, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class Spend:
    """What was spent under one ``key`` (a run id, tool, model or UTC date): exact cost (a lower bound
    when ``cost_unknown``: some usage had no price; ``None`` when nothing was priced), tokens, and how
    many attempts spent it."""

    key: str | dt.date | None
    cost_usd: Decimal | None
    cost_unknown: bool
    input_tokens: int
    output_tokens: int
    attempts: int


@dataclasses.dataclass(frozen=True, slots=True)
class Awaiting:
    """A run stopped for a person (a ``runs_awaiting_action`` row): ``in_doubt`` (settle the pending call,
    then resume) or ``compensation_failed`` (compensate again)."""

    run_id: str
    name: str
    status: str
    mode: str
    parent_run_id: str | None
    owner: str | None
    error_type: str | None
    error_message: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None
    pending_calls: int


def _utc(value: Any) -> Any:
    """Instants as aware UTC (SQLite's read back naive, in UTC)."""
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value


def _as(kind: type[_T], row: Any, **extra: Any) -> _T:
    mapping = row._mapping
    values = {f.name: _utc(mapping[f.name]) for f in dataclasses.fields(kind) if f.name in mapping}  # type: ignore[arg-type]
    return kind(**values, **extra)


def _instant(value: dt.datetime | None, what: str) -> dt.datetime | None:
    """A bound of a time range as aware UTC (a naive one is taken as UTC); a non-datetime is refused."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise TypeError(f"{what} must be a datetime.datetime, not {type(value).__name__}: {value!r}")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _positive(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be a positive int, not {value!r}")
    return value


def _one_or_many(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else [str(v) for v in value]


class LedgerReader:
    """Reads one ledger. Thread-safe; close it (or use it as a context manager) when done.

    ``ledger``: the ledger's SQLAlchemy URL, or an open ``LedgerStore`` (``runtime.ledger``), whose
    connections it then shares (closing the reader leaves the store open).
    """

    def __init__(self, ledger: str | sa.URL | LedgerStore) -> None:
        if isinstance(ledger, LedgerStore):
            self._store, self._owned = ledger, False
            return
        url = sa.make_url(ledger)
        refuse_missing_file(url, "point the reader at the ledger an AgentRuntime records to")
        store = LedgerStore(url)
        try:
            with store.db.guard("read the schema version"):
                found = store.read_version()
            if found is None:
                raise LedgerError(
                    f"no AgentRelay ledger at {store.database}: its tables are missing.",
                    database=store.database,
                )
            if found != SCHEMA_VERSION:
                raise SchemaVersionError(database=store.database, found=found, expected=SCHEMA_VERSION)
        except BaseException:
            store.dispose()
            raise
        self._store, self._owned = store, True

    def __enter__(self) -> LedgerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the reader's connections (a store it was given stays open)."""
        if self._owned:
            self._store.dispose()

    @property
    def database(self) -> str:
        """The ledger's URL, password masked."""
        return self._store.database

    def _all(self, action: str, stmt: Any, run_id: str | None = None) -> list[Any]:
        with self._store.reading(action, run_id) as conn:
            return list(conn.execute(stmt))

    # --- runs -----------------------------------------------------------------------------------------
    def resolve(self, prefix: str) -> str:
        """The one run whose id starts with ``prefix``: ``UnknownRunError`` if none, ``AmbiguousRunError``
        if several (unless one is ``prefix`` itself)."""
        if not prefix:
            raise UnknownRunError(prefix, self.database)
        r = agent_runs.c
        upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # the ids starting with prefix, as a key range
        stmt = sa.select(r.run_id).where(r.run_id >= prefix, r.run_id < upper).order_by(r.run_id).limit(3)
        found = [row.run_id for row in self._all("find a run", stmt)]
        if prefix in found:
            return prefix
        if not found:
            raise UnknownRunError(prefix, self.database)
        if len(found) > 1:
            raise AmbiguousRunError(prefix, found)
        return str(found[0])

    def run(self, run_id: str) -> Run:
        """Run ``run_id`` (its exact id), with its number of calls; ``UnknownRunError`` if there is none."""
        found = self._all("read a run", self._runs_query().where(agent_runs.c.run_id == run_id), run_id)
        if not found:
            raise UnknownRunError(run_id, self.database)
        return _as(Run, found[0])

    def runs(
        self,
        *,
        status: str | Iterable[str] | None = None,
        name: str | None = None,
        mode: str | Iterable[str] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        parent: str | None = None,
        limit: int | None = None,
    ) -> list[Run]:
        """Runs newest first, each with its number of calls: those with one of the statuses and modes
        given, of session ``name``, opened inside run ``parent``, started in ``[since, until)``."""
        r = agent_runs.c
        stmt = self._runs_query().order_by(r.started_at.desc(), r.run_id)
        statuses, modes = _one_or_many(status), _one_or_many(mode)
        if statuses is not None:
            stmt = stmt.where(r.status.in_(statuses))
        if modes is not None:
            stmt = stmt.where(r.mode.in_(modes))
        if name is not None:
            stmt = stmt.where(r.name == name)
        if parent is not None:
            stmt = stmt.where(r.parent_run_id == parent)
        if (start := _instant(since, "since")) is not None:
            stmt = stmt.where(r.started_at >= start)
        if (end := _instant(until, "until")) is not None:
            stmt = stmt.where(r.started_at < end)
        if limit is not None:
            stmt = stmt.limit(_positive(limit, "limit"))
        return [_as(Run, row) for row in self._all("list runs", stmt)]

    @staticmethod
    def _runs_query() -> sa.Select[Any]:
        calls = (
            sa.select(sa.func.count())
            .where(tool_calls.c.run_id == agent_runs.c.run_id)
            .scalar_subquery()
            .label("calls")
        )
        return sa.select(agent_runs, calls)

    def awaiting_action(self) -> list[Awaiting]:
        """Runs stopped for a person, oldest first (the ``runs_awaiting_action`` view)."""
        v = derived.runs_awaiting_action.c
        stmt = sa.select(derived.runs_awaiting_action).order_by(v.started_at, v.run_id)
        return [_as(Awaiting, row) for row in self._all("list runs awaiting action", stmt)]

    # --- calls and attempts -----------------------------------------------------------------------------
    def calls(self, run_id: str) -> list[Call]:
        """Run ``run_id``'s calls, both phases, in ``seq`` order, each with every attempt."""
        history: dict[str, list[Attempt]] = {}
        for attempt in self.attempts(run_id):
            history.setdefault(attempt.call_id, []).append(attempt)
        stmt = sa.select(tool_calls).where(tool_calls.c.run_id == run_id).order_by(tool_calls.c.seq)
        return [
            _as(Call, row, history=tuple(history.get(row.call_id, ())))
            for row in self._all("read the calls of a run", stmt, run_id)
        ]

    def attempts(self, run_id: str, *, call_id: str | None = None) -> list[Attempt]:
        """Every attempt of run ``run_id``'s calls (or of call ``call_id`` only), in the order they
        started (``call_attempts``)."""
        v = derived.call_attempts.c
        stmt = sa.select(derived.call_attempts).where(v.run_id == run_id)
        if call_id is not None:
            stmt = stmt.where(v.call_id == call_id)
        stmt = stmt.order_by(v.seq, v.attempt)
        return [_as(Attempt, row) for row in self._all("read the attempts of a run", stmt, run_id)]

    def failures(
        self,
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        tool: str | None = None,
        limit: int | None = None,
    ) -> list[Attempt]:
        """Failed attempts, newest first, also those a later attempt made good (``latest`` false); a
        replay's copies of recorded failures are left out (``call_failures``)."""
        v = derived.call_failures.c
        stmt = sa.select(derived.call_failures).order_by(v.started_at.desc(), v.call_id, v.attempt.desc())
        if tool is not None:
            stmt = stmt.where(v.tool_name == tool)
        if (start := _instant(since, "since")) is not None:
            stmt = stmt.where(v.started_at >= start)
        if (end := _instant(until, "until")) is not None:
            stmt = stmt.where(v.started_at < end)
        if limit is not None:
            stmt = stmt.limit(_positive(limit, "limit"))
        return [_as(Attempt, row) for row in self._all("list failed calls", stmt)]

    # --- spend ------------------------------------------------------------------------------------------
    def spend(
        self,
        by: SpendBy = "tool",
        *,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        live_only: bool = True,
    ) -> list[Spend]:
        """What tool calls spent, summed by run, tool, model or UTC day, over attempts started in
        ``[since, until)``, ordered by key. ``live_only`` (the default) counts only attempts whose body
        ran (``live_spend``): a replay's rows copy their source's cost, which was spent once."""
        if by not in _SPEND_KEYS:
            raise ValueError(f"spend(by=...) must be one of {', '.join(map(repr, _SPEND_KEYS))}, not {by!r}")
        source: Any = (
            derived.live_spend if live_only else derived.spend_rows(live_only=False).subquery("spend")
        )
        key = source.c[_SPEND_KEYS[by]]
        stmt = derived.spend_totals(source, key).order_by(key)
        if (start := _instant(since, "since")) is not None:
            stmt = stmt.where(source.c.started_at >= start)
        if (end := _instant(until, "until")) is not None:
            stmt = stmt.where(source.c.started_at < end)
        return [
            Spend(
                row[0],
                row.cost_usd,
                bool(row.cost_unknown),
                row.input_tokens,
                row.output_tokens,
                row.attempts,
            )
            for row in self._all("sum what was spent", stmt)
        ]

    def live_cost(self, run_id: str) -> Decimal:
        """What run ``run_id`` spent itself: its total less the cost its served calls copied from the run
        it replayed (a replay's is then what its live model calls cost, a fork's what its live part did)."""
        run = self.run(run_id)
        if run.mode == RunMode.LIVE:
            return run.cost_usd
        c = tool_calls.c
        stmt = sa.select(c.cost_usd).where(
            c.run_id == run_id, c.origin != Origin.LIVE, c.cost_usd.is_not(None)
        )
        copied = sum((row.cost_usd for row in self._all("read the calls of a run", stmt, run_id)), Decimal(0))
        return run.cost_usd - copied

    # --- bulk -------------------------------------------------------------------------------------------
    def iter_runs(
        self, *, since: dt.datetime | None = None, until: dt.datetime | None = None, batch: int = 1_000
    ) -> Iterator[tuple[Run, list[Call]]]:
        """Every run started in ``[since, until)``, oldest first, with its calls (no attempt history),
        streamed: one query whose rows are fetched ``batch`` at a time (a server-side cursor on
        PostgreSQL), so memory holds one run's calls at a time however large the ledger."""
        r = agent_runs.c
        stmt = (
            sa.select(agent_runs, tool_calls)
            .outerjoin(tool_calls, tool_calls.c.run_id == r.run_id)
            .order_by(r.started_at, r.run_id, tool_calls.c.seq)
            .set_label_style(sa.LABEL_STYLE_TABLENAME_PLUS_COL)
        )
        if (start := _instant(since, "since")) is not None:
            stmt = stmt.where(r.started_at >= start)
        if (end := _instant(until, "until")) is not None:
            stmt = stmt.where(r.started_at < end)
        batch = _positive(batch, "batch")
        run_fields = [f.name for f in dataclasses.fields(Run) if f.name != "calls"]
        call_fields = [f.name for f in dataclasses.fields(Call) if f.name != "history"]
        # Not under the store's lock, which serialises a process's SQLite writes: the caller may take its
        # time between runs, and other threads must go on recording meanwhile.
        try:
            with self._store.engine.connect() as conn:
                result = conn.execution_options(yield_per=batch).execute(stmt)
                yield from _grouped(result, run_fields, call_fields)
        except DRIVER_ERRORS as exc:
            raise self._store.db.error("export runs", exc) from exc

    def count_runs(self, *, since: dt.datetime | None = None, until: dt.datetime | None = None) -> int:
        """How many runs started in ``[since, until)``."""
        r = agent_runs.c
        stmt = sa.select(sa.func.count()).select_from(agent_runs)
        if (start := _instant(since, "since")) is not None:
            stmt = stmt.where(r.started_at >= start)
        if (end := _instant(until, "until")) is not None:
            stmt = stmt.where(r.started_at < end)
        return int(self._all("count runs", stmt)[0][0])


def _grouped(
    rows: Iterable[Any], run_fields: list[str], call_fields: list[str]
) -> Iterator[tuple[Run, list[Call]]]:
    """Rows of runs joined to their calls (ordered by run) as each run with its calls."""
    current: Run | None = None
    calls: list[Call] = []
    for row in rows:
        m = row._mapping
        if current is None or current.run_id != m["agent_runs_run_id"]:
            if current is not None:
                yield dataclasses.replace(current, calls=len(calls)), calls
            current = Run(**{f: _utc(m[f"agent_runs_{f}"]) for f in run_fields})
            calls = []
        if m["tool_calls_call_id"] is not None:
            calls.append(Call(**{f: _utc(m[f"tool_calls_{f}"]) for f in call_fields}))
    if current is not None:
        yield dataclasses.replace(current, calls=len(calls)), calls


def refuse_missing_file(url: sa.URL, hint: str) -> None:
    """Refuse a SQLite ledger file that does not exist, before anything opens it (SQLite would create an
    empty file): readers never make a ledger. ``hint`` says where the right one is named."""
    if (
        url.get_backend_name() == "sqlite"
        and url.database
        and url.database != ":memory:"
        and not url.query.get("mode")
        and not Path(url.database).exists()
    ):
        masked = url.render_as_string(hide_password=True)
        raise LedgerError(f"no ledger at {masked}: the file does not exist ({hint}).", database=masked)
