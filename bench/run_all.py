"""Run every benchmark and write bench/RESULTS.md: the headline targets, then each report in full.

Runs, in this order and each as its own process (so one's imports and threads cannot colour another's
timings): ``bench_overhead.py`` (per-call overhead against the floor, durability modes),
``bench_compare.py`` (DBOS and LangGraph side by side, parallel async calls, threads, memory; run in
``bench/.venv``, created with ``--setup`` when missing), ``bench_ledger_scale.py`` (a 1,000,000-call
ledger) and ``bench_workers.py`` (SQLite and PostgreSQL with 1, 4 and 8 worker processes; PostgreSQL
against pgbench, and threads and async calls in one process). Each writes its
own report next to this file; RESULTS.md gathers them.

From the repository root: ``python bench/run_all.py`` (about 15 minutes on a 2-core machine). ``--quick``
runs every case once with tiny sizes (what the test suite's smoke test does) and writes to ``--out-dir``.
``--no-venv`` measures agent_relay's own cases only: ``bench_compare.py`` runs in this interpreter, without
DBOS and LangGraph, and ``bench/.venv`` is neither used nor created (nothing is installed).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def _steps(
    quick: bool, out_dir: Path, pg_url: str | None, no_venv: bool = False
) -> list[tuple[str, list[str], Path]]:
    """(title, arguments, report) of each benchmark: full sizes, or ``quick`` ones that only prove it runs;
    ``no_venv``: the comparison without bench/.venv (DBOS and LangGraph not measured)."""
    overhead = ["--calls", "30", "--repeats", "1", "--durability-calls", "10"] if quick else []
    compare = (
        ["--calls", "20", "--repeats", "1", "--thread-calls", "16", "--memory-calls", "200"] if quick else []
    )
    scale = ["--calls", "2000", "--repeats", "1", "--query-repeats", "1"] if quick else []
    workers = (
        ["--calls-per-worker", "10", "--repeats", "1", "--in-process-calls", "40", "--pgbench-seconds", "1"]
        if quick
        else []
    )
    if pg_url:
        workers += ["--pg-url", pg_url]
    compare += ["--overhead-report", str(out_dir / "RESULTS_OVERHEAD.md")]
    if no_venv:
        compare.append("--no-venv")
    elif not (BENCH_DIR / ".venv" / "bin" / "python").exists():
        compare.append("--setup")
    return [
        (
            "Per-call overhead and durability modes",
            ["bench_overhead.py", *overhead],
            out_dir / "RESULTS_OVERHEAD.md",
        ),
        (
            "Side by side: DBOS, LangGraph; async, threads, memory",
            ["bench_compare.py", *compare],
            out_dir / "RESULTS_COMPARE.md",
        ),
        ("A ledger of 1,000,000 calls", ["bench_ledger_scale.py", *scale], out_dir / "RESULTS_SCALE.md"),
        (
            "Worker processes on SQLite and PostgreSQL",
            ["bench_workers.py", *workers],
            out_dir / "RESULTS_WORKERS.md",
        ),
    ]


def _demote(markdown: str) -> str:
    """A report's headings one level down, its first line (its title) dropped: a section of RESULTS.md."""
    lines = markdown.splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    out, fenced = [], False
    for line in lines:
        if line.startswith("```"):
            fenced = not fenced
        out.append("#" + line if not fenced and re.match(r"#{1,5} ", line) else line)
    return "\n".join(out).strip()


def _targets(compare_report: str) -> str:
    """The targets table bench_compare.py writes (it reads the overhead report's figures too)."""
    match = re.search(r"^## Targets\n(.*?)(?=^## )", compare_report, flags=re.S | re.M)
    return match.group(1).strip() if match else "(bench_compare.py wrote no targets table)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="every case once, tiny sizes (a smoke test)")
    parser.add_argument("--out-dir", type=Path, default=BENCH_DIR, help="where the reports go (bench/)")
    parser.add_argument(
        "--pg-url", default=None, help="PostgreSQL for bench_workers.py (its default if unset)"
    )
    parser.add_argument(
        "--no-venv",
        action="store_true",
        help="agent_relay's cases only: no bench/.venv, so no DBOS or LangGraph (and nothing installed)",
    )
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    sections, took = [], []
    steps = _steps(args.quick, args.out_dir, args.pg_url, args.no_venv)
    for title, step, report in steps:
        command = [sys.executable, str(BENCH_DIR / step[0]), *step[1:], "--out", str(report)]
        print(f"== {title}: {shlex.join(command)}", file=sys.stderr, flush=True)
        start = time.monotonic()
        subprocess.run(command, cwd=REPO_ROOT, check=True)
        took.append(f"{step[0]} {time.monotonic() - start:.0f} s")
        sections.append((title, step, report.read_text(encoding="utf-8")))
    compare = next(text for _, step, text in sections if step[0] == "bench_compare.py")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = (
        "python bench/run_all.py"
        + (" --quick" if args.quick else "")
        + (" --no-venv" if args.no_venv else "")
    )
    body = [
        "# agent_relay benchmarks",
        "",
        f"Generated {when} by `{command}` (from the repository root; it ran {', '.join(took)}). Every figure",
        "is a median over repeats taken in one run, and the headline is its ratio to a floor measured in the",
        "same run: absolute times drift between machines and runs. Each section below is one script's",
        "report, also written on its own next to this file with its own reproduction command.",
        "",
        "## Targets",
        "",
        _targets(compare),
    ]
    for (title, step, text), (_, _, report) in zip(sections, steps, strict=True):
        body += ["", f"## {title}", "", f"`bench/{step[0]}`, its report `{report.name}`:", "", _demote(text)]
    out = args.out_dir / "RESULTS.md"
    out.write_text("\n".join(body).rstrip() + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
