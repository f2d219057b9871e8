"""``LedgerStore``: the ledger of one database — its schema, its runs, and reads of its calls.

Thread-safe. Every write is its own committed transaction, so a row the store has written survives the
process being killed the instant after. Failures surface as ``LedgerError`` naming the ledger (password
masked) and what to do; they are never swallowed. Rows of ``tool_calls`` are written by ``store.calls``
(a ``CallWriter``) and by nothing else.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine, Row

from ..encoding import encode
from ..errors import (
    ConfigurationError,
    LedgerError,
    OutputEncodingError,
    SchemaVersionError,
    SessionStateError,
    UnknownRunError,
)
from ..states import CallStatus, Origin, Phase, RunStatus
from . import derived, migrations, retention, secrets
from .checkpoint import Checkpointer
from .connection import Database, LedgerOptions
from .key_claims import KeyClaims
from .schema import SCHEMA_VERSION, agent_runs, metadata, schema_info, tool_calls
from .sql_calls import SqlCalls
from .sqlite_calls import SqliteCalls
from .statements import CallStatements
from .writer import CallWriter


class LedgerStore:
    """The ``agent_runs`` / ``tool_calls`` ledger behind one SQLAlchemy engine."""

    def __init__(self, url: str | sa.URL, options: LedgerOptions | None = None) -> None:
        self.db = Database(url, options)
        self._checkpointer = (
            Checkpointer(self.db.engine, self.db.lock) if self.db.background_checkpoints else None
        )
        self.calls = CallWriter(self.db, self._calls_backend(), lease_s=self.db.options.lease_s)
        self.keys = KeyClaims(self.db)  # global idempotency keys (tool_call_keys): written here only

    def _calls_backend(self) -> CallStatements:
        """The tool calls' statements: plain ``sqlite3``, psycopg on its own pool for PostgreSQL through
        psycopg (unless the engine's connections come from a ``creator`` of the user's), else SQLAlchemy."""
        if self.db.is_sqlite:
            return SqliteCalls(
                self.db.engine,
                self._checkpointer,
                in_memory=self.db.in_memory,
            )
        options = self.db.options.engine_options
        if self.db.url.get_driver_name() == "psycopg" and "creator" not in options:
            from .pg_calls import PgCalls  # (imports psycopg: only for a ledger that uses it)

            return PgCalls.for_engine(self.db.engine, options)
        return SqlCalls(self.db.write_engine, self.db.engine)

    @property
    def database(self) -> str:
        """The ledger's URL, password masked."""
        return self.db.name

    @property
    def engine(self) -> Engine:
        return self.db.engine

    @property
    def options(self) -> LedgerOptions:
        return self.db.options

    @property
    def is_sqlite(self) -> bool:
        return self.db.is_sqlite

    @contextlib.contextmanager
    def reading(self, action: str, run_id: str | None = None) -> Iterator[sa.Connection]:
        """A connection for reads, errors as ``LedgerError`` saying ``could not <action>``."""
        with self.db.guard(action, run_id=run_id), self.db.engine.connect() as conn:
            yield conn

    # --- schema ---------------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the tables on an empty database, or check (and with ``upgrade``, upgrade) its version."""
        with self.db.guard("read the schema version"):
            found = self.read_version()
            if found is None:
                with self.db.write_engine.begin() as conn:
                    metadata.create_all(conn)
                    derived.create(conn)
                    if conn.execute(sa.select(schema_info.c.version)).first() is None:
                        conn.execute(
                            schema_info.insert().values(
                                id=1, version=SCHEMA_VERSION, created_at=dt.datetime.now(dt.UTC)
                            )
                        )
                    secrets.ensure_secret(conn)
                found = self.read_version()
        if found is not None and found < SCHEMA_VERSION and self.options.upgrade:
            self.upgrade()
            return
        if found != SCHEMA_VERSION:
            raise SchemaVersionError(database=self.database, found=found or 0, expected=SCHEMA_VERSION)

    def upgrade(self, progress: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Upgrade the ledger to this version's schema, one recorded step at a time; (from, to).
        ``progress`` is told each version reached.

        Safe to run concurrently (upgraders serialise on the version row) and twice (a no-op). A ledger
        of a newer version is refused with ``SchemaVersionError``.
        """
        with self.db.guard("upgrade the schema"):
            start = self.read_version()
            if start is None:
                raise LedgerError(
                    f"the database at {self.database} holds no AgentRelay ledger to upgrade; "
                    f"opening it with an AgentRuntime creates one.",
                    database=self.database,
                )
            if start > SCHEMA_VERSION:
                raise SchemaVersionError(database=self.database, found=start, expected=SCHEMA_VERSION)
            for version in range(start + 1, SCHEMA_VERSION + 1):
                with self.db.write_engine.begin() as conn:
                    locked = sa.select(schema_info.c.version).where(schema_info.c.id == 1)
                    if not self.is_sqlite:
                        locked = locked.with_for_update()
                    if conn.execute(locked).scalar_one() >= version:
                        continue  # another upgrader got there first
                    derived.drop(conn)  # (views and triggers name the columns a step may change)
                    migrations.STEPS[version](conn)
                    if version == SCHEMA_VERSION:
                        derived.create(conn)
                    conn.execute(schema_info.update().where(schema_info.c.id == 1).values(version=version))
                if progress is not None:
                    progress(version)
        return start, SCHEMA_VERSION

    def read_version(self) -> int | None:
        """The ledger's recorded schema version; ``None`` when it has no ledger tables."""
        with self.db.engine.connect() as conn:
            if not sa.inspect(conn).has_table(schema_info.name):
                return None
            return conn.execute(sa.select(schema_info.c.version).where(schema_info.c.id == 1)).scalar()

    def key_secrets(self) -> list[bytes]:
        """The secrets the ledger's idempotency keys are keyed with, oldest first (never exported)."""
        with self.reading("read the ledger's key secrets") as conn:
            return secrets.read_secrets(conn)

    def rotate_key_secret(self) -> str:
        """Add a new key secret: runtimes opened from now on key new runs with it; runs keyed with an
        older one keep it (replay, fork and resume find it here). Its key id."""
        with self.db.guard("add a key secret"), self.db.write_engine.begin() as conn:
            return secrets.add_secret(conn)

    def dispose(self) -> None:
        self.calls.close()
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.db.dispose()

    # --- retention -----------------------------------------------------------------------------------
    def prune(
        self,
        older_than: dt.timedelta | dt.datetime,
        *,
        statuses: Iterable[str] | None = None,
        dry_run: bool = False,
        batch: int = 500,
        max_calls: int = 5_000,
        progress: Callable[[int], None] | None = None,
    ) -> retention.Pruned:
        """Delete runs that started before ``older_than`` (ago) with their calls and attempts, in batches
        of at most ``batch`` runs and (unless one run has more) ``max_calls`` calls, each its own
        transaction; never a run still running or waiting for a person (``in_doubt``,
        ``awaiting_approval``, ``compensation_failed``). ``statuses``: only those; ``dry_run``: only
        count. Global idempotency keys outlive their runs (``tool_call_keys`` holds their outcome): only
        those whose retention ended are deleted. See ``agent_relay.ledger.retention``."""
        pruned = retention.prune(
            self.db,
            older_than,
            statuses=statuses,
            dry_run=dry_run,
            batch=batch,
            max_calls=max_calls,
            progress=progress,
        )
        if not dry_run:
            self.keys.expire()
        return pruned

    # --- runs ----------------------------------------------------------------------------------------
    def insert_run(self, **values: Any) -> None:
        with (
            self.db.guard("record the start of the run", run_id=values.get("run_id")),
            self.db.write_engine.begin() as conn,
        ):
            conn.execute(agent_runs.insert().values(**values))

    def finish_run(self, run_id: str, *, keep_higher_cost: bool = False, **values: Any) -> None:
        """Update the run's row. ``keep_higher_cost``: a budgeted run's ``cost_usd``, which its calls'
        writes add to (every worker's), is not lowered to the ``cost_usd`` given."""
        where = agent_runs.c.run_id == run_id
        with self.db.guard("record the end of the run", run_id=run_id), self.db.write_engine.begin() as conn:
            if keep_higher_cost and values.get("cost_usd") is not None:
                recorded = sa.select(agent_runs.c.cost_usd).where(where)
                if not self.is_sqlite:  # (SQLite: BEGIN IMMEDIATE holds the write lock already)
                    recorded = recorded.with_for_update()
                values["cost_usd"] = max(values["cost_usd"], conn.execute(recorded).scalar() or 0)
            conn.execute(agent_runs.update().where(where).values(**values))

    def request_cancel(self, run_id: str, reason: str | None) -> None:
        """Ask run ``run_id`` to stop (the first request's time and reason are kept). ``UnknownRunError``;
        ``SessionStateError`` unless it is running or stopped in doubt."""
        r = agent_runs.c
        cancellable = (RunStatus.RUNNING, RunStatus.IN_DOUBT, RunStatus.AWAITING_APPROVAL)
        stmt = (
            agent_runs.update()
            .where(r.run_id == run_id, r.status.in_(cancellable), r.cancel_requested_at.is_(None))
            .values(cancel_requested_at=dt.datetime.now(dt.UTC), cancel_reason=reason)
        )
        guard = self.db.guard("record the cancel of the run", run_id=run_id)
        with guard, self.db.write_engine.begin() as conn:
            if conn.execute(stmt).rowcount:
                return
            status = conn.execute(sa.select(r.status).where(r.run_id == run_id)).scalar()
        if status is None:
            raise UnknownRunError(run_id, self.database)
        if status not in cancellable:
            raise SessionStateError(
                f"run {run_id} is {status}; only a running or stopped run can be cancelled."
            )

    def cancel_requested(self, run_id: str) -> tuple[bool, str | None]:
        """Whether run ``run_id``, or a run it was opened in (its parent's, theirs, ...: a child refuses
        its calls as its parent does), was asked to stop, and why."""
        r = agent_runs.c
        stmt = sa.select(r.cancel_requested_at, r.cancel_reason, r.parent_run_id)
        asked, seen = run_id, {run_id}
        with self.reading("read whether the run was cancelled", run_id) as conn:
            while True:
                row = conn.execute(stmt.where(r.run_id == asked)).first()
                if row is None:
                    return False, None
                if row.cancel_requested_at is not None:
                    if asked == run_id:
                        return True, row.cancel_reason
                    why = f": {row.cancel_reason}" if row.cancel_reason else ""
                    return True, f"its parent run {asked} was cancelled{why}"
                if row.parent_run_id is None or row.parent_run_id in seen:
                    return False, None
                asked = row.parent_run_id
                seen.add(asked)

    def get_run(self, run_id: str) -> Row[Any] | None:
        with self.reading("read a run", run_id) as conn:
            return conn.execute(sa.select(agent_runs).where(agent_runs.c.run_id == run_id)).first()

    def child_runs(self, run_id: str) -> list[tuple[str, str]]:
        """(run id, name) of the runs opened inside run ``run_id``, in the order they started."""
        r = agent_runs.c
        stmt = sa.select(r.run_id, r.name).where(r.parent_run_id == run_id).order_by(r.started_at, r.run_id)
        with self.reading("read the child runs of a run", run_id) as conn:
            return [(row.run_id, row.name) for row in conn.execute(stmt)]

    def children_to_unwind(self, run_id: str) -> Sequence[Any]:
        """The runs opened inside run ``run_id`` (``parent_run_id``) that its saga undoes too
        (``unwind_with_parent``), latest first: what a child's unwind needs to know of it."""
        r = agent_runs.c
        stmt = (
            sa.select(r.run_id, r.name, r.status, r.owner, r.started_at, r.trace_id, r.key_version, r.key_id)
            .where(r.parent_run_id == run_id, r.unwind_with_parent)
            .order_by(r.started_at.desc(), r.run_id.desc())
        )
        with self.reading("read the child runs of a run", run_id) as conn:
            return conn.execute(stmt).all()

    # --- reads of calls ------------------------------------------------------------------------------
    def list_calls(self, run_id: str) -> Sequence[Row[Any]]:
        with self.reading("read the calls of a run", run_id) as conn:
            return conn.execute(
                sa.select(tool_calls).where(tool_calls.c.run_id == run_id).order_by(tool_calls.c.seq)
            ).all()

    def succeeded_forward_calls(self, run_id: str) -> Sequence[Any]:
        """The run's succeeded forward calls, latest first (the order a saga unwinds them)."""
        c = tool_calls.c
        stmt = (
            sa.select(c.call_id, c.seq, c.tool_name, c.arguments, c.output, c.started_at)
            .where(
                c.run_id == run_id,
                c.phase == Phase.FORWARD,
                c.status == CallStatus.SUCCEEDED,
                c.origin == Origin.LIVE,
            )
            .order_by(c.seq.desc())
        )
        with self.reading("read the calls of a run", run_id) as conn:
            return conn.execute(stmt).all()

    def pending_forward_calls(self, run_id: str) -> Sequence[Any]:
        """The run's forward calls still pending (running, or in doubt), latest first."""
        c = tool_calls.c
        stmt = (
            sa.select(c.call_id, c.seq, c.tool_name, c.owner)
            .where(c.run_id == run_id, c.phase == Phase.FORWARD, c.status == CallStatus.PENDING)
            .order_by(c.seq.desc())
        )
        with self.reading("read the calls of a run", run_id) as conn:
            return conn.execute(stmt).all()

    def forward_calls(self, run_id: str) -> Sequence[Any]:
        """Every forward call of a run in ``seq`` order: what a replay serves from."""
        c = tool_calls.c
        stmt = (
            sa.select(
                c.call_id,
                c.seq,
                c.tool_name,
                c.idempotency_key,
                c.arguments,
                c.output,
                c.status,
                c.error_type,
                c.error_message,
                c.cost_usd,
                c.cost_unknown,
                c.input_tokens,
                c.output_tokens,
                c.model,
            )
            .where(c.run_id == run_id, c.phase == Phase.FORWARD)
            .order_by(c.seq)
        )
        with self.reading("read the calls of a run", run_id) as conn:
            return conn.execute(stmt).all()

    def call_totals(self, run_id: str) -> tuple[Decimal, bool, int, int]:
        """(cost, any cost unknown, input tokens, output tokens) summed over a run's calls; the cost
        exactly (summed as decimals here: SQLite's ``sum`` would add binary floats)."""
        c = tool_calls.c
        stmt = sa.select(c.cost_usd, c.cost_unknown, c.input_tokens, c.output_tokens).where(
            c.run_id == run_id, sa.or_(c.cost_usd.is_not(None), c.cost_unknown, c.input_tokens.is_not(None))
        )
        cost, unknown, inp, out = Decimal(0), False, 0, 0
        with self.reading("read the calls of a run", run_id) as conn:
            for row in conn.execute(stmt):
                cost += row.cost_usd or 0
                unknown = unknown or bool(row.cost_unknown)
                inp += row.input_tokens or 0
                out += row.output_tokens or 0
        return cost, unknown, inp, out

    def decide_call(self, call_id: str, status: CallStatus, by: str, note: str | None) -> None:
        """Record a person's decision on a call awaiting approval (the runtime's and the CLI's): who
        decides must be named (``ConfigurationError``); ``SessionStateError`` if it is not awaiting one."""
        verb = "approve" if status is CallStatus.APPROVED else "reject"
        if not isinstance(by, str) or not by.strip():
            raise ConfigurationError(f"{verb}(by=...) must name who decides (kept on the call), not {by!r}.")
        if note is not None and not isinstance(note, str):
            raise ConfigurationError(f"{verb}(note=...) must be text, not {note!r}.")
        if not self.calls.decide(call_id, status, by, note):
            row = self.get_call(call_id)
            state = "does not exist" if row is None else f"is {row.status}, not awaiting_approval"
            raise SessionStateError(f"call {call_id} {state}; only a call awaiting approval can be decided.")

    def settle_call(self, call_id: str, status: str, *, output: Any, error_message: str | None) -> None:
        """Record by hand the real outcome of a pending call (the runtime's and the CLI's): ``status``
        ``succeeded`` (with the tool's ``output``) or ``failed``; ``ConfigurationError`` for another
        status or an output that is not JSON, ``SessionStateError`` if the call is not pending."""
        if status not in (CallStatus.SUCCEEDED, CallStatus.FAILED):
            raise ConfigurationError(
                f"settle_call(status=...) must be 'succeeded' or 'failed', not {status!r}."
            )
        encoded = encode(output, root="output", error=OutputEncodingError, what="settle_call(output=...) at")
        succeeded = status == CallStatus.SUCCEEDED
        settled = self.calls.settle(
            call_id,
            status=CallStatus(status),
            output=encoded if succeeded else None,
            error_type=None if succeeded else "agent_relay.settled",
            error_message=None if succeeded else error_message,
            ended_at=dt.datetime.now(dt.UTC),
        )
        if not settled:
            row = self.get_call(call_id)
            state = "does not exist" if row is None else f"is {row.status}, not pending"
            raise SessionStateError(f"call {call_id} {state}; only a pending call can be settled.")

    def get_call(self, call_id: str) -> Row[Any] | None:
        with self.reading("read a call") as conn:
            return conn.execute(sa.select(tool_calls).where(tool_calls.c.call_id == call_id)).first()

    def max_seq(self, run_id: str) -> int:
        stmt = sa.select(sa.func.coalesce(sa.func.max(tool_calls.c.seq), 0)).where(
            tool_calls.c.run_id == run_id
        )
        with self.reading("read the calls of a run", run_id) as conn:
            return int(conn.execute(stmt).scalar_one())
