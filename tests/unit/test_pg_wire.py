"""``pg_wire.Statement``: psycopg's ``%s`` placeholders become libpq's ``$1``, ``$2`` ... in order, and a
statement's prepared name follows from its text (made again, it names what a connection prepared)."""

from __future__ import annotations

import pytest

from agent_relay.ledger.pg_wire import Statement


def test_placeholders_are_numbered_in_order_and_the_name_follows_the_text() -> None:
    first = Statement("UPDATE t SET a = %s WHERE b = %s AND c::text = %s")
    assert first.sql == b"UPDATE t SET a = $1 WHERE b = $2 AND c::text = $3"
    assert first.name == Statement("UPDATE t SET a = %s WHERE b = %s AND c::text = %s").name
    assert first.name != Statement("UPDATE t SET a = %s WHERE b = %s").name
    assert first.name.startswith(b"agent_relay_") and len(first.name) < 64  # (PostgreSQL's name limit)


@pytest.mark.parametrize("sql", ["SELECT 100%% FROM t WHERE a = %s", "SELECT %d", "SELECT %(a)s"])
def test_a_placeholder_libpq_would_not_see_is_refused(sql: str) -> None:
    with pytest.raises(ValueError, match="plain %s placeholders only"):
        Statement(sql)
