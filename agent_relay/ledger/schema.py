"""The ledger's tables, as SQLAlchemy Core.

These column names are a public contract: users query them with plain SQL (see the README). JSON columns
keep the exact text written (``json`` on PostgreSQL, TEXT affinity on SQLite); money is exact on both
(``NUMERIC``, and decimal text on SQLite); ``trace_id`` and ``span_id`` are lowercase hex, as OTLP
backends show them, so a row and its trace are one join apart.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles

from ..states import Origin, RunMode

SCHEMA_VERSION = 11  # see migrations.py for what each version added

metadata = sa.MetaData()


class LedgerJSON(sa.JSON):
    """JSON, kept as the text that was written, so every value comes back exactly. On SQLite the column is
    declared ``JSON_TEXT``, which SQLite gives TEXT affinity: a column declared ``JSON`` has NUMERIC
    affinity, and SQLite turns number text into INTEGER or REAL (``1.0`` came back as ``1``, integers past
    64 bits as floats). On PostgreSQL it is ``json``, not ``jsonb``: ``jsonb`` rewrites numbers as
    ``numeric`` (the float ``1e+16`` comes back as the integer ``10000000000000000``)."""

    cache_ok = True


class DecimalText(sa.String):
    """An exact decimal as text: how SQLite, which has no exact numeric type, keeps money."""

    cache_ok = True


@compiles(LedgerJSON, "sqlite")
def _json_on_sqlite(type_: LedgerJSON, compiler: Any, **kw: Any) -> str:
    return "JSON_TEXT"


@compiles(DecimalText, "sqlite")
def _decimal_on_sqlite(type_: DecimalText, compiler: Any, **kw: Any) -> str:
    return "DECIMAL_TEXT"


_JSON = LedgerJSON(none_as_null=True).with_variant(postgresql.JSON(none_as_null=True), "postgresql")


class Money(sa.types.TypeDecorator[Decimal]):
    """USD amounts as ``Decimal`` in Python, exact in the database: NUMERIC(20, 10), and on SQLite the
    decimal's text in a ``DECIMAL_TEXT`` column (TEXT affinity: never a binary float)."""

    impl = sa.Numeric(20, 10, asdecimal=False)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(DecimalText())
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return money_text(value) if dialect.name == "sqlite" else Decimal(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value))


def money_text(value: Any) -> str:
    """An amount as SQLite stores it: the exact decimal, in plain notation (``0.0000001``, not ``1E-7``)."""
    return format(Decimal(value), "f")


_TS = sa.DateTime(timezone=True)

schema_info = sa.Table(
    "agent_relay_schema",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("created_at", _TS, nullable=False),
)

