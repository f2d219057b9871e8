"""Which ``tool_calls`` columns each write of a call sets, derived once from the schema, and the values a
``CallRecord`` gives them. Every writer backend builds its statements from these lists, so the SQLite
text, the PostgreSQL text and the SQLAlchemy statements cannot drift apart in what they write.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final

import sqlalchemy as sa

from ..encoding import JSONText, compact_dumps
from .connection import utc
from .records import CallRecord, Found
from .schema import Money, money_text, tool_calls

DECISION: Final = ("decided_by", "decided_at", "decision_note")
"""Written by a person's decision on a call that required approval (``CallWriter.decide``), never by a
call's own writes."""
ROW: Final = tuple(c.name for c in tool_calls.c if c.name not in DECISION)
"""Every column: a finished call's row (a served replay row, an ``outcome``-durability call)."""
KEY: Final = ("run_id", "phase", "idempotency_key")
"""The unique key: one row per call of a run."""
ATTEMPT: Final = ("seq", "trace_id", "span_id", "started_at", "owner", "lease_expires_at")
"""What every try of a call writes anew (a failed call run again keeps its row and ``call_id``)."""
OUTCOME: Final = (
    "status",
    "output",
    "error_type",
    "error_message",
    "cost_usd",
    "cost_unknown",
    "input_tokens",
    "output_tokens",
    "model",
    "ended_at",
    "origin",
)
"""What a call's end writes onto its pending row (``origin``: a call served from another run's global key
ends ``deduplicated``)."""
CLAIM: Final = tuple(name for name in ROW if name not in OUTCOME or name == "status")
"""The pending row (``status`` pending, no outcome yet)."""
FOUND: Final = ("status", "output", "attempts", "owner", "arguments", "lease_expires_at")
"""What a claim reads back when another row holds the key."""
RETRY_SET: Final = ATTEMPT + OUTCOME
"""What a finished row writes over a failed earlier try of its key (``attempts`` is counted up)."""

assert set(KEY + ATTEMPT + OUTCOME + FOUND) <= set(ROW), "columns.py names a column the schema lacks"

Params = Callable[[CallRecord], Any]

# How each column's value is read from a record ``r``, as SQLAlchemy's column types take it; the
# parameter builders below are compiled from these once (they run on every call: a generated tuple or
# dict display costs a fraction of a loop over per-column functions).
_PYTHON: dict[str, str] = {name: f"r.{name}" for name in ROW}
# the canonical text the key was made from, when at hand: stored as it is, as the SQLite backend does
_PYTHON["arguments"] = "(r.arguments if r.arguments_text is None else JSONText(r.arguments_text))"
_PYTHON["started_at"] = "utc(r.started_ns or 0)"
_PYTHON["ended_at"] = "utc(r.ended_ns or r.started_ns or 0)"
_PYTHON["lease_expires_at"] = "(None if r.lease_until_ns is None else utc(r.lease_until_ns))"

_seconds: dict[int, str] = {}  # the seconds formatted lately (a call's start, its lease's end), as text


def timestamp(ns: int) -> str:
    """A UTC instant as SQLAlchemy's SQLite DateTime stores it (``YYYY-MM-DD HH:MM:SS.ffffff``).

    Calls come many to a second, so each second's text is formatted once and kept (a few at a time: a
    claim writes its start and its lease's end, seconds apart).
    """
    seconds, micros = divmod(ns // 1000, 1_000_000)
    text = _seconds.get(seconds)
    if text is None:
        if len(_seconds) >= 8:
            _seconds.clear()
        text = _seconds[seconds] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))
    return f"{text}.{micros:06d}"


