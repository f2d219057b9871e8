"""``CallStatements``: what a ``tool_calls`` writer backend does (``SqliteCalls``, ``PgCalls``,
``SqlCalls``), for ``CallWriter`` (``ledger.writer``), which turns their driver errors into
``LedgerError``."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from .records import CallRecord, Claim, Found, Reserved


class CallStatements(Protocol):
    """What a writer backend does, each in its own committed transaction (``batch``: one for all).
    Driver errors propagate; the writer turns them into ``LedgerError``."""

    instrumented: bool  # whether driver instrumentations may see its statements (then suppress them)

    def claim(self, record: CallRecord) -> Claim: ...

    def finish(self, record: CallRecord) -> bool: ...

    def batch(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]]: ...

    def batch_if_free(
        self, claims: Sequence[CallRecord], finishes: Sequence[CallRecord]
    ) -> tuple[list[Claim | Exception], list[bool | Exception]] | None: ...

    def encode(self, record: CallRecord, finish: bool) -> tuple[bytes | None, ...] | None:
        """The parameters ``batch`` will send for the record's claim (or, ``finish``, its outcome), made
        ahead on the record's own thread (``CallRecord.encoded``); ``None``: ``batch`` makes its own."""
        ...

    def insert_rows(self, records: Sequence[CallRecord]) -> None: ...

    def find(self, record: CallRecord) -> Found | None: ...

    def take_over(self, record: CallRecord, owner: str | None, before_ns: int) -> int | None: ...

    def renew(self, owner: str, call_ids: Sequence[str], until_ns: int) -> set[str]: ...

    def reserve(self, run_id: str, amount: Decimal) -> Reserved: ...

    def settle_run(self, run_id: str, cost: Decimal, hold: Decimal) -> None: ...

    def close(self) -> None: ...
