"""How the ledger and the ``agent-relay`` command behave on a large SQLite ledger (1,000,000 tool calls).

The ledger is created with the real schema by an ``AgentRuntime``, then filled fast with the plain
``sqlite3`` module: runs of 1,000 calls each, started one minute apart. The script then times, as medians
over repeats: ``agent-relay show`` of one 1,000-call run (text and ``--json``) and ``agent-relay runs``
as subprocesses, against the process-startup floor of ``agent-relay --version``; and, in process, the
queries behind them (``run_calls``, ``resolve_run_id``, ``LedgerStore.forward_calls``), with
``run_calls`` also timed on a one-run ledger of 1,000 calls to show whether a lookup stays flat as the
ledger grows. Every figure is checked for what it returned before it is reported.

Run from the repository root: ``python bench/bench_ledger_scale.py`` (see ``--help``). It writes
``bench/RESULTS_SCALE.md`` and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_overhead import machine_info  # same directory: the machine block of both reports

from agent_relay import AgentRuntime
from agent_relay.cli import main as cli_main
from agent_relay.cli import render
from agent_relay.ledger import LedgerStore
from agent_relay.query import Call, LedgerReader, Run

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS_SCALE.md"
CLI = Path(sys.executable).with_name("agent-relay")
CALLS_PER_RUN = 1000
SHOW_TARGET_S = 1.0
TOOLS = ("search_web", "fetch_page", "summarize", "create_ticket", "send_email")
EPOCH = dt.datetime(2026, 1, 1)
TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"  # how SQLAlchemy stores DateTime on SQLite
RUNS_PER_TRANSACTION = 50
IMPORT_CLI = "import agent_relay.cli"
RUNS_LIMIT = 1000

_RUN_SQL = """INSERT INTO agent_runs (run_id, name, status, mode, input_payload, output, cost_usd,
    cost_unknown, input_tokens, output_tokens, trace_id, span_id, owner, started_at, ended_at)
    VALUES (?, 'email_flow', 'succeeded', 'live', ?, ?, 0, 0, 0, 0, ?, ?, 'bench:1', ?, ?)"""
_CALL_SQL = """INSERT INTO tool_calls (call_id, run_id, seq, tool_name, phase, idempotency_key, arguments,
    output, status, cost_unknown, trace_id, span_id, started_at, ended_at, attempts, owner, origin)
    VALUES (?, ?, ?, ?, 'forward', ?, ?, ?, 'succeeded', 0, ?, ?, ?, ?, 1, 'bench:1', 'live')"""


# What the command reads, through the public read API (``agent_relay.query``), on the bench's store.
def resolve_run_id(store: LedgerStore, prefix: str) -> str:
    return LedgerReader(store).resolve(prefix)


def get_run(store: LedgerStore, run_id: str) -> Run:
    return LedgerReader(store).run(run_id)


def run_calls(store: LedgerStore, run_id: str) -> list[Call]:
    return LedgerReader(store).calls(run_id)


def list_runs(store: LedgerStore, *, limit: int) -> list[Run]:
    return LedgerReader(store).runs(limit=limit)


class BenchError(RuntimeError):
    """A command or query did not return what it is meant to (wrong rows, order, exit code...)."""


def _expect(what: str, got: object, want: object) -> None:
    if got != want:
        raise BenchError(f"{what}: expected {want!r}, got {got!r}")


# --- building the ledger ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ledger:
    path: Path
    run_ids: list[str]  # oldest first
    build_s: float

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    @property
    def calls(self) -> int:
        return len(self.run_ids) * CALLS_PER_RUN


def _ts(moment: dt.datetime) -> str:
    return moment.strftime(TS_FORMAT)


def _hex(rng: random.Random, digits: int) -> str:
    return f"{rng.getrandbits(digits * 4):0{digits}x}"


def _run_id(rng: random.Random) -> str:
    """A uuid4-shaped id (as sessions make), drawn from the seeded generator: prefixes spread out."""
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _run_row(k: int, run_id: str, rng: random.Random) -> tuple[object, ...]:
    start = EPOCH + dt.timedelta(minutes=k)
    end = start + dt.timedelta(milliseconds=10 * CALLS_PER_RUN + 5)
    payload, output = json.dumps({"run": k}), json.dumps({"sent": CALLS_PER_RUN})
    return (run_id, payload, output, _hex(rng, 32), _hex(rng, 16), _ts(start), _ts(end))


def _call_rows(k: int, run_id: str, rng: random.Random) -> Iterator[tuple[object, ...]]:
    start = EPOCH + dt.timedelta(minutes=k)
    for seq in range(1, CALLS_PER_RUN + 1):
        began = start + dt.timedelta(milliseconds=10 * seq)
        arguments = json.dumps({"to": f"user{seq}@example.com", "i": seq}, separators=(",", ":"))
        yield (
            _hex(rng, 32),
            run_id,
            seq,
            TOOLS[seq % len(TOOLS)],
            _hex(rng, 64),
            arguments,
            json.dumps(f"msg-{k}-{seq}"),
            _hex(rng, 32),
            _hex(rng, 16),
            _ts(began),
            _ts(began + dt.timedelta(milliseconds=4)),
        )


def _create_schema(path: Path) -> None:
    """The real tables, indexes and schema version, as the library makes them."""
    AgentRuntime(f"sqlite:///{path}").shutdown()


def build_ledger(path: Path, runs: int, seed: int = 1) -> Ledger:
    """``runs`` runs of ``CALLS_PER_RUN`` calls, run ``k`` started ``k`` minutes after ``EPOCH``."""
    start = time.perf_counter()
    _create_schema(path)
    rng = random.Random(seed)
    run_ids = [_run_id(rng) for _ in range(runs)]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")  # this connection only: the build, not the measurements
        conn.execute("PRAGMA cache_size=-262144")  # 256 MiB, so random-key index inserts stay in memory
        for first in range(0, runs, RUNS_PER_TRANSACTION):
            conn.execute("BEGIN")
            batch = range(first, min(first + RUNS_PER_TRANSACTION, runs))
            conn.executemany(_RUN_SQL, (_run_row(k, run_ids[k], rng) for k in batch))
            for k in batch:
                conn.executemany(_CALL_SQL, _call_rows(k, run_ids[k], rng))
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # no ANALYZE: the library never runs it
    finally:
        conn.close()
    ledger = Ledger(path, run_ids, time.perf_counter() - start)
    _check_counts(ledger)
    return ledger


def _check_counts(ledger: Ledger) -> None:
    conn = sqlite3.connect(ledger.path)
    try:
        runs = conn.execute("SELECT count(*) FROM agent_runs").fetchone()[0]
        calls = conn.execute("SELECT count(*) FROM tool_calls").fetchone()[0]
    finally:
        conn.close()
    _expect("ledger rows (runs, calls)", (runs, calls), (len(ledger.run_ids), ledger.calls))


# --- timing -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    label: str
    samples: list[float]  # seconds

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def range_ms(self) -> str:
        return f"{min(self.samples) * 1000:.1f}..{max(self.samples) * 1000:.1f}"


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def run_process(argv: Sequence[str], stdout: int | None = subprocess.DEVNULL) -> str:
    """Run ``argv``, stdout to /dev/null unless asked for; a non-zero exit is an error."""
    done = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise BenchError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout or ""


def cli_output(*args: str) -> str:
    return run_process([str(CLI), *args], stdout=subprocess.PIPE)


def time_process(label: str, argv: Sequence[str], repeats: int) -> Figure:
    print(f"  timing {label}", file=sys.stderr)
    return Figure(label, time_repeats(lambda: run_process(argv), repeats))


@contextlib.contextmanager
def stdout_to_devnull() -> Iterator[None]:
    with open(os.devnull, "w", encoding="utf-8") as devnull, contextlib.redirect_stdout(devnull):
        yield


# --- checks (untimed): each command and query returns what it should ---------------------------------------


def _seq(row: Any) -> int:
    return int(row["seq"] if isinstance(row, dict) else row.seq)


def _check_calls(what: str, rows: Sequence[Any], run_id: str) -> None:
    _expect(f"{what}: seq order", [_seq(row) for row in rows], list(range(1, CALLS_PER_RUN + 1)))
    if rows and isinstance(rows[0], dict):
        _expect(f"{what}: run ids", {row["run_id"] for row in rows}, {run_id})


def check_cli(ledger: Ledger, run_id: str) -> None:
    db = ("--db", ledger.url)
    shown = json.loads(cli_output(*db, "show", "--json", run_id))
    _expect("show --json: run", shown["run"]["run_id"], run_id)
    _check_calls("show --json", shown["calls"], run_id)
    tree = cli_output(*db, "show", run_id)
    # piped, `show` prints plain indented lines (a Rich tree only on a terminal): one "  #seq" line a call
    _expect("show: call lines", sum(line.startswith("  #") for line in tree.splitlines()), CALLS_PER_RUN)
    for limit in (20, RUNS_LIMIT):
        listed = json.loads(cli_output(*db, "runs", "--json", "--limit", str(limit)))
        newest_first = ledger.run_ids[::-1][:limit]
        _expect(f"runs --limit {limit}: newest first", [r["run_id"] for r in listed], newest_first)
        _expect(f"runs --limit {limit}: calls column", {r["calls"] for r in listed}, {CALLS_PER_RUN})
    _expect("runs: newest run listed", ledger.run_ids[-1] in cli_output(*db, "runs"), True)


def check_queries(store: LedgerStore, run_id: str) -> None:
    _check_calls("run_calls", run_calls(store, run_id), run_id)
    _check_calls("forward_calls", store.forward_calls(run_id), run_id)
    _expect("resolve_run_id(8-char prefix)", resolve_run_id(store, run_id[:8]), run_id)


# --- the measurements -------------------------------------------------------------------------------------


def measure_cli(ledger: Ledger, run_id: str, repeats: int) -> dict[str, Figure]:
    db = (str(CLI), "--db", ledger.url)
    cases = {
        "floor": ("`agent-relay --version` (process-startup floor)", (str(CLI), "--version")),
        "show": (f"`agent-relay show <run>` ({CALLS_PER_RUN} calls, text)", (*db, "show", run_id)),
        "show_json": (
            f"`agent-relay show --json <run>` ({CALLS_PER_RUN} calls)",
            (*db, "show", "--json", run_id),
        ),
        "runs": ("`agent-relay runs` (default limit 20)", (*db, "runs")),
        "runs_limit": (f"`agent-relay runs --limit {RUNS_LIMIT}`", (*db, "runs", "--limit", str(RUNS_LIMIT))),
    }
    return {key: time_process(label, argv, repeats) for key, (label, argv) in cases.items()}


def measure_queries(ledger: Ledger, run_id: str, repeats: int) -> dict[str, Figure]:
    store = LedgerStore(ledger.url)  # not opened: a reader, as the command is
    try:
        check_queries(store, run_id)
        cases: dict[str, tuple[str, Callable[[], object]]] = {
            "run_calls": (
                f"`run_calls(store, run_id)`, {CALLS_PER_RUN}-call run",
                lambda: run_calls(store, run_id),
            ),
            "resolve": (
                "`resolve_run_id(store, prefix)`, 8-char prefix",
                lambda: resolve_run_id(store, run_id[:8]),
            ),
            "forward_calls": (
                f"`LedgerStore.forward_calls(run_id)` (replay index), {CALLS_PER_RUN}-call run",
                lambda: store.forward_calls(run_id),
            ),
        }
        return {key: Figure(label, time_repeats(fn, repeats)) for key, (label, fn) in cases.items()}
    finally:
        store.dispose()


def measure_steps(ledger: Ledger, run_id: str, repeats: int, query_repeats: int) -> dict[str, Figure]:
    """Where ``show`` and ``runs --limit 1000`` spend their time: start-up, then reading and rendering."""
    python = sys.executable
    figures = {
        "python": time_process("`python -c pass` (interpreter alone)", (python, "-c", "pass"), repeats),
        "import": time_process("`python -c 'import agent_relay.cli'`", (python, "-c", IMPORT_CLI), repeats),
    }
    store = LedgerStore(ledger.url)

    def show_in_process() -> None:
        with stdout_to_devnull():
            _expect("show in process: exit code", cli_main(["--db", ledger.url, "show", run_id]), 0)

    def read_run() -> tuple[dict[str, Any], list[dict[str, Any]]]:  # (what agent-relay show renders)
        found = resolve_run_id(store, run_id)
        return dataclasses.asdict(get_run(store, found)), [
            dataclasses.asdict(c) for c in run_calls(store, found)
        ]

    record, calls = read_run()
    listed = [dataclasses.asdict(r) for r in list_runs(store, limit=RUNS_LIMIT)]

    def render_tree() -> None:
        with stdout_to_devnull():
            render.run_tree(record, calls, None)

    def render_runs() -> None:
        with stdout_to_devnull():
            render.runs_table(listed)

    runs = f"`runs --limit {RUNS_LIMIT}`"
    steps: dict[str, tuple[str, Callable[[], object]]] = {
        "show": ("`show` in process: `agent_relay.cli.main([...])`, stdout /dev/null", show_in_process),
        "show_read": ("`show`, reading: `resolve_run_id` + `get_run` + `run_calls`", read_run),
        "show_render": (f"`show`, rendering: `render.run_tree` (Rich tree, {len(calls)} calls)", render_tree),
        "runs_read": (
            f"{runs}, reading: `list_runs(limit={RUNS_LIMIT})`",
            lambda: list_runs(store, limit=RUNS_LIMIT),
        ),
        "runs_render": (
            f"{runs}, rendering: `render.runs_table` (Rich table, {len(listed)} rows)",
            render_runs,
        ),
    }
    try:
        figures |= {key: Figure(label, time_repeats(fn, query_repeats)) for key, (label, fn) in steps.items()}
    finally:
        store.dispose()
    return figures


def measure_flatness(small: Ledger, large: Ledger, repeats: int) -> tuple[Figure, Figure]:
    """``run_calls`` of a 1,000-call run on a one-run ledger and on the large one, in alternation."""
    stores = LedgerStore(small.url), LedgerStore(large.url)
    run_ids = small.run_ids[0], large.run_ids[len(large.run_ids) // 2]
    samples: tuple[list[float], list[float]] = ([], [])
    try:
        for store, run_id in zip(stores, run_ids, strict=True):
            check_queries(store, run_id)  # also the untimed first call of each store
        for _ in range(repeats):
            for store, run_id, out in zip(stores, run_ids, samples, strict=True):
                start = time.perf_counter()
                run_calls(store, run_id)
                out.append(time.perf_counter() - start)
    finally:
        for store in stores:
            store.dispose()
    return (
        Figure(f"{small.calls:,} calls ({len(small.run_ids)} run)", samples[0]),
        Figure(f"{large.calls:,} calls ({len(large.run_ids):,} runs)", samples[1]),
    )


# --- report -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Results:
    large: Ledger
    small: Ledger
    run_id: str
    cli: dict[str, Figure]
    queries: dict[str, Figure]
    steps: dict[str, Figure]
    flat: tuple[Figure, Figure]


def _cli_table(cli: dict[str, Figure]) -> str:
    floor = cli["floor"].median_ms
    lines = ["| Command | median ms | minus startup floor ms | min..max ms |", "|---|---:|---:|---:|"]
    for key, fig in cli.items():
        over = "" if key == "floor" else f"{fig.median_ms - floor:.1f}"
        lines.append(f"| {fig.label} | {fig.median_ms:.1f} | {over} | {fig.range_ms} |")
    return "\n".join(lines)


def _figures_table(figures: Sequence[Figure], head: str) -> str:
    lines = [f"| {head} | median ms | min..max ms |", "|---|---:|---:|"]
    lines += [f"| {fig.label} | {fig.median_ms:.2f} | {fig.range_ms} |" for fig in figures]
    return "\n".join(lines)


def headline(results: Results) -> str:
    show = results.cli["show"].median_ms / 1000
    verdict = "met" if show < SHOW_TARGET_S else "**not met**"
    small, large = results.flat
    return (
        f"`agent-relay show` of a {CALLS_PER_RUN:,}-call run on the {results.large.calls:,}-call ledger: "
        f"**{show:.2f} s** median wall time (target < {SHOW_TARGET_S:g} s: {verdict}); "
        f"`run_calls` on that ledger vs a {results.small.calls:,}-call one: "
        f"**{large.median_ms / small.median_ms:.2f}x** (target ~1x)."
    )


def _steps_summary(results: Results) -> str:
    ms = {key: fig.median_ms for key, fig in results.steps.items()}
    cli = {key: fig.median_ms for key, fig in results.cli.items()}
    imports = ms["import"] - ms["python"]
    return (
        f"The startup floor ({cli['floor']:.0f} ms) is mostly imports: `import agent_relay.cli` adds "
        f"{imports:.0f} ms to the bare interpreter's {ms['python']:.0f} ms. Above the floor, `show` spends "
        f"{ms['show_read']:.0f} ms reading and {ms['show_render']:.0f} ms rendering; "
        f"`runs --limit {RUNS_LIMIT}` spends {ms['runs_read']:.0f} ms reading and "
        f"{ms['runs_render']:.0f} ms rendering."
    )


def _ledger_block(ledger: Ledger, run_id: str) -> str:
    size_mb = ledger.path.stat().st_size / 1e6
    return (
        f"- {len(ledger.run_ids):,} runs x {CALLS_PER_RUN:,} calls = {ledger.calls:,} `tool_calls` rows, "
        f"{size_mb:,.0f} MB SQLite file (WAL, checkpointed); built in {ledger.build_s:.1f} s (not a target)\n"
        f"- run shown and queried: `{run_id}` (the middle run by start time)"
    )


def render_report(args: argparse.Namespace, results: Results) -> str:
    machine = "\n".join(f"- {name}: {value}" for name, value in _machine())
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    small, large = results.flat
    ratio = large.median_ms / small.median_ms
    return f"""# agent_relay ledger at scale (SQLite)