def instant(value: dt.datetime | str | None) -> dt.datetime | None:
    """A timestamp column as a driver returns it (aware; naive UTC, as SQLAlchemy reads SQLite; or
    SQLite's text, as plain ``sqlite3`` does) as an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def found(row: Any) -> Found:
    """The ``Found`` of a row of the ``FOUND`` columns, its JSON already decoded."""
    status, output, attempts, owner, arguments, lease_until = row
    return Found(status, output, attempts, owner, arguments, instant(lease_until))


def json_text(value: Any) -> str | None:
    return None if value is None else compact_dumps(value)


def json_value(stored: Any) -> Any:
    """A JSON column's value as read by ``sqlite3``. The columns are declared ``JSON``, which SQLite
    gives NUMERIC affinity: a stored number (``0``, ``1.5``) comes back as a number, not as its text."""
    return json.loads(stored) if isinstance(stored, str | bytes) else stored


def _sqlite_expression(name: str) -> str:
    """The column's value as SQLAlchemy's column type stores it on SQLite, for plain ``sqlite3``."""
    kind = tool_calls.c[name].type
    if name == "arguments":  # the canonical text the key was made from, when at hand
        return "(r.arguments_text if r.arguments_text is not None else json_text(r.arguments))"
    if name == "started_at":
        return "timestamp(r.started_ns or 0)"
    if name == "ended_at":
        return "timestamp(r.ended_ns or r.started_ns or 0)"
    if name == "lease_expires_at":
        return "(None if r.lease_until_ns is None else timestamp(r.lease_until_ns))"
    if isinstance(kind, sa.JSON):
        return f"json_text(r.{name})"
    if isinstance(kind, Money):
        return f"(None if r.{name} is None else money_text(r.{name}))"
    if isinstance(kind, sa.Boolean):
        return f"int(r.{name})"
    return _PYTHON[name]


def _postgres_expression(name: str) -> str:
    """The column's value as the PostgreSQL backend passes it to psycopg: JSON as the text SQLAlchemy
    would send (the server parses it), instants as aware datetimes, money as a ``Decimal``."""
    kind = tool_calls.c[name].type
    if name == "arguments" or isinstance(kind, sa.JSON):
        return _SQLITE[name]
    if isinstance(kind, Money):
        return f"(None if r.{name} is None else Decimal(r.{name}))"
    return _PYTHON[name]


def wire_text(value: str | None) -> bytes | None:
    """A text value as libpq sends it: UTF-8, and never with a NUL byte (libpq would cut the value there;
    PostgreSQL's text cannot hold one, and psycopg refuses it the same way)."""
    if value is None:
        return None
    data = value.encode()
    if b"\x00" in data:
        raise ValueError("PostgreSQL text cannot contain NUL (0x00) characters; remove them from the value")
    return data


def wire_instant(ns: int) -> bytes:
    """An instant as ``timestamptz`` text, in UTC (the SQLite backend's text, with its offset)."""
    return f"{timestamp(ns)}+00".encode()


def _wire_expression(name: str) -> str:
    """The column's value as libpq text for ``pg_wire``: the text of what ``_postgres_expression`` gives
    psycopg (``test_writer_parity`` compares the rows the two write)."""
    kind = tool_calls.c[name].type
    if name == "lease_expires_at":
        return "(None if r.lease_until_ns is None else wire_instant(r.lease_until_ns))"
    if name in ("started_at", "ended_at"):
        return _SQLITE[name].replace("timestamp(", "wire_instant(")
    if isinstance(kind, Money):
        return f"(None if r.{name} is None else money_text(r.{name}).encode())"
    if isinstance(kind, sa.Boolean):
        return f"(None if r.{name} is None else b't' if r.{name} else b'f')"
    if isinstance(kind, sa.Integer):
        return f"(None if r.{name} is None else b'%d' % r.{name})"
    if isinstance(kind, sa.JSON) or name == "arguments":  # (JSON text escapes NUL: nothing to look for)
        return f"(None if (text := {_SQLITE[name]}) is None else text.encode())"
    if name in _MADE_HERE:  # hex ids and keys, and states: ours, never with NUL
        return f"(None if r.{name} is None else r.{name}.encode())"
    return f"wire_text({_SQLITE[name]})"


# text columns whose values the library makes; the others may carry a user's text (a tool's or a model's
# name, an error, the owner) and are checked for NUL
_MADE_HERE = frozenset(
    ("call_id", "run_id", "phase", "idempotency_key", "status", "trace_id", "span_id", "origin")
)


_SQLITE: dict[str, str] = {name: _sqlite_expression(name) for name in ROW}
_POSTGRES: dict[str, str] = {name: _postgres_expression(name) for name in ROW}
_WIRE: dict[str, str] = {name: _wire_expression(name) for name in ROW}
_NAMESPACE = {
    "Decimal": Decimal,
    "JSONText": JSONText,
    "json_text": json_text,
    "money_text": money_text,
    "timestamp": timestamp,
    "utc": utc,
    "wire_instant": wire_instant,
    "wire_text": wire_text,
}


def _compile(source: str) -> Params:
    return eval(compile(source, "<agent_relay.ledger.columns>", "eval"), dict(_NAMESPACE))  # type: ignore[no-any-return]


def sqlite_params(names: tuple[str, ...]) -> Callable[[CallRecord], tuple[Any, ...]]:
    """The positional parameters of ``names`` for plain ``sqlite3``."""
    return _compile(f"lambda r: ({''.join(_SQLITE[name] + ', ' for name in names)})")


def postgres_params(names: tuple[str, ...]) -> Callable[[CallRecord], tuple[Any, ...]]:
    """The positional parameters of ``names`` for psycopg."""
    return _compile(f"lambda r: ({''.join(_POSTGRES[name] + ', ' for name in names)})")


def wire_params(names: tuple[str, ...]) -> Callable[[CallRecord], tuple[bytes | None, ...]]:
    """The positional parameters of ``names`` as libpq text (``pg_wire``)."""
    return _compile(f"lambda r: ({''.join(_WIRE[name] + ', ' for name in names)})")


def python_params(names: tuple[str, ...]) -> Callable[[CallRecord], dict[str, Any]]:
    """The named parameters of ``names`` for SQLAlchemy statements."""
    return _compile(f"lambda r: {{{', '.join(f'{name!r}: {_PYTHON[name]}' for name in names)}}}")
