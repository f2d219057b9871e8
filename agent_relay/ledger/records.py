"""The record of one tool call as it travels from the wrapper to the ledger's writer, and what a claim
found: values, not flags. Who writes a record is decided by the caller, never marked on it."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from decimal import Decimal
from typing import Any, NamedTuple

from ..errors import ConfigurationError
from ..states import CallStatus, Durability, Origin

DURABILITY_ENV = "AGENT_RELAY_DURABILITY"


def check_durability(value: object, where: str) -> Durability:
    """``value`` as a ``Durability``; ``ConfigurationError`` unless it is one."""
    if isinstance(value, str) and value in Durability.__members__.values():
        return Durability(value)
    raise ConfigurationError(
        f"{where}: durability must be 'strict' (a pending row before the tool runs, the outcome before "
        f"it returns) or 'outcome' (only the outcome: one commit, at-least-once after a crash), not "
        f"{value!r}."
    )


def durability_from_env(environ: Any = os.environ) -> Durability | None:
    value = environ.get(DURABILITY_ENV)
    return check_durability(value.strip().lower(), DURABILITY_ENV) if value else None


@dataclasses.dataclass(slots=True, eq=False)
class CallRecord:
    """One tool call's ledger row in the making. Owned by one thread or task at a time.

    ``durability`` says what the writer commits for it: ``STRICT`` a pending row when it starts and the
    outcome onto that row when it ends; ``OUTCOME`` only the finished row.
    """

    run_id: str
    call_id: str
    seq: int
    tool_name: str
    phase: str
    idempotency_key: str
    arguments: Any
    owner: str
    durability: Durability = Durability.STRICT
    # the arguments as canonical JSON text when it is already at hand (the key was made from it)
    arguments_text: str | None = None
    # where and when it ran
    trace_id: str | None = None
    span_id: str | None = None
    started_ns: int | None = None
    ended_ns: int | None = None
    attempts: int = 1
    # until when its pending row is held (ns since the epoch, UTC): set by the writer with each claim
    lease_until_ns: int | None = None
    # its outcome
    status: CallStatus = CallStatus.PENDING
    output: Any = None
    error_type: str | None = None
    error_message: str | None = None
    cost_usd: Decimal | None = None
    cost_unknown: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    model: str | None = None
    origin: Origin = Origin.LIVE
    # a budgeted run's call (None: its run has no budget): the reservation it holds on the run's row
    # (``agent_runs.reserved_usd``), released, and its cost added to the run's, by the write of its outcome
    budget_hold: Decimal | None = None
    # a server backend's parameters for the write this record is queued for in a shared commit, made on
    # the calling thread while the commit before it is in flight (``CallWriter``, ``GroupCommit``): the
    # group's writer thread only joins them. ``None`` outside that wait, and for a backend that makes none
    encoded: tuple[bytes | None, ...] | None = None


class Approval(NamedTuple):
    """An approved call, claimed for its try: its attempt number and the decision."""

    attempts: int
    decided_by: str | None
    decided_at: dt.datetime | None
    note: str | None


class Held(NamedTuple):
    """The claim is committed (or, without a pending row, needs none): this worker runs the call, try
    number ``attempts``."""

    attempts: int


class Found(NamedTuple):
    """A row already holds the call's key and was not failed: what it says (JSON decoded).
    ``lease_until``: when its owner's lease on it ends (aware, UTC; ``None``: a row claimed without
    one); ``ledger.leases.lapsed`` judges it."""

    status: str
    output: Any
    attempts: int
    owner: str | None
    arguments: Any
    lease_until: dt.datetime | None = None


Claim = Held | Found


class Reserved(NamedTuple):
    """What a reservation found on its run's row: granted or not, the run's cost so far, what its other
    calls in flight had reserved (before this one), and its limit (``None``: the run has no budget)."""

    granted: bool
    spent: Decimal
    reserved: Decimal
    limit: Decimal | None
