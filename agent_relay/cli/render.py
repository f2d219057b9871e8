"""Terminal output: Rich tables and trees on a terminal, plain text when piped.

Every value read from the ledger goes through ``_field`` (control characters shown as escapes, Rich
markup escaped): nothing a run recorded can style the output, move the cursor or forge a line.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from ..states import CallStatus, RunStatus
from .diff import Pair
from .text import printable

T = TypeVar("T")

_STATUS_STYLE: dict[str, str] = {
    CallStatus.SUCCEEDED: "green",
    CallStatus.FAILED: "red",
    CallStatus.PENDING: "yellow",
    RunStatus.RUNNING: "yellow",
    RunStatus.COMPENSATED: "magenta",
    RunStatus.COMPENSATION_FAILED: "bold red",
}


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Stdout was closed early (``| head``): stop writing and let the command's caller end quietly
        (Rich's own handler would exit with status 1)."""
        self.quiet = True
        raise BrokenPipeError


def _console() -> Console:
    console = _Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:  # piped: never squeeze columns to 80 characters
        console = _Console(highlight=False, soft_wrap=False, width=100_000)
    return console


def _box(console: Console) -> box.Box | None:
    return box.SIMPLE_HEAD if console.is_terminal else None


def _field(value: Any) -> str:
    """A ledger value as Rich markup that prints it as it is, control characters escaped."""
    return escape(printable(value))


def _status(value: str | None) -> str:
    return f"[{_STATUS_STYLE.get(value or '', 'white')}]{_field(value)}[/]"


def _money(value: Any, unknown: bool = False) -> str:
    """Dollars, trailing zeros cut; ``unknown`` (some usage unpriced) makes it a lower bound: ``$0.05+``."""
    text = "" if value is None else f"${value:f}".rstrip("0").rstrip(".") if value else "$0"
    return (text or "$0") + "+" if unknown else text


