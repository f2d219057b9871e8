"""The named states of runs and calls, as ``StrEnum``s whose values are what the ledger stores.

A member compares equal to its database value (``CallStatus.SUCCEEDED == "succeeded"``), so rows read
back as plain strings and user SQL over the ledger see the same words.
"""

from __future__ import annotations

from enum import StrEnum


class CallStatus(StrEnum):
    """``tool_calls.status``."""

    PENDING = "pending"  # claimed: running, or its process died mid-call (in doubt)
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # a tool that requires approval (@tool(requires_approval=...)): asked, and decided by a person
    AWAITING_APPROVAL = "awaiting_approval"
    APPROVED = "approved"  # the resumed run runs it (then pending, then its outcome)
    REJECTED = "rejected"  # the resumed run raises ApprovalRejectedError where the agent called it


class RunStatus(StrEnum):
    """``agent_runs.status`` (and ``NEW``: a session not entered yet, never stored)."""

    NEW = "new"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    COMPENSATED = "compensated"
    COMPENSATION_FAILED = "compensation_failed"
    IN_DOUBT = "in_doubt"  # stopped without unwinding at a call whose outcome is unknown: settle, resume
    AWAITING_APPROVAL = "awaiting_approval"  # stopped without unwinding at a call a person must decide on
    CANCELLED = "cancelled"  # cancelled from outside (runtime.cancel): its calls refused, its saga run


class RunMode(StrEnum):
    """``agent_runs.mode``: how the run's calls are served."""

    LIVE = "live"
    REPLAY = "replay"  # every forward call served from ``replay_of``
    FORK = "fork"  # the first ``fork_after`` calls served from ``replay_of``, then live
    RESUME = "resume"  # run ``run_id`` continued: succeeded calls served, the rest run
    RECOVER = "recover"  # a session that only unwinds a run (``runtime.compensate``); never stored


class Phase(StrEnum):
    """``tool_calls.phase``."""

    FORWARD = "forward"
    COMPENSATION = "compensation"


class Origin(StrEnum):
    """``tool_calls.origin``: where the row's outcome came from."""

    LIVE = "live"  # the tool body ran (or runs) for this row
    REPLAYED = "replayed"  # copied from the replayed run; no body ran
    DIVERGED = "diverged"  # a replay asked for a call its source does not have (failed, nothing ran)
    # served from another run's call holding the same global key (@tool(key_scope="global")); nothing ran
    DEDUPLICATED = "deduplicated"


class Durability(StrEnum):
    """What a live call commits (see README "Durability")."""

    STRICT = "strict"  # the pending row before the body runs, the outcome before the call returns
    OUTCOME = "outcome"  # only the outcome, before the call returns (a crash mid-body: it runs again)


class AttemptStatus(StrEnum):
    """How an attempt of a call ended (``call_attempts.status``): a call's status, or ``IN_DOUBT`` for an
    attempt another worker took over while it was still pending (its process gone, its outcome unknown)."""

    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_DOUBT = "in_doubt"