agent_runs = sa.Table(
    "agent_runs",
    metadata,
    sa.Column("run_id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    # running | succeeded | failed | compensated | compensation_failed
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False, server_default=RunMode.LIVE),  # see RunMode
    sa.Column("replay_of", sa.String(36), nullable=True),
    sa.Column(
        "fork_after", sa.Integer, nullable=True
    ),  # fork: how many calls were replayed before going live
    sa.Column("parent_run_id", sa.String(36), nullable=True),
    sa.Column("input_payload", _JSON, nullable=True),
    sa.Column("output", _JSON, nullable=True),
    sa.Column("error_type", sa.String(200), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("budget_limit_usd", Money, nullable=True),
    sa.Column("cost_usd", Money, nullable=False, server_default="0"),
    # true when some usage of the run could not be priced: cost_usd is then a lower bound
    sa.Column("cost_unknown", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("span_id", sa.String(16), nullable=True),
    sa.Column("owner", sa.String(200), nullable=True),  # host:pid of the process running it
    sa.Column("started_at", _TS, nullable=False),
    sa.Column("ended_at", _TS, nullable=True),
    # how its calls' idempotency keys were made (agent_relay.keys): version (NULL: 1, before versions), and
    # the fingerprint of the secret of a keyed (version 2) run
    sa.Column("key_version", sa.Integer, nullable=True),
    sa.Column("key_id", sa.String(16), nullable=True),
    # a cancel asked from outside (runtime.cancel): when, and why; its next call is refused
    sa.Column("cancel_requested_at", _TS, nullable=True),
    sa.Column("cancel_reason", sa.Text, nullable=True),
    # a child run (parent_run_id): whether its parent's saga undoes it too (agent_session(unwind_with_parent))
    sa.Column("unwind_with_parent", sa.Boolean, nullable=False, server_default=sa.true()),
    # a budgeted run's reservations: what calls running now may cost at most (see agent_relay.reserve);
    # while it runs, its cost_usd counts every finished call's cost as the call's outcome is written
    sa.Column("reserved_usd", Money, nullable=False, server_default="0"),
    sa.Index("ix_agent_runs_started_at", "started_at"),
    sa.Index("ix_agent_runs_name_started_at", "name", "started_at"),
    sa.Index("ix_agent_runs_status", "status"),
    sa.Index("ix_agent_runs_parent_run_id", "parent_run_id"),
)

tool_calls = sa.Table(
    "tool_calls",
    metadata,
    sa.Column("call_id", sa.String(32), primary_key=True),
    sa.Column(
        "run_id",
        sa.String(36),
        sa.ForeignKey("agent_runs.run_id", name="fk_tool_calls_run", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("tool_name", sa.String(200), nullable=False),
    sa.Column("phase", sa.String(16), nullable=False),  # forward | compensation
    sa.Column("idempotency_key", sa.String(64), nullable=False),
    sa.Column("arguments", _JSON, nullable=True),
    sa.Column("output", _JSON, nullable=True),
    # pending | succeeded | failed; awaiting_approval | approved | rejected (version 7 widened it)
    sa.Column("status", sa.String(32), nullable=False),
    sa.Column("error_type", sa.String(200), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("cost_usd", Money, nullable=True),
    sa.Column("cost_unknown", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("input_tokens", sa.BigInteger, nullable=True),
    sa.Column("output_tokens", sa.BigInteger, nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("span_id", sa.String(16), nullable=True),
    sa.Column("started_at", _TS, nullable=False),
    sa.Column("ended_at", _TS, nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
    sa.Column("owner", sa.String(200), nullable=True),  # host:pid of the worker holding a pending claim
    # live: the tool body ran (or runs) for this row; replayed: the outcome was copied from the replayed
    # run; diverged: a replay asked for a call its source does not have (recorded failed, nothing ran)
    sa.Column("origin", sa.String(16), nullable=False, server_default=Origin.LIVE),
    # the decision on a call that required approval: who, when, why (its status says which)
    sa.Column("decided_by", sa.String(200), nullable=True),
    sa.Column("decided_at", _TS, nullable=True),
    sa.Column("decision_note", sa.Text, nullable=True),
    # until when the owner of a pending claim holds it: renewed while its body runs (version 8)
    sa.Column("lease_expires_at", _TS, nullable=True),
    sa.UniqueConstraint("run_id", "phase", "idempotency_key", name="uq_tool_calls_run_phase_key"),
    sa.Index("ix_tool_calls_run_seq", "run_id", "seq"),
    sa.Index("ix_tool_calls_tool_started_at", "tool_name", "started_at"),
    # (no index on status alone since version 11: no reader filters on it without run_id, and every
    # outcome rewrote it; on PostgreSQL it also lured the outcome's UPDATE away from the primary key)
)

# Every attempt of a call but its latest, which is the ``tool_calls`` row itself. Written by the database,
# not by the library: a trigger copies a row's attempt here when a new attempt takes the row over (a
# failed call run again, a pending call taken over from a worker that is gone), in that same statement,
# so a call that succeeds on its first attempt costs nothing more. The ``call_attempts`` view is both.
tool_call_attempts = sa.Table(
    "tool_call_attempts",
    metadata,
    sa.Column(
        "call_id",
        sa.String(32),
        sa.ForeignKey("tool_calls.call_id", name="fk_tool_call_attempts_call", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column(
        "run_id",
        sa.String(36),
        sa.ForeignKey("agent_runs.run_id", name="fk_tool_call_attempts_run", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("seq", sa.Integer, nullable=False),
    # failed, or in_doubt: still pending when another worker took the call over (its outcome unknown)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error_type", sa.String(200), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("cost_usd", Money, nullable=True),
    sa.Column("cost_unknown", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("input_tokens", sa.BigInteger, nullable=True),
    sa.Column("output_tokens", sa.BigInteger, nullable=True),
    sa.Column("model", sa.String(200), nullable=True),
    sa.Column("trace_id", sa.String(32), nullable=True),
    sa.Column("span_id", sa.String(16), nullable=True),
    sa.Column("owner", sa.String(200), nullable=True),
    sa.Column("started_at", _TS, nullable=False),
    sa.Column("ended_at", _TS, nullable=True),
    sa.PrimaryKeyConstraint("call_id", "attempt", name="pk_tool_call_attempts"),
    sa.Index("ix_tool_call_attempts_run", "run_id"),
)

# The secrets idempotency keys are keyed with (agent_relay.keyring): the newest keys new runs; each run
# names its own by key_id. Never on a span or in an export.
key_secrets = sa.Table(
    "agent_relay_key_secrets",
    metadata,
    sa.Column("key_id", sa.String(16), primary_key=True),
    sa.Column("secret", sa.String(128), nullable=False),  # hex
    sa.Column("created_at", _TS, nullable=False),
)

# Keys across runs (``@tool(key=..., key_scope="global")``): one row per global key, naming the call that
# holds it — running (``pending``) or done (``succeeded``, with its output, so a later run is served even
# once the holder's run was pruned). No foreign key: it outlives the run; ``expires_at`` (NULL: never) is
# when the key may run again. A failed or compensated call gives its key up (the row is deleted).
tool_call_keys = sa.Table(
    "tool_call_keys",
    metadata,
    sa.Column("scope_key", sa.String(64), primary_key=True),  # HMAC of (tool, key): see keys.scope_key
    sa.Column("tool_name", sa.String(200), nullable=False),
    sa.Column("run_id", sa.String(36), nullable=False),
    sa.Column("call_id", sa.String(32), nullable=False),
    sa.Column("status", sa.String(32), nullable=False),  # pending | succeeded
    sa.Column("arguments", _JSON, nullable=True),
    sa.Column("output", _JSON, nullable=True),
    sa.Column("owner", sa.String(200), nullable=True),
    sa.Column("created_at", _TS, nullable=False),
    sa.Column("ended_at", _TS, nullable=True),
    sa.Column("expires_at", _TS, nullable=True),
    sa.Index("ix_tool_call_keys_call_id", "call_id"),
    sa.Index("ix_tool_call_keys_expires_at", "expires_at"),
)
