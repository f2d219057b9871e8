"""Per-call overhead of an agent_relay tool call, against the floor of doing the same work by hand.

The floor is what a durable, traced tool call cannot avoid: one OpenTelemetry SDK span, plus a pending row
INSERTed and committed, then UPDATEd to its outcome and committed, with the plain ``sqlite3`` module on a
WAL database (``synchronous=NORMAL``, the ledger's defaults). Every other case is reported in absolute
microseconds and as a ratio to that floor, measured in the same process and the same repeats; the ratio
is the headline, because absolute times drift from machine to machine and run to run.

Run from the repository root: ``python bench/bench_overhead.py`` (see ``--help``). It writes
``bench/RESULTS_OVERHEAD.md`` and prints the tables (``bench/run_all.py`` gathers it into ``RESULTS.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import gc
import hashlib
import json
import os
import platform
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

import sqlalchemy
from opentelemetry.sdk.trace import TracerProvider

import agent_relay
from agent_relay import AgentRuntime, LedgerOptions, tool
from agent_relay.ledger.records import Held
from agent_relay.ledger.sqlite_calls import SqliteCalls

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS_OVERHEAD.md"
REPO_ROOT = Path(__file__).resolve().parent.parent

# A case sets itself up in a fresh directory, warms up, times ``calls`` tool calls and checks what it
# recorded; it returns the nanoseconds the timed calls took (set-up, warm-up and checks excluded).
CaseFn = Callable[[int, int, Path], int]


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    run: CaseFn


class BenchError(RuntimeError):
    """A case did not do what it is meant to measure (wrong row count, body ran too often...)."""


# --- the floor: an SDK span + raw sqlite3 ---------------------------------------------------------------

_FLOOR_SCHEMA = """
CREATE TABLE tool_calls (
    call_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    tool_name TEXT NOT NULL,
    phase TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    arguments TEXT,
    output TEXT,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    UNIQUE (run_id, phase, idempotency_key)
);
CREATE INDEX ix_tool_calls_run_seq ON tool_calls (run_id, seq);
CREATE INDEX ix_tool_calls_tool_started_at ON tool_calls (tool_name, started_at);
"""

_INSERT = (
    "INSERT INTO tool_calls (call_id, run_id, seq, tool_name, phase, idempotency_key, arguments, status, "
    "started_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)"
)
_UPDATE = "UPDATE tool_calls SET status = 'succeeded', output = ?, ended_at = ? WHERE call_id = ?"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


_INSERT_DONE = (
    "INSERT INTO tool_calls (call_id, run_id, seq, tool_name, phase, idempotency_key, arguments, output, "
    "status, started_at, ended_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'succeeded', ?, ?)"
)


def _open_floor_db(path: Path, synchronous: str = "NORMAL") -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: transactions are explicit below
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.executescript(_FLOOR_SCHEMA)
    return conn


def run_floor(
    calls: int, warmup: int, workdir: Path, *, synchronous: str = "NORMAL", commits: int = 2
) -> int:
    """The floor: a span around a pending INSERT and a completing UPDATE, each committed; with
    ``commits=1``, around one INSERT of the finished row (the floor of durability ``outcome``)."""
    provider = TracerProvider()  # no span processors, no exporters
    tracer = provider.get_tracer("bench")
    conn = _open_floor_db(workdir / "floor.db", synchronous)
    run_id = str(uuid.uuid4())

    def one_call(seq: int, to: str) -> None:
        span = tracer.start_span(
            "execute_tool send_email",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "send_email",
                "gen_ai.tool.type": "function",
                "gen_ai.tool.call.id": str(seq),
            },
        )
        arguments = json.dumps({"to": to, "subject": "Hello", "body": "Hi"}, separators=(",", ":"))
        key = hashlib.sha256(arguments.encode()).hexdigest()
        call_id = uuid.uuid4().hex
        if commits == 1:
            started = _now_iso()
            output = json.dumps("msg-1")  # the tool body's result
            conn.execute("BEGIN IMMEDIATE")
            row = (call_id, run_id, seq, "send_email", "forward", key, arguments, output, started, _now_iso())
            conn.execute(_INSERT_DONE, row)
            conn.execute("COMMIT")
            span.end()
            return
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_INSERT, (call_id, run_id, seq, "send_email", "forward", key, arguments, _now_iso()))
        conn.execute("COMMIT")
        output = json.dumps("msg-1")  # the tool body's result
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_UPDATE, (output, _now_iso(), call_id))
        conn.execute("COMMIT")
        span.end()

    try:
        for i in range(warmup):
            one_call(i, f"warm{i}@example.com")
        start = time.perf_counter_ns()
        for i in range(calls):
            one_call(warmup + i, f"user{i}@example.com")
        elapsed = time.perf_counter_ns() - start
        done = conn.execute("SELECT count(*) FROM tool_calls WHERE status = 'succeeded'").fetchone()[0]
    finally:
        conn.close()
        provider.shutdown()
    _expect("floor rows", done, warmup + calls)
    return elapsed


# --- agent_relay cases ------------------------------------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.n = 0


def _runtime_with_tool(
    workdir: Path, *, durability: str = "strict", synchronous: str = "NORMAL", without: Sequence[str] = ()
) -> tuple[AgentRuntime, Callable[..., str], _Counter]:
    runtime = AgentRuntime(  # own TracerProvider, no exporters
        f"sqlite:///{workdir}/ledger.db",
        durability=durability,
        ledger_options=LedgerOptions(sqlite_synchronous=synchronous),
    )
    if without:  # the schema is made: drop those indexes (the runtime's statements prepare again)
        conn = sqlite3.connect(workdir / "ledger.db")
        try:
            for index in without:
                conn.execute(f"DROP INDEX {index}")
            conn.commit()
        finally:
            conn.close()
    ran = _Counter()

    @tool(runtime, name="send_email")
    def send_email(to: str, subject: str, body: str) -> str:
        ran.n += 1
        return "msg-1"

    return runtime, send_email, ran


def _ledger_counts(workdir: Path) -> tuple[int, int]:
    """(all tool_calls rows, succeeded rows) in the ledger, read after the runtime shut down."""
    conn = sqlite3.connect(workdir / "ledger.db")
    try:
        total, succeeded = conn.execute(
            "SELECT count(*), coalesce(sum(status = 'succeeded'), 0) FROM tool_calls"
        ).fetchone()
    finally:
        conn.close()
    return int(total), int(succeeded)


def run_live(
    calls: int,
    warmup: int,
    workdir: Path,
    *,
    durability: str = "strict",
    synchronous: str = "NORMAL",
    without: Sequence[str] = (),
) -> int:
    runtime, send_email, ran = _runtime_with_tool(
        workdir, durability=durability, synchronous=synchronous, without=without
    )
    try:
        with runtime.agent_session(name="bench"):
            for i in range(warmup):
                send_email(to=f"warm{i}@example.com", subject="Hello", body="Hi")
            start = time.perf_counter_ns()
            for i in range(calls):  # distinct arguments: every call is live (claim + complete)
                send_email(to=f"user{i}@example.com", subject="Hello", body="Hi")
            elapsed = time.perf_counter_ns() - start
    finally:
        runtime.shutdown()
    _expect("live: tool body runs", ran.n, warmup + calls)
    _expect("live: succeeded rows", _ledger_counts(workdir), (warmup + calls, warmup + calls))
    return elapsed


def run_dedup(calls: int, warmup: int, workdir: Path) -> int:
    runtime, send_email, ran = _runtime_with_tool(workdir)
    try:
        with runtime.agent_session(name="bench"):
            for _ in range(1 + warmup):  # the first call is live; the rest are served
                send_email(to="user@example.com", subject="Hello", body="Hi")
            start = time.perf_counter_ns()
            for _ in range(calls):
                result = send_email(to="user@example.com", subject="Hello", body="Hi")
            elapsed = time.perf_counter_ns() - start
    finally:
        runtime.shutdown()
    _expect("dedup: served result", result, "msg-1")
    _expect("dedup: tool body runs", ran.n, 1)
    _expect("dedup: rows", _ledger_counts(workdir), (1, 1))
    return elapsed


def _replayed_rows(runtime: AgentRuntime, run_id: str) -> int:
    """Rows of ``run_id`` served from its source run (origin ``replayed``), read through the ledger."""
    query = sqlalchemy.text("SELECT count(*) FROM tool_calls WHERE run_id = :run_id AND origin = 'replayed'")
    with runtime.ledger.engine.connect() as conn:
        return int(conn.execute(query, {"run_id": run_id}).scalar_one())


def run_replay(calls: int, warmup: int, workdir: Path) -> int:
    runtime, send_email, ran = _runtime_with_tool(workdir)
    addresses = [f"warm{i}@example.com" for i in range(warmup)]
    addresses += [f"user{i}@example.com" for i in range(calls)]
    try:
        with runtime.agent_session(name="bench") as source:  # recorded live, untimed
            for to in addresses:
                send_email(to=to, subject="Hello", body="Hi")
        recorded = ran.n
        with runtime.agent_session(name="bench", replay=True, replay_run_id=source.run_id) as replay:
            for to in addresses[:warmup]:
                send_email(to=to, subject="Hello", body="Hi")
            start = time.perf_counter_ns()
            for to in addresses[warmup:]:  # every call served from the source run's ledger rows
                result = send_email(to=to, subject="Hello", body="Hi")
        # timed until the session has ended: then every served row is written (see the report's text)
        elapsed = time.perf_counter_ns() - start
        replayed = _replayed_rows(runtime, replay.run_id)
    finally:
        runtime.shutdown()
    _expect("replay: source tool body runs", recorded, warmup + calls)
    _expect("replay: tool body runs during the replay", ran.n - recorded, 0)
    _expect("replay: served result", result, "msg-1")
    _expect("replay: replayed rows", replayed, warmup + calls)
    both_runs = 2 * (warmup + calls)
    _expect("replay: succeeded rows (source + replay)", _ledger_counts(workdir), (both_runs, both_runs))
    return elapsed


def run_plain(calls: int, warmup: int, workdir: Path) -> int:
    runtime, send_email, ran = _runtime_with_tool(workdir)
    try:
        for i in range(warmup):
            send_email(to=f"warm{i}@example.com", subject="Hello", body="Hi")
        start = time.perf_counter_ns()
        for i in range(calls):  # outside any session: a span, no ledger row
            send_email(to=f"user{i}@example.com", subject="Hello", body="Hi")
        elapsed = time.perf_counter_ns() - start
    finally:
        runtime.shutdown()
    _expect("plain: tool body runs", ran.n, warmup + calls)
    _expect("plain: rows", _ledger_counts(workdir), (0, 0))
    return elapsed


# --- where a live call's time goes -------------------------------------------------------------------------


def run_span_only(calls: int, warmup: int, workdir: Path) -> int:
    """The floor's span alone: an SDK span with 4 attributes, started and ended."""
    provider = TracerProvider()
    tracer = provider.get_tracer("bench")
    attributes = {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "send_email",
        "gen_ai.tool.type": "function",
    }
    try:
        for i in range(warmup):
            tracer.start_span("execute_tool send_email", attributes={**attributes, "n": i}).end()
        start = time.perf_counter_ns()
        for i in range(calls):
            tracer.start_span("execute_tool send_email", attributes={**attributes, "n": i}).end()
        return time.perf_counter_ns() - start
    finally:
        provider.shutdown()


