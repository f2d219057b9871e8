"""``agent-relay export --format parquet``: runs and their calls as a Parquet file, for analysis outside
the ledger (pandas, Polars, DuckDB). Needs ``pyarrow`` (``pip install 'agent-relay[analysis]'``).

One row a run, its calls a list of structs (``calls``); JSON values (input, output, arguments) as their
JSON text; money as ``decimal128(38, 10)`` (exact, the scale the ledger keeps on PostgreSQL); instants
as UTC microsecond timestamps. Rows are written a row group at a time, so memory stays flat.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from ..encoding import compact_dumps
from ..query import Call, Run

try:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover - depends on the environment
    raise click.UsageError(
        "--format parquet needs pyarrow: pip install 'agent-relay[analysis]' (or pyarrow), or use "
        "--format jsonl"
    ) from None

_GROUP_RUNS = 500  # runs per row group
_GROUP_CALLS = 50_000  # ... or fewer, when their calls are this many
_MONEY = pa.decimal128(38, 10)
_JSON_FIELDS = {"input_payload", "output", "arguments"}
# by the field's annotation (a string: the dataclasses' module defers them), so new fields follow
_BY_ANNOTATION = (("datetime", pa.timestamp("us", tz="UTC")), ("Decimal", _MONEY), ("bool", pa.bool_()))


def _arrow_type(field: dataclasses.Field[Any]) -> pa.DataType:
    annotation = str(field.type)
    if field.name in _JSON_FIELDS:
        return pa.string()  # the value's JSON text
    for word, kind in _BY_ANNOTATION:
        if word in annotation:
            return kind
    return pa.int64() if annotation.startswith("int") else pa.string()


def _fields(kind: type, skip: str) -> list[pa.Field]:
    return [pa.field(f.name, _arrow_type(f)) for f in dataclasses.fields(kind) if f.name != skip]


_CALL = pa.struct(_fields(Call, "history"))
SCHEMA = pa.schema([*_fields(Run, "calls"), pa.field("calls", pa.list_(_CALL))])


def _value(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return None if value is None else compact_dumps(value)
    if isinstance(value, Decimal):
        return value.quantize(Decimal("1e-10"))
    return value


def _row(record: Any, skip: str) -> dict[str, Any]:
    return {
        f.name: _value(f.name, getattr(record, f.name)) for f in dataclasses.fields(record) if f.name != skip
    }


class ParquetRuns:
    """Writes runs with their calls to a Parquet file, a row group at a time."""

    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(str(path), SCHEMA)
        self._rows: list[dict[str, Any]] = []
        self._calls = 0

    def __enter__(self) -> ParquetRuns:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._flush()
        finally:
            self._writer.close()

    def write(self, run: Run, calls: list[Call]) -> None:
        self._rows.append(_row(run, "calls") | {"calls": [_row(call, "history") for call in calls]})
        self._calls += len(calls)
        if len(self._rows) >= _GROUP_RUNS or self._calls >= _GROUP_CALLS:
            self._flush()

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_batch(pa.RecordBatch.from_pylist(self._rows, schema=SCHEMA))
            self._rows, self._calls = [], 0
