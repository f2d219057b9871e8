"""Many runs at once: ``agent-relay prune`` and the bulk forms of ``agent-relay export`` (JSON Lines,
Parquet). Both stream: memory holds one run's calls (export) or one batch of run ids (prune) at a time,
whatever the ledger's size. Progress (theirs, and ``db upgrade``'s) goes to stderr as a bar on a
terminal, and nowhere when piped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import re
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Protocol

import click
from rich.console import Console
from rich.progress import Progress

from ..ledger.retention import Pruned, check_statuses
from ..ledger.store import LedgerStore
from ..query import Call, LedgerReader, Run
from .text import json_safe

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Ledgers(Protocol):
    """What the commands get from the command line's context: the ``--db`` URL and a reader of it."""

    db: str

    def reader(self) -> LedgerReader: ...


def instant(value: str | None, option: str) -> dt.datetime | None:
    """An option's instant: a duration ago (``30m``, ``2h``, ``7d``) or an ISO date or time (UTC unless
    it says otherwise); ``click.BadParameter`` naming the option otherwise."""
    if value is None:
        return None
    m = re.fullmatch(r"(\d+)\s*([smhd])", value.strip())
    if m:
        return dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: use a duration (30m, 2h, 7d) or an ISO date (2026-01-31)", param_hint=option
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@contextlib.contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """``advance(n)`` for a progress bar of ``total`` on stderr, drawn only on a terminal."""
    console = Console(stderr=True)
    if not console.is_terminal or total < 1:
        yield lambda n: None
        return
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


@click.command()
@click.option(
    "--older-than",
    required=True,
    help="Runs started before this: a duration ago (30d, 12h) or an ISO date (2026-01-31).",
)
@click.option(
    "--status",
    "statuses",
    multiple=True,
    help="Only runs of this status (repeat for several); by default every status but running, "
    "in_doubt and compensation_failed, which are never pruned.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--batch", default=500, show_default=True, type=click.IntRange(1, 100_000), help="Runs per transaction."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def prune(
    obj: Ledgers, older_than: str, statuses: tuple[str, ...], dry_run: bool, batch: int, as_json: bool
) -> None:
    """Delete old runs with their calls and attempts, in short transactions (safe while agents record)."""
    before = instant(older_than, "--older-than")
    try:
        chosen = check_statuses(statuses or None)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--status") from None
    obj.reader()  # refuses a missing ledger, or one of another schema version, before anything is deleted
    store = LedgerStore(obj.db)
    try:
        assert before is not None
        counted = store.prune(before, statuses=chosen, dry_run=True)
        result: Pruned = counted
        if not dry_run:
            with progress_bar(counted.runs, "pruning runs") as advance:
                result = store.prune(before, statuses=chosen, batch=batch, progress=advance)
    finally:
        store.dispose()
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result), default=_jsonable, indent=2))
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {result.runs} runs ({result.calls} calls) started before {result.before.isoformat()}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact
    return str(value)


def _record(run: Run, calls: list[Call]) -> dict[str, Any]:
    """A run and its calls as the one-run export prints them (without attempt histories)."""
    return {
        "run": dataclasses.asdict(run),
        "calls": [{k: v for k, v in dataclasses.asdict(c).items() if k != "history"} for c in calls],
    }


def export_many(
    reader: LedgerReader,
    fmt: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    output: str | None,
) -> int:
    """Write the runs started in ``[since, until)`` with their calls, oldest first, as JSON Lines (one
    ``{"run": ..., "calls": [...]}`` a line; to ``output``, or stdout) or Parquet (to ``output``: one row a
    run, its calls a list of structs); how many runs were written."""
    with contextlib.ExitStack() as stack:
        target: RunSink
        if fmt == "parquet":
            from .parquet import ParquetRuns  # pyarrow is optional: imported only when asked for

            if output is None:
                raise click.UsageError("--format parquet writes a file: give it with --output FILE")
            target = stack.enter_context(ParquetRuns(Path(output)))
        elif output is not None:
            target = _JsonLines(stack.enter_context(Path(output).open("w", encoding="utf-8")))
        else:
            target = _JsonLines(sys.stdout)
        advance = stack.enter_context(
            progress_bar(reader.count_runs(since=since, until=until), "exporting runs")
        )
        written = 0
        for run, calls in reader.iter_runs(since=since, until=until):
            target.write(run, calls)
            written += 1
            advance(1)
    return written


class RunSink(Protocol):
    def write(self, run: Run, calls: list[Call]) -> None: ...


class _JsonLines:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, run: Run, calls: list[Call]) -> None:
        line = json.dumps(_record(run, calls), default=_jsonable, ensure_ascii=False, separators=(",", ":"))
        self._stream.write(json_safe(line) + "\n")