def run_commits_only(calls: int, warmup: int, workdir: Path, *, commits: int = 2) -> int:
    """The floor's SQLite work alone (no span): its INSERT (and UPDATE), each committed."""
    conn = _open_floor_db(workdir / "floor.db")
    run_id = str(uuid.uuid4())
    stamp = _now_iso()
    try:

        def one(seq: int) -> None:
            call_id = uuid.uuid4().hex
            conn.execute("BEGIN IMMEDIATE")
            if commits == 1:
                row = (call_id, run_id, seq, "send_email", "forward", call_id * 2, "{}", '"m"', stamp, stamp)
                conn.execute(_INSERT_DONE, row)
                conn.execute("COMMIT")
                return
            conn.execute(_INSERT, (call_id, run_id, seq, "send_email", "forward", call_id * 2, "{}", stamp))
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(_UPDATE, ('"m"', stamp, call_id))
            conn.execute("COMMIT")

        for i in range(warmup):
            one(i)
        start = time.perf_counter_ns()
        for i in range(calls):
            one(warmup + i)
        return time.perf_counter_ns() - start
    finally:
        conn.close()


@contextlib.contextmanager
def _ledger_writes_skipped() -> Iterator[None]:
    """agent_relay with its SQLite statements skipped (the rows are not written): what is left is the
    wrapper's own work, span included. For the profile only; every other case writes its rows."""
    hot = SqliteCalls
    saved = hot.claim, hot.finish
    hot.claim, hot.finish = lambda self, r: Held(1), lambda self, r: True  # type: ignore[method-assign]
    try:
        yield
    finally:
        hot.claim, hot.finish = saved  # type: ignore[method-assign]