Generated {when} by `bench/bench_ledger_scale.py`.

{headline(results)}

## The ledger

{_ledger_block(results.large, results.run_id)}

Created by `AgentRuntime("sqlite:///...")` (the real tables, indexes and schema version), then filled
with the plain `sqlite3` module (`executemany`, {RUNS_PER_TRANSACTION} runs per transaction,
`synchronous=OFF` on the building connection only). Every run is `succeeded`, started one minute after
the previous one; each call has JSON arguments and output, trace and span ids, one of {len(TOOLS)} tool
names. A run's rows are contiguous in the table (no interleaving with concurrent runs). No `ANALYZE`
(the library never runs it). The file stays in the OS page cache: these are warm figures.

## The command

Wall time of `agent-relay ...` as a subprocess, stdout to /dev/null: median of {args.repeats} repeats
after one untimed run. The startup floor is `agent-relay --version` (interpreter, imports, Click).

{_cli_table(results.cli)}

## Queries, in process

`store = LedgerStore(url)` (not opened), median of {args.query_repeats} calls after one untimed call.

{_figures_table(list(results.queries.values()), "Query")}

## Lookup flatness

`run_calls` of a {CALLS_PER_RUN:,}-call run on a one-run ledger and on the large ledger, timed in
alternation ({args.query_repeats} each): **{ratio:.2f}x**.

