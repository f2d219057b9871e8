"""The read API's result types carry every column of what they read, so a column a schema version adds
reaches ``LedgerReader`` results, ``agent-relay`` JSON and the bulk exports (or this names it)."""

from __future__ import annotations

import dataclasses

import sqlalchemy as sa

from agent_relay.ledger import derived, schema
from agent_relay.query import Attempt, Awaiting, Call, Run


def _names(kind: type, *extra: str) -> set[str]:
    return {f.name for f in dataclasses.fields(kind)} - set(extra)


def _columns(table: sa.Table) -> set[str]:
    return {c.name for c in table.c}


def test_each_result_type_has_every_column_it_reads() -> None:
    assert _names(Run, "calls") == _columns(schema.agent_runs)
    assert _names(Call, "history") == _columns(schema.tool_calls)
    assert _names(Attempt) == _columns(derived.call_attempts)
    assert _names(Awaiting) == _columns(derived.runs_awaiting_action)
    assert _columns(derived.call_failures) == _columns(derived.call_attempts) | {"run_name"}