def run_live_unwritten(calls: int, warmup: int, workdir: Path, *, durability: str = "strict") -> int:
    runtime, send_email, ran = _runtime_with_tool(workdir, durability=durability)
    try:
        with runtime.agent_session(name="bench"), _ledger_writes_skipped():
            for i in range(warmup):
                send_email(to=f"warm{i}@example.com", subject="Hello", body="Hi")
            start = time.perf_counter_ns()
            for i in range(calls):
                send_email(to=f"user{i}@example.com", subject="Hello", body="Hi")
            elapsed = time.perf_counter_ns() - start
    finally:
        runtime.shutdown()
    _expect("profile: tool body runs", ran.n, warmup + calls)
    return elapsed


# tool_calls' secondary indexes (the primary key and the unique key are the claim's own), and what reads
# them: a run's calls in order (`agent-relay show`, LedgerReader.calls) and a tool's calls over time (the
# README's failures query). (Schema version 11 dropped the one on status alone, which nothing read and
# which cost about 15 µs per call here: its outcome rewrote it.)
SECONDARY_INDEXES = ("ix_tool_calls_run_seq", "ix_tool_calls_tool_started_at")

PROFILE_CASES: tuple[tuple[str, str, CaseFn], ...] = (
    ("span", "the floor's SDK span alone (4 attributes, no processor)", run_span_only),
    ("commits2", "the floor's SQLite work alone: INSERT + UPDATE, 2 commits", run_commits_only),
    ("commits1", "one INSERT of the finished row, 1 commit", functools.partial(run_commits_only, commits=1)),
    ("floor", "floor (span + 2 commits)", run_floor),
    ("live", 'agent_relay live call, `durability="strict"`', run_live),
    (
        "live_outcome",
        'agent_relay live call, `durability="outcome"`',
        functools.partial(run_live, durability="outcome"),
    ),
    (
        "unwritten",
        "agent_relay live call, ledger statements skipped: the wrapper's own work",
        run_live_unwritten,
    ),
    *(
        (
            f"no_{index}",
            f"agent_relay live call without `{index}`",
            functools.partial(run_live, without=(index,)),
        )
        for index in SECONDARY_INDEXES
    ),
    (
        "no_indexes",
        "agent_relay live call without either",
        functools.partial(run_live, without=SECONDARY_INDEXES),
    ),
)