{_figures_table(list(results.flat), "Ledger")}

## Where the time goes

Subprocess rows (the first two): {args.repeats} repeats; in-process rows: {args.query_repeats}.

{_figures_table(list(results.steps.values()), "Step")}

{_steps_summary(results)}

## Checks

Before timing, the script checks what each command and query returns: `show --json` has the run and its
{CALLS_PER_RUN:,} calls in `seq` order, the text tree has {CALLS_PER_RUN:,} call nodes, `runs --json`
(limits 20 and 1000) lists exactly the newest runs newest first with 1,000 calls each, `runs` lists the
newest run, `run_calls` and `forward_calls` return the {CALLS_PER_RUN:,} calls in order, and the 8-char
prefix resolves to the run. Row counts are checked after the build.

## Machine

{machine}

## Reproduce

From the repository root:

```
{reproduce_command(args)}
```
"""


def _machine() -> list[tuple[str, str]]:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())  # other work on the machine shows up as noise
    return [
        *machine_info(),
        ("click", metadata.version("click")),
        ("rich", metadata.version("rich")),
        ("load average (1, 5, 15 min) when the report was written", load),
    ]


def reproduce_command(args: argparse.Namespace) -> str:
    command = (
        f"python bench/bench_ledger_scale.py --calls {args.calls} --repeats {args.repeats} "
        f"--query-repeats {args.query_repeats}"
    )
    if args.out.resolve() != DEFAULT_OUT:
        command += f" --out {args.out}"
    return command


# --- main -------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> Results:
    runs = args.calls // CALLS_PER_RUN
    print(f"building a ledger of {runs:,} runs x {CALLS_PER_RUN:,} calls", file=sys.stderr)
    large = build_ledger(workdir / "large.db", runs)
    print(f"  built in {large.build_s:.1f} s", file=sys.stderr)
    small = build_ledger(workdir / "small.db", 1, seed=2)
    run_id = large.run_ids[runs // 2]
    check_cli(large, run_id)
    return Results(
        large=large,
        small=small,
        run_id=run_id,
        cli=measure_cli(large, run_id, args.repeats),
        queries=measure_queries(large, run_id, args.query_repeats),
        steps=measure_steps(large, run_id, args.repeats, args.query_repeats),
        flat=measure_flatness(small, large, args.query_repeats),
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--calls", type=int, default=1_000_000, help="tool_calls rows, a multiple of 1000 (1000000)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="repeats of each subprocess (7)")
    parser.add_argument("--query-repeats", type=int, default=25, help="repeats of each in-process call (25)")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="markdown report (bench/RESULTS_SCALE.md)"
    )
    args = parser.parse_args(argv)
    if args.calls < CALLS_PER_RUN or args.calls % CALLS_PER_RUN:
        parser.error(f"--calls must be a positive multiple of {CALLS_PER_RUN}")
    if args.repeats < 1 or args.query_repeats < 1:
        parser.error("--repeats and --query-repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-ledger-scale-") as tmp:
        results = run(args, Path(tmp))
        report = render_report(args, results)  # reads the ledger's file size: before the directory goes
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
