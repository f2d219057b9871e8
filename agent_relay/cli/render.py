"""Terminal output: Rich tables and trees on a terminal, plain text when piped."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from rich import box
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from rich.tree import Tree

from .diff import Pair

T = TypeVar("T")

_STATUS_STYLE = {
    "succeeded": "green", "failed": "red", "pending": "yellow", "running": "yellow",
    "compensated": "magenta", "compensation_failed": "bold red",
}  # fmt: skip


def _console() -> Console:
    console = Console(highlight=False, soft_wrap=False)
    if not console.is_terminal:  # piped: never squeeze columns to 80 characters
        console = Console(highlight=False, soft_wrap=False, width=100_000)
    return console


def _box(console: Console) -> box.Box | None:
    return box.SIMPLE_HEAD if console.is_terminal else None


def _status(value: str | None) -> str:
    return f"[{_STATUS_STYLE.get(value or '', 'white')}]{value}[/]"


def _money(value: Any) -> str:
    return "" if value is None else f"${value:f}".rstrip("0").rstrip(".") if value else "$0"


def _duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return ""
    seconds = (end - start).total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"


def _when(value: dt.datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def _short_json(value: Any, limit: int = 60) -> str:
    if value is None:
        return ""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def runs_table(rows: list[dict[str, Any]]) -> None:
    console = _console()
    table = Table(box=_box(console), show_edge=False, pad_edge=False)
    for col in ("run", "name", "status", "mode", "calls", "cost", "tokens in/out", "started", "duration"):
        table.add_column(col, justify="right" if col in ("calls", "cost") else "left", no_wrap=True)
    for r in rows:
        table.add_row(
            r["run_id"],
            r["name"],
            _status(r["status"]),
            r["mode"],
            str(r["calls"]),
            _money(r["cost_usd"]),
            f"{r['input_tokens']}/{r['output_tokens']}",
            _when(r["started_at"]),
            _duration(r["started_at"], r["ended_at"]),
        )
    console.print(table)
    if not rows:
        console.print("no runs")


def run_tree(run: dict[str, Any], calls: list[dict[str, Any]], trace_link: str | None) -> None:
    console = _console()
    title = (
        f"run {run['run_id']}  {run['name']}  {_status(run['status'])}  mode {run['mode']}"
        + (f" of {run['replay_of']}" if run["replay_of"] else "")
        + (f" (first {run['fork_after']} replayed)" if run["fork_after"] is not None else "")
    )
    tree = Tree(title)
    for call in calls:
        label = (
            f"#{call['seq']} {call['tool_name']}  {call['phase']}  {_status(call['status'])}"
            f"  {call['origin']}"
        )
        if call["attempts"] > 1:
            label += f"  attempts {call['attempts']}"
        if call["cost_usd"] is not None:
            label += f"  {_money(call['cost_usd'])}"
        label += f"  {_duration(call['started_at'], call['ended_at'])}"
        node = tree.add(label)
        node.add(f"args {_short_json(call['arguments'], 100)}")
        if call["status"] == "succeeded":
            node.add(f"output {_short_json(call['output'], 100)}")
        elif call["error_type"]:
            node.add(
                f"[red]error {call['error_type']}: {(call['error_message'] or '').splitlines()[0][:200]}[/]"
            )
    console.print(tree)
    cost = _money(run["cost_usd"]) + (" (some usage unpriced)" if run["cost_unknown"] else "")
    console.print(
        f"calls {len(calls)}  cost {cost}  tokens {run['input_tokens']} in / {run['output_tokens']} out"
        f"  started {_when(run['started_at'])}  took {_duration(run['started_at'], run['ended_at'])}"
    )
    console.print(f"input  {_short_json(run['input_payload'], 200)}")
    console.print(f"output {_short_json(run['output'], 200)}")
    if run["error_type"]:
        console.print(
            f"[red]error  {run['error_type']}: {(run['error_message'] or '').splitlines()[0][:300]}[/]"
        )
    if run["trace_id"]:
        console.print(f"trace  {trace_link or run['trace_id']}")


_KIND_TEXT = {
    "same": "same", "output": "different output", "arguments": "different arguments",
    "call": "different call", "only_a": "only in A", "only_b": "only in B",
}  # fmt: skip


def diff_table(run_a: str, run_b: str, pairs: list[Pair], first: int | None) -> None:
    console = _console()
    table = Table(box=_box(console), show_edge=False, pad_edge=False)
    for col in ("#", "A", "B", "", "difference"):
        table.add_column(col, no_wrap=col != "difference")
    for i, p in enumerate(pairs):
        a = f"{p.a['tool_name']} #{p.a['seq']}" if p.a else ""
        b = f"{p.b['tool_name']} #{p.b['seq']}" if p.b else ""
        style = "" if p.kind == "same" else "yellow"
        table.add_row(str(i + 1), a, b, f"[{style}]{_KIND_TEXT[p.kind]}[/]" if style else "same", p.detail)
    console.print(f"A {run_a}\nB {run_b}")
    console.print(table)
    if first is None:
        console.print("the runs made the same calls with the same results")
    else:
        p = pairs[first]
        tool = (p.b or p.a or {}).get("tool_name")
        console.print(
            f"first difference at call {first + 1} ({tool}): {_KIND_TEXT[p.kind]}"
            + (f": {p.detail}" if p.detail else "")
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