def measure_profile(calls: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    return rotate([(key, run) for key, _, run in PROFILE_CASES], calls, repeats, warmup)


def profile_table(samples: dict[str, list[float]]) -> str:
    med = {key: statistics.median(values) for key, values in samples.items()}
    lines = ["| Part | µs per call (median) | x floor |", "|---|---:|---:|"]
    for key, label, _ in PROFILE_CASES:
        lines.append(f"| {label} | {med[key]:.1f} | {med[key] / med['floor']:.2f} |")
    wrapper = med["unwritten"] - med["span"]
    statements = med["live"] - med["unwritten"]
    lines += [
        "",
        f"- A live call ({med['live']:.1f} µs) is the wrapper's own work ({med['unwritten']:.1f} µs: "
        f"{wrapper:.1f} µs beyond a bare span, for the key, the row, the context, the metrics and a span "
        f"with 8 attributes and the ledger's processor) plus its two transactions ({statements:.1f} µs, "
        f"against the floor's {med['commits2']:.1f} µs: its rows are wider, 23 columns with trace ids "
        f"and an owner, the claim is an upsert returning the attempt, and the run's foreign key is "
        f"checked).",
        f"- One commit alone costs {med['commits1']:.1f} µs here: no system that commits a row per call "
        f'(a DBOS step, `durability="outcome"`) can take less, span aside.',
        "- Each secondary index of `tool_calls` costs a live call (the live call less the same call "
        "without it): "
        + ", ".join(f"`{i}` {med['live'] - med['no_' + i]:.1f} µs" for i in SECONDARY_INDEXES)
        + f"; both {med['live'] - med['no_indexes']:.1f} µs. Each gets an entry when the pending row goes "
        "in; the outcome's `UPDATE` changes none of their columns. Deltas of a few µs are within this "
        "report's noise.",
    ]
    return "\n".join(lines)


def _expect(what: str, got: object, want: object) -> None:
    if got != want:
        raise BenchError(f"{what}: expected {want!r}, got {got!r}")


CASES: tuple[Case, ...] = (
    Case("floor", "floor: SDK span + raw sqlite3 INSERT and UPDATE, 2 commits", run_floor),
    Case("live", "agent_relay live call (ledger claim + complete, 2 commits)", run_live),
    Case("dedup", "agent_relay deduplicated call (served from session, 1 span)", run_dedup),
    Case("replay", "agent_relay replayed call (served from the source run, batched rows)", run_replay),
    Case("plain", "agent_relay @tool outside any session (span only)", run_plain),
)

# Durability modes, each against the floor doing the same commits by hand at the same synchronous setting.
# (key, label, synchronous, commits of its floor, the case)
DURABILITY_CASES: tuple[tuple[str, str, str, int, CaseFn], ...] = tuple(
    (
        f"{mode}_{sync.lower()}",
        f'`durability="{mode}"`, `synchronous={sync}`',
        sync,
        commits,
        functools.partial(run_live, durability=mode, synchronous=sync),
    )
    for sync in ("NORMAL", "FULL")
    for mode, commits in (("strict", 2), ("outcome", 1))
)
FLOOR_CASES: dict[str, CaseFn] = {
    f"floor{commits}_{sync.lower()}": functools.partial(run_floor, synchronous=sync, commits=commits)
    for sync in ("NORMAL", "FULL")
    for commits in (1, 2)
}


# --- running ----------------------------------------------------------------------------------------------


def rotate(
    runs: Sequence[tuple[str, CaseFn]], calls: int, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Per-call microseconds of every run in every repeat; the order rotates between repeats."""
    samples: dict[str, list[float]] = {key: [] for key, _ in runs}
    for r in range(repeats):
        shift = r % len(runs)
        for key, run in [*runs[shift:], *runs[:shift]]:
            gc.collect()
            with tempfile.TemporaryDirectory(prefix=f"bench-{key}-") as tmp:
                per_call_us = run(calls, warmup, Path(tmp)) / calls / 1000
            samples[key].append(per_call_us)
            print(f"  repeat {r + 1}/{repeats} {key:<15} {per_call_us:9.1f} µs/call", file=sys.stderr)
    return samples


def measure(calls: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Per-call microseconds of every case in every repeat."""
    return rotate([(case.key, case.run) for case in CASES], calls, repeats, warmup)


def measure_durability(calls: int, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Per-call microseconds of every durability case and of every floor."""
    runs: list[tuple[str, CaseFn]] = [(key, run) for key, _, _, _, run in DURABILITY_CASES]
    return rotate(runs + list(FLOOR_CASES.items()), calls, repeats, warmup)


_SURVIVES = {
    ("strict", "NORMAL"): "process crash; a crash mid-call leaves it pending (in doubt) | not guaranteed",
    ("strict", "FULL"): "process crash; a crash mid-call leaves it pending (in doubt) | yes",
    ("outcome", "NORMAL"): "process crash; a crash mid-call leaves no row: it runs again | not guaranteed",
    ("outcome", "FULL"): "process crash; a crash mid-call leaves no row: it runs again | yes",
}


def durability_table(samples: dict[str, list[float]]) -> str:
    base = statistics.median(samples["floor2_normal"])
    lines = [
        "| Mode | commits per call | µs per call (median) | its floor µs | x its floor | x the main floor "
        "| a returned call survives | ...and power loss |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for key, label, sync, commits, _ in DURABILITY_CASES:
        median = statistics.median(samples[key])
        floor = statistics.median(samples[f"floor{commits}_{sync.lower()}"])
        mode = key.split("_")[0]
        ratios = f"{median / floor:.2f} | {median / base:.2f}"
        lines.append(
            f"| {label} | {commits} | {median:.1f} | {floor:.1f} | {ratios} | {_SURVIVES[(mode, sync)]} |"
        )
    return "\n".join(lines)


def results_table(samples: dict[str, list[float]]) -> str:
    floor = statistics.median(samples["floor"])
    lines = [
        "| Case | µs per call (median) | x floor | min..max µs |",
        "|---|---:|---:|---:|",
    ]
    for case in CASES:
        values = samples[case.key]
        median = statistics.median(values)
        lines.append(
            f"| {case.label} | {median:.1f} | {median / floor:.2f} | {min(values):.1f}..{max(values):.1f} |"
        )
    return "\n".join(lines)


# --- the machine ------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _filesystem_of(path: str) -> str:
    """The filesystem type the temp files live on (Linux only; tmpfs and ext4 differ a lot)."""
    best, fstype = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and path.startswith(fields[1]) and len(fields[1]) > len(best):
                best, fstype = fields[1], fields[2]
    except OSError:
        pass
    return fstype


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip()


def machine_info() -> list[tuple[str, str]]:
    tmp = tempfile.gettempdir()
    return [
        ("platform", platform.platform()),
        ("CPU", f"{_cpu_model()} ({os.cpu_count()} logical CPUs)"),
        ("python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("sqlite", sqlite3.sqlite_version),
        ("SQLAlchemy", sqlalchemy.__version__),
        ("opentelemetry-sdk", metadata.version("opentelemetry-sdk")),
        ("agent_relay", f"{agent_relay.__version__} (git {_git_revision()})"),
        ("temp dir", f"{tmp} ({_filesystem_of(tmp)})"),
    ]


# --- report -----------------------------------------------------------------------------------------------


def reproduce_command(args: argparse.Namespace) -> str:
    command = (
        f"python bench/bench_overhead.py --calls {args.calls} --repeats {args.repeats} "
        f"--durability-calls {args.durability_calls}"
    )
    if args.out.resolve() != DEFAULT_OUT:
        command += f" --out {args.out}"
    return command


def render_report(args: argparse.Namespace, warmup: int, table: str, durability: str, profile: str) -> str:
    machine = "\n".join(f"- {name}: {value}" for name, value in machine_info())
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# agent_relay overhead benchmark

Generated {when} by `bench/bench_overhead.py`. Per-call time in microseconds: for each case,
the median over {args.repeats} repeats of (time of {args.calls} timed calls / {args.calls}), each
repeat after {warmup} untimed warm-up calls, all cases in one process, the case order rotating
between repeats. "x floor" is that median divided by the floor's median: the headline figure,
since absolute times drift between machines and runs.

{table}

- **floor**: an OpenTelemetry SDK span (`TracerProvider` without processors or exporters, 4 attributes)
  around a raw `sqlite3` INSERT of a pending row, committed, then an UPDATE to its outcome, committed
  (WAL, `synchronous=NORMAL`, `BEGIN IMMEDIATE`; the `tool_calls` columns it needs, its unique key and
  indexes, no foreign key).
- **live**: a `@tool` called inside `runtime.agent_session(...)` with distinct arguments on every call,
  so each one is keyed, claimed (pending row committed) and completed (outcome committed).
- **dedup**: the same arguments again after a first live call: served from the session, no ledger
  write, one span.
- **replay**: the live calls recorded first by a source session (untimed, as is entering the replay
  session, which loads the source's rows), then made again in `agent_session(replay=True,
  replay_run_id=...)`: each is looked up by key among the source's rows, emits one span marked
  `agent_relay.replayed=true` and queues one complete row for the replay run (origin `replayed`),
  written with the others in transactions of 256 rows on the ledger's background thread; no tool body
  runs. Timed until the replay session has ended, when every row is written: a timer stopped at the
  last call left out the rows that thread had not written yet, more or fewer as the GIL happened to be
  shared (up to half the cost).
- **plain**: the `@tool` called outside any session: a plain call inside one span, no ledger.

## Durability modes

Each mode against the floor that does its commits by hand at the same `synchronous` setting ("its
floor": 2 commits for `strict`, 1 for `outcome`, the finished row INSERTed), and against the main floor
above (2 commits, `synchronous=NORMAL`), measured in the same run: {args.durability_calls} calls per case
and repeat, {args.repeats} repeats, rotating. `synchronous=FULL` syncs the WAL on every commit; NORMAL
syncs it only at checkpoints, so a power loss or OS crash may take the last commits with it (a process
crash never does: a commit is in the WAL before it returns).

{durability}

## Where the time goes

The floor's parts measured alone, and agent_relay's live call with its SQLite statements skipped (the
rows are not written: the rest of the wrapper's work, span included), in the same run
({args.durability_calls} calls per part and repeat, {args.repeats} repeats, rotating).

{profile}

Each case runs on a fresh SQLite file in a fresh temporary directory; set-up, session entry and exit,
and shutdown are not timed. GC stays on; `gc.collect()` runs before each case. The script checks
what every case recorded (rows, body executions) and fails if it differs from what was meant.

## Machine

{machine}

## Reproduce

From the repository root:

```
{reproduce_command(args)}
```
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000, help="timed calls per case and repeat (2000)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of every case (5)")
    parser.add_argument(
        "--durability-calls", type=int, default=500, help="timed calls per durability case and repeat (500)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="markdown report (bench/RESULTS_OVERHEAD.md)"
    )
    args = parser.parse_args(argv)
    if args.calls < 1 or args.repeats < 1 or args.durability_calls < 1:
        parser.error("--calls, --repeats and --durability-calls must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warmup = max(1, min(200, args.calls // 10))
    banner = f"{len(CASES)} cases, {args.repeats} repeats, {args.calls} calls each (+{warmup} warm-up)"
    print(banner, file=sys.stderr)
    table = results_table(measure(args.calls, args.repeats, warmup))
    print(table)
    durability_warmup = max(1, min(50, args.durability_calls // 10))
    durability = durability_table(measure_durability(args.durability_calls, args.repeats, durability_warmup))
    print(durability)
    profile = profile_table(measure_profile(args.durability_calls, args.repeats, durability_warmup))
    print(profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render_report(args, warmup, table, durability, profile), encoding="utf-8")
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
