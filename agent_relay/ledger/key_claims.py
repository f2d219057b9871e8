"""``KeyClaims``: the ``tool_call_keys`` table — global idempotency keys (``@tool(key_scope="global")``),
each held by one call of one run. Every statement on that table lives here.

A claim is an insert under the table's primary key: of two runs claiming one key at once, exactly one
inserts; the other reads who holds it (and, joined, what the holder's ``tool_calls`` row says, which is
the truth about its outcome while the key row is still pending). Taking a key over (expired, or its holder
failed or is gone) is an update conditioned on the holder read, so two takers cannot both win.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..states import CallStatus
from .connection import Database
from .schema import tool_call_keys, tool_calls


@dataclasses.dataclass(frozen=True, slots=True)
class KeyClaim:
    """A call asking to hold a global key."""

    scope_key: str
    tool_name: str
    run_id: str
    call_id: str
    owner: str
    arguments: Any
    created_at: dt.datetime
    expires_at: dt.datetime | None


class Holder(NamedTuple):
    """Who holds a key: the key row, and the status, output and owner of its holder's ``tool_calls`` row
    (None when that row is gone: its run was pruned)."""

    run_id: str
    call_id: str
    status: str
    arguments: Any
    output: Any
    owner: str | None
    expires_at: dt.datetime | None
    call_status: str | None
    call_output: Any
    call_owner: str | None


_k, _c = tool_call_keys.c, tool_calls.c
_HOLDER = (
    sa.select(
        _k.run_id, _k.call_id, _k.status, _k.arguments, _k.output, _k.owner, _k.expires_at,
        _c.status.label("call_status"), _c.output.label("call_output"), _c.owner.label("call_owner"),
    )
    .select_from(tool_call_keys.outerjoin(tool_calls, _c.call_id == _k.call_id))
)  # fmt: skip


class KeyClaims:
    """Claims on global keys, each write its own committed transaction. Thread-safe."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _values(self, claim: KeyClaim) -> dict[str, Any]:
        values = dataclasses.asdict(claim)
        values.update(status=CallStatus.PENDING, output=None, ended_at=None)
        return values

    def claim(self, claim: KeyClaim) -> Holder | None:
        """Hold ``claim.scope_key`` for the call (``None``), or who holds it already."""
        values = self._values(claim)
        dialect = self._db.engine.dialect.name
        insert: Any = (postgresql if dialect == "postgresql" else sqlite).insert(tool_call_keys)
        stmt = insert.values(**values).on_conflict_do_nothing(index_elements=[_k.scope_key])
        with self._db.guard("claim a global idempotency key"), self._db.write_engine.begin() as conn:
            if conn.execute(stmt).rowcount == 1:
                return None
            row = conn.execute(_HOLDER.where(_k.scope_key == claim.scope_key)).first()
        if row is None:  # given up between the two statements: claim again
            return self.claim(claim)
        return Holder(**row._mapping)

    def take(self, claim: KeyClaim, holder: Holder) -> bool:
        """Take the key over from ``holder`` (as read): False when someone else changed it first."""
        stmt = (
            tool_call_keys.update()
            .where(_k.scope_key == claim.scope_key, _k.call_id == holder.call_id, _k.status == holder.status)
            .values(**{k: v for k, v in self._values(claim).items() if k != "scope_key"})
        )
        with self._db.guard("take over a global idempotency key"), self._db.write_engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)

    def finish(self, call_id: str, output: Any) -> None:
        """The call holding a key succeeded with ``output``: later runs are served it."""
        stmt = (
            tool_call_keys.update()
            .where(_k.call_id == call_id)
            .values(status=CallStatus.SUCCEEDED, output=output, ended_at=dt.datetime.now(dt.UTC))
        )
        with (
            self._db.guard("record a global idempotency key's outcome"),
            self._db.write_engine.begin() as conn,
        ):
            conn.execute(stmt)

    def release(self, call_id: str, *, pending_only: bool = True) -> None:
        """Give up the key call ``call_id`` holds (it failed; or it was compensated: ``pending_only``
        false), so the next call with it runs."""
        stmt = tool_call_keys.delete().where(_k.call_id == call_id)
        if pending_only:
            stmt = stmt.where(_k.status == CallStatus.PENDING)
        with self._db.guard("give up a global idempotency key"), self._db.write_engine.begin() as conn:
            conn.execute(stmt)

    def expire(self, now: dt.datetime | None = None) -> int:
        """Delete the keys whose retention ended; how many."""
        stmt = tool_call_keys.delete().where(_k.expires_at <= (now or dt.datetime.now(dt.UTC)))
        with self._db.guard("delete expired global idempotency keys"), self._db.write_engine.begin() as conn:
            return int(conn.execute(stmt).rowcount or 0)