def _duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _short_json(value: Any, limit: int = 60) -> str:
    """Compact JSON, cut to ``limit``, escaped for Rich markup (user data must not style the output)."""
    if value is None:
        return ""
    text = printable(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def _plain(markup: str) -> str:
    return Text.from_markup(markup).plain


def _table(
    console: Console, headers: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: tuple[str, ...] = ()
) -> None:
    """A Rich table on a terminal; plain aligned columns when piped (Rich's layout costs ~1 ms a row)."""
    if console.is_terminal:
        table = Table(box=_box(console), show_edge=False, pad_edge=False)
        for col in headers:
            table.add_column(col, justify="right" if col in right else "left", no_wrap=col != "difference")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    plain = [headers, *[tuple(_plain(cell) for cell in row) for row in rows]]
    widths = [max(len(r[i]) for r in plain) for i in range(len(headers))]
    lines = [
        "  ".join(
            cell.rjust(w) if headers[i] in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        ).rstrip()
        for r in plain
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def runs_table(rows: list[dict[str, Any]]) -> None:
    console = _console()
    headers = ("run", "name", "status", "mode", "calls", "cost", "tokens in/out", "started", "duration")
    body = []
    for r in rows:
        body.append(
            (
                _field(r["run_id"]),
                _field(r["name"]),
                _status(r["status"]),
                _field(r["mode"]),
                str(r["calls"]),
                _money(r["cost_usd"], bool(r["cost_unknown"])),
                f"{r['input_tokens']}/{r['output_tokens']}",
                _when(r["started_at"]),
                _duration(r["started_at"], r["ended_at"]),
            )
        )
    _table(console, headers, body, right=("calls", "cost"))
    if not rows:
        console.print("no runs")


def run_tree(run: dict[str, Any], calls: list[dict[str, Any]], trace_link: str | None) -> None:
    console = _console()
    title = (
        f"run {_field(run['run_id'])}  {_field(run['name'])}  {_status(run['status'])}"
        f"  mode {_field(run['mode'])}"
        + (f" of {_field(run['replay_of'])}" if run["replay_of"] else "")
        + (f" (first {run['fork_after']} replayed)" if run["fork_after"] is not None else "")
    )
    nodes: list[tuple[str, list[str]]] = []
    for call in calls:
        label = (
            f"#{call['seq']} {_field(call['tool_name'])}  {_field(call['phase'])}  {_status(call['status'])}"
            f"  {_field(call['origin'])}"
        )
        if call["attempts"] > 1:
            label += f"  attempts {call['attempts']}"
        if call["cost_usd"] is not None or call["cost_unknown"]:
            label += f"  {_money(call['cost_usd'], bool(call['cost_unknown']))}"
        label += f"  {_duration(call['started_at'], call['ended_at'])}"
        children = [f"args {_short_json(call['arguments'], 100)}"]
        if call["status"] == CallStatus.SUCCEEDED:
            children.append(f"output {_short_json(call['output'], 100)}")
        elif call["error_type"]:
            error = (call["error_message"] or "").splitlines()[0][:200] if call["error_message"] else ""
            children.append(f"[red]error {_field(call['error_type'] + ': ' + error)}[/]")
        for attempt in call.get("history", ()):
            if not attempt["latest"]:  # an earlier try a later one replaced on the row
                children.append(_earlier_attempt(attempt))
        nodes.append((label, children))
    if console.is_terminal:
        tree = Tree(title)
        for label, children in nodes:
            node = tree.add(label)
            for child in children:
                node.add(child)
        console.print(tree)
    else:  # piped: plain indented lines (Rich's tree layout costs ~0.4 ms a call)
        lines = [_plain(title)]
        for label, children in nodes:
            lines.append("  " + _plain(label))
            lines.extend("      " + _plain(child) for child in children)
        sys.stdout.write("\n".join(lines) + "\n")
    cost = _money(run["cost_usd"], bool(run["cost_unknown"])) + (
        " (at least: some usage unpriced)" if run["cost_unknown"] else ""
    )
    console.print(
        f"calls {len(calls)}  cost {cost}  tokens {run['input_tokens']} in / {run['output_tokens']} out"
        f"  started {_when(run['started_at'])}  took {_duration(run['started_at'], run['ended_at'])}"
    )
    console.print(f"input  {_short_json(run['input_payload'], 200)}")
    console.print(f"output {_short_json(run['output'], 200)}")
    if run["error_type"]:
        message = (run["error_message"] or "").splitlines()[0][:300] if run["error_message"] else ""
        console.print(f"[red]error  {_field(run['error_type'] + ': ' + message)}[/]")
    if run["trace_id"]:
        console.print(f"trace  {_field(trace_link or run['trace_id'])}")


def _earlier_attempt(attempt: dict[str, Any]) -> str:
    message = (attempt["error_message"] or "").splitlines()[0][:200] if attempt["error_message"] else ""
    error = f" {attempt['error_type']}: {message}" if attempt["error_type"] else ""
    when = _duration(attempt["started_at"], attempt["ended_at"])
    text = f"attempt {attempt['attempt']} {attempt['status']}{error}" + (f"  {when}" if when else "")
    return f"[red]{_field(text)}[/]"


_KIND_TEXT = {
    "same": "same",
    "output": "different output",
    "arguments": "different arguments",
    "call": "different call",
    "only_a": "only in A",
    "only_b": "only in B",
}


def diff_table(run_a: str, run_b: str, pairs: list[Pair], first: int | None) -> None:
    console = _console()
    body = []
    for i, p in enumerate(pairs):
        a = _field(f"{p.a['tool_name']} #{p.a['seq']}") if p.a else ""
        b = _field(f"{p.b['tool_name']} #{p.b['seq']}") if p.b else ""
        kind = "same" if p.kind == "same" else f"[yellow]{_KIND_TEXT[p.kind]}[/]"
        body.append((str(i + 1), a, b, kind, _field(p.detail)))
    console.print(f"A {_field(run_a)}\nB {_field(run_b)}")
    _table(console, ("#", "A", "B", "", "difference"), body)
    if first is None:
        console.print("the runs made the same calls with the same results")
    else:
        p = pairs[first]
        tool = (p.b or p.a or {}).get("tool_name")
        console.print(
            _field(
                f"first difference at call {first + 1} ({tool}): {_KIND_TEXT[p.kind]}"
                + (f": {p.detail}" if p.detail else "")
            )
        )


def progress(items: Iterable[T], total: int, label: str) -> Iterator[T]:
    """Iterate with a progress bar on a terminal (silently otherwise)."""
    console = Console(stderr=True)
    if not console.is_terminal or total < 200:
        yield from items
        return
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item in items:
            yield item
            bar.advance(task)
