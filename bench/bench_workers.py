"""Tool calls per second with 1, 4 and 8 worker processes on one ledger: PostgreSQL next to SQLite.

Every worker is a separate process with its own ``AgentRuntime(url)`` and one ``agent_session``, making
live tool calls (a committed claim and a committed completion each) with distinct arguments. Workers
warm up, report ready, and wait for a start signal on stdin, so process start-up, imports, session entry
and warm-up are not timed. Throughput is all timed calls over (last worker's end - first worker's
start); latency is the median over workers of each worker's mean per-call time. After each run the
ledger is checked: every call of those runs is one ``succeeded`` row, and every worker exited cleanly.

On PostgreSQL it also measures, in the same run, pgbench running the ledger's own statements
(``pgbench_floor.py``) against ``strict`` and ``outcome`` workers (1 and 4), the floor AgentRelay is
reported as a ratio to; and one process calling from 1 and 8 threads, and as 100 gathered async calls.

Run from the repository root: ``python bench/bench_workers.py`` (see ``--help``). It needs a PostgreSQL
server (``--pg-url``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``) and ``pgbench``; it
creates a private database on the server and drops it at the end. It writes ``bench/RESULTS_WORKERS.md``
and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

import pgbench_floor  # same directory
import sqlalchemy as sa
from bench_overhead import machine_info as base_machine_info  # same directory: one machine block

from agent_relay.states import Durability

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS_WORKERS.md"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_COUNTS = (1, 4, 8)
WORKER_FLAG = "--as-worker"
WORKER_TIMEOUT_S = 600.0


class BenchError(RuntimeError):
    """A worker failed, or the ledger does not hold what the run should have recorded."""


@dataclass(frozen=True)
class Shape:
    """What each worker process does: its calls' durability, and on how many threads (sync calls) or as
    how many async calls gathered at a time (``gather`` > 0)."""

    durability: str = "strict"
    threads: int = 1
    gather: int = 0

    def args(self) -> list[str]:
        return [self.durability, str(self.threads), str(self.gather)]

    @property
    def label(self) -> str:
        if self.gather:
            return f"async, gather {self.gather}"
        return f"{self.threads} thread{'s' if self.threads > 1 else ''}"


FLOOR_COUNTS = (1, 4)  # worker processes (and pgbench clients) of the floor comparison
FLOOR_TARGET = 0.5  # issue 18: at least half of pgbench's calls/s
DURABILITIES = ("strict", "outcome")
IN_PROCESS = (Shape(threads=1), Shape(threads=8), Shape(threads=16), Shape(gather=100))
SECTIONS = ("workers", "floor", "threads")
# untimed calls before each in-process run, spread over its threads (a dozen each for 16 threads)
IN_PROCESS_WARMUP = 200


# --- the worker process -----------------------------------------------------------------------------------


def worker_main(url: str, worker: int, calls: int, warmup: int, shape: Shape) -> None:
    """One worker: warm up, print ``ready``, wait for ``go`` on stdin, time ``calls`` live calls (on
    ``shape.threads`` threads, or ``shape.gather`` async calls gathered at a time).

    Prints one JSON line: run id, wall-clock start and end of the timed loop (``time.time()``, comparable
    between processes) and the per-call latencies in nanoseconds.
    """
    from agent_relay import AgentRuntime, tool

    runtime = AgentRuntime(url, durability=shape.durability)

    @tool(runtime, name="send")
    def send(i: int, worker: int) -> str:
        return f"ok-{i}"

    @tool(runtime, name="send_async")
    async def send_async(i: int, worker: int) -> str:
        await asyncio.sleep(0)  # an async tool awaits something: the gathered calls overlap there
        return f"ok-{i}"

    def timed(i: int, latencies: list[int]) -> None:
        t0 = time.perf_counter_ns()
        out = send(i, worker)
        latencies.append(time.perf_counter_ns() - t0)
        if out != f"ok-{i}":
            raise SystemExit(f"worker {worker}: send({i}) returned {out!r}")

    async def timed_async(i: int, latencies: list[int]) -> None:
        t0 = time.perf_counter_ns()
        out = await send_async(i, worker)
        latencies.append(time.perf_counter_ns() - t0)
        if out != f"ok-{i}":
            raise SystemExit(f"worker {worker}: send_async({i}) returned {out!r}")

    async def gathered(latencies: list[int]) -> None:
        async with runtime.agent_session(name="bench") as session:
            for first in range(calls, calls + warmup, shape.gather):  # distinct from the timed arguments
                await asyncio.gather(
                    *(send_async(i, worker) for i in range(first, min(first + shape.gather, calls + warmup)))
                )
            print("ready", flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("worker: no start signal on stdin")
            times.append(time.time())
            for first in range(0, calls, shape.gather):
                await asyncio.gather(
                    *(timed_async(i, latencies) for i in range(first, min(first + shape.gather, calls)))
                )
            times.append(time.time())
        run_ids.append(session.run_id)

    latencies: list[int] = []
    times: list[float] = []
    run_ids: list[str] = []
    if shape.gather:
        asyncio.run(gathered(latencies))
    else:
        with runtime.agent_session(name="bench") as session:
            # warm-up on as many threads as the timed calls (arguments distinct from theirs): each thread's
            # pooled connection is made and its statements prepared before the clock starts, as in a
            # process that has been running a while
            _in_threads(shape.threads, range(calls, calls + warmup), timed, [])
            # each thread its share of the calls, in the session's context (a new thread starts without it)
            threads = _threads(shape.threads, range(calls), timed, latencies)
            print("ready", flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit("worker: no start signal on stdin")
            times.append(time.time())
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            times.append(time.time())
        run_ids.append(session.run_id)
    runtime.shutdown()
    if len(latencies) != calls:
        raise SystemExit(f"worker {worker}: {len(latencies)} of {calls} calls returned")
    result = {"run_id": run_ids[0], "start": times[0], "end": times[1], "latencies_ns": latencies}
    print(json.dumps(result), flush=True)


def _threads(
    count: int, calls: range, timed: Callable[[int, list[int]], None], latencies: list[int]
) -> list[threading.Thread]:
    """``count`` threads (not started), each making its share of ``calls`` in the caller's context."""
    return [
        threading.Thread(
            target=contextvars.copy_context().run, args=(_loop, calls[t::count], timed, latencies)
        )
        for t in range(count)
    ]


def _in_threads(
    count: int, calls: range, timed: Callable[[int, list[int]], None], latencies: list[int]
) -> None:
    threads = _threads(count, calls, timed, latencies)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _loop(share: range, timed: Callable[[int, list[int]], None], latencies: list[int]) -> None:
    mine: list[int] = []
    for i in share:
        timed(i, mine)
    latencies.extend(mine)


# --- one run: W workers on one ledger ---------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerResult:
    run_id: str
    start: float
    end: float
    latencies_ns: list[int]


@dataclass(frozen=True)
class RunResult:
    backend: str
    workers: int
    calls_per_s: float
    mean_latency_us: float  # median over workers of each worker's mean per-call latency
    p99_latency_us: float  # over every timed call of the run
    start_spread_ms: float  # last worker's start - first worker's start: how tight the barrier was
    load_1min: float  # the machine's 1-minute load average when the run ended (other work shows here)
    cpu_busy: float | None  # share of all CPUs busy from the start signal to the last worker's exit


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    stderr: IO[str]

    def stdin(self) -> IO[str]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def stdout(self) -> IO[str]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def error_text(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().strip()[-4000:] or "(no stderr)"


def _spawn(url: str, worker: int, calls: int, warmup: int, shape: Shape, stderr: IO[str]) -> Worker:
    command = [sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, url, str(worker)]
    proc = subprocess.Popen(
        [*command, str(calls), str(warmup), *shape.args()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=REPO_ROOT,
    )
    return Worker(proc, stderr)


def _fail(workers: Sequence[Worker], index: int, what: str) -> BenchError:
    for other in workers:
        if other.proc.poll() is None:
            other.proc.kill()
            other.proc.wait()
    failed = workers[index]
    code = failed.proc.returncode
    return BenchError(f"worker {index} {what} (exit code {code}); its stderr:\n{failed.error_text()}")


def _cpu_times() -> tuple[int, int] | None:
    """(all, idle + iowait) time of every CPU since boot, from /proc/stat; None where there is none."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]  # user .. steal
        values = [int(x) for x in fields]
    except (OSError, ValueError):
        return None
    return (sum(values), values[3] + values[4]) if len(values) == 8 else None


def _busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """The share of all CPUs' time between two ``_cpu_times()`` that was not idle."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    return 1 - (after[1] - before[1]) / (after[0] - before[0])


def _collect(workers: Sequence[Worker]) -> tuple[list[WorkerResult], float | None]:
    for index, worker in enumerate(workers):
        if worker.stdout().readline().strip() != "ready":
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.proc.wait(timeout=10)  # let a dying worker finish its traceback
            raise _fail(workers, index, "did not get ready")
    cpu_before = _cpu_times()
    for worker in workers:  # the start barrier: every worker is warmed up and waiting
        worker.stdin().write("go\n")
        worker.stdin().flush()
    results = []
    for index, worker in enumerate(workers):
        try:
            out, _ = worker.proc.communicate(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise _fail(workers, index, f"did not finish within {WORKER_TIMEOUT_S:.0f} s") from None
        if worker.proc.returncode != 0 or not out.strip():
            raise _fail(workers, index, "failed")
        results.append(WorkerResult(**json.loads(out)))
    return results, _busy_share(cpu_before, _cpu_times())


def run_workers(
    url: str, count: int, calls: int, warmup: int, shape: Shape = Shape()
) -> tuple[list[WorkerResult], float | None]:
    """Start ``count`` workers of ``shape`` on the ledger at ``url`` and release them together.

    Returns their results and the share of the machine's CPU time that was busy from the start signal
    until the last worker exited (None off Linux).
    """
    with tempfile.TemporaryDirectory(prefix="bench-workers-err-") as errdir:
        workers: list[Worker] = []
        try:
            for index in range(count):
                stderr = open(Path(errdir) / f"worker-{index}.txt", "w+", encoding="utf-8")  # noqa: SIM115
                workers.append(_spawn(url, index, calls, warmup, shape, stderr))
            return _collect(workers)
        finally:
            for worker in workers:
                if worker.proc.poll() is None:
                    worker.proc.kill()
                    worker.proc.wait()
                worker.stderr.close()


def summarise(backend: str, results: Sequence[WorkerResult], calls: int, cpu_busy: float | None) -> RunResult:
    first_start = min(r.start for r in results)
    elapsed = max(r.end for r in results) - first_start
    everything = sorted(ns for r in results for ns in r.latencies_ns)
    p99 = everything[min(len(everything) - 1, int(0.99 * len(everything)))]
    return RunResult(
        backend=backend,
        workers=len(results),
        calls_per_s=len(results) * calls / elapsed,
        mean_latency_us=statistics.median(statistics.fmean(r.latencies_ns) / 1e3 for r in results),
        p99_latency_us=p99 / 1e3,
        start_spread_ms=(max(r.start for r in results) - first_start) * 1e3,
        load_1min=os.getloadavg()[0],
        cpu_busy=cpu_busy,
    )


# --- the ledger: create, check, drop ----------------------------------------------------------------------


def create_ledger(url: str) -> None:
    """Create the ledger's schema once, so concurrently starting workers only read its version."""
    from agent_relay import AgentRuntime

    AgentRuntime(url).shutdown()


def verify_run(engine: sa.Engine, results: Sequence[WorkerResult], calls: int, warmup: int) -> None:
    """Each worker's run holds exactly calls + warmup rows, all succeeded, and the run itself succeeded."""
    run_ids = [r.run_id for r in results]
    if len(set(run_ids)) != len(run_ids):
        raise BenchError(f"workers reported duplicate run ids: {run_ids}")
    ids: sa.BindParameter[list[str]] = sa.bindparam("ids", expanding=True)
    calls_sql = sa.text(
        "SELECT run_id, status, count(*) FROM tool_calls WHERE run_id IN :ids GROUP BY run_id, status"
    ).bindparams(ids)
    runs_sql = sa.text("SELECT run_id, status FROM agent_runs WHERE run_id IN :ids").bindparams(ids)
    with engine.connect() as conn:
        rows = {(run_id, status): n for run_id, status, n in conn.execute(calls_sql, {"ids": run_ids})}
        runs: dict[str, str] = {run_id: status for run_id, status in conn.execute(runs_sql, {"ids": run_ids})}
    expected = {(run_id, "succeeded"): calls + warmup for run_id in run_ids}
    if rows != expected:
        raise BenchError(f"tool_calls rows by (run, status) are {rows}, expected {expected}")
    if runs != dict.fromkeys(run_ids, "succeeded"):
        raise BenchError(f"agent_runs statuses are {runs}, expected all succeeded")


@contextlib.contextmanager
def private_postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the server of ``admin_url``, dropped (WITH (FORCE)) on the way out."""
    name = f"agent_relay_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


# --- measuring --------------------------------------------------------------------------------------------


def measure(
    urls: dict[str, str], calls: int, warmup: int, repeats: int, counts: Sequence[int]
) -> list[RunResult]:
    """Every (backend, workers) once per repeat, repeats outermost so drift spreads over all cases."""
    engines = {backend: sa.create_engine(url) for backend, url in urls.items()}
    try:
        for url in urls.values():
            create_ledger(url)
        runs: list[RunResult] = []
        for repeat in range(repeats):
            for backend, url in urls.items():
                for count in counts:
                    results, cpu_busy = run_workers(url, count, calls, warmup)
                    verify_run(engines[backend], results, calls, warmup)
                    run = summarise(backend, results, calls, cpu_busy)
                    print(f"repeat {repeat + 1}/{repeats} {progress(run)}", file=sys.stderr)
                    runs.append(run)
        return runs
    finally:
        for engine in engines.values():
            engine.dispose()


@dataclass(frozen=True)
class FloorRun:
    """AgentRelay's W workers and pgbench's W clients, one after the other on the same ledger."""

    durability: str
    workers: int
    agent_relay: float  # calls/s
    pgbench: float  # calls/s: its transactions, each one call's statements

    @property
    def ratio(self) -> float:
        return self.agent_relay / self.pgbench


def measure_floor(
    pg_url: str, calls: int, warmup: int, repeats: int, counts: Sequence[int], seconds: float
) -> list[FloorRun]:
    """For each durability and W: W worker processes, then pgbench with W clients and the same statements
    (``pgbench_floor``), back to back so both see the same machine; repeats outermost."""
    engine = sa.create_engine(pg_url)
    try:
        create_ledger(pg_url)
        bench_run = pgbench_floor.create_run(pg_url)
        runs: list[FloorRun] = []
        for repeat in range(repeats):
            for durability in DURABILITIES:
                for count in counts:
                    results, cpu_busy = run_workers(pg_url, count, calls, warmup, Shape(durability))
                    verify_run(engine, results, calls, warmup)
                    ours = summarise("PostgreSQL", results, calls, cpu_busy)
                    floor = pgbench_floor.run_pgbench(
                        pg_url, bench_run, Durability(durability), count, seconds
                    )
                    run = FloorRun(durability, count, ours.calls_per_s, floor)
                    print(
                        f"repeat {repeat + 1}/{repeats} {durability:<7} W={count}: {run.agent_relay:7.0f} "
                        f"calls/s, pgbench {run.pgbench:7.0f}/s, ratio {run.ratio:.2f}",
                        file=sys.stderr,
                    )
                    runs.append(run)
        return runs
    finally:
        engine.dispose()


def measure_in_process(pg_url: str, calls: int, warmup: int, repeats: int) -> list[tuple[Shape, RunResult]]:
    """One worker process on PostgreSQL calling from 1 and 8 threads, and as gathered async calls."""
    engine = sa.create_engine(pg_url)
    try:
        create_ledger(pg_url)
        runs: list[tuple[Shape, RunResult]] = []
        for repeat in range(repeats):
            for shape in IN_PROCESS:
                results, cpu_busy = run_workers(pg_url, 1, calls, warmup, shape)
                verify_run(engine, results, calls, warmup)
                run = summarise("PostgreSQL", results, calls, cpu_busy)
                print(f"repeat {repeat + 1}/{repeats} {shape.label:<16} {progress(run)}", file=sys.stderr)
                runs.append((shape, run))
        return runs
    finally:
        engine.dispose()


def _percent(share: float | None) -> str:
    return "n/a" if share is None else f"{100 * share:.0f}%"


def _median_share(shares: Sequence[float | None]) -> float | None:
    known = [x for x in shares if x is not None]
    return statistics.median(known) if known else None


def progress(run: RunResult) -> str:
    return (
        f"{run.backend:<10} W={run.workers}: {run.calls_per_s:7.0f} calls/s, "
        f"{run.mean_latency_us:7.0f} µs/call, p99 {run.p99_latency_us:7.0f} µs, "
        f"CPU busy {_percent(run.cpu_busy)}"
    )


def results_table(runs: Sequence[RunResult], counts: Sequence[int]) -> str:
    lines = [
        "| Backend | Workers | calls/s (median) | x W=1 | min..max calls/s | µs per call | p99 µs per call "
        "| CPU busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for backend in dict.fromkeys(r.backend for r in runs):
        base = statistics.median(r.calls_per_s for r in runs if r.backend == backend and r.workers == 1)
        for count in counts:
            mine = [r for r in runs if r.backend == backend and r.workers == count]
            rate = [r.calls_per_s for r in mine]
            median_rate = statistics.median(rate)
            latency = statistics.median(r.mean_latency_us for r in mine)
            p99 = statistics.median(r.p99_latency_us for r in mine)
            busy = _percent(_median_share([r.cpu_busy for r in mine]))
            lines.append(
                f"| {backend} | {count} | {median_rate:.0f} | {median_rate / base:.2f} "
                f"| {min(rate):.0f}..{max(rate):.0f} | {latency:.0f} | {p99:.0f} | {busy} |"
            )
    return "\n".join(lines)


def floor_table(runs: Sequence[FloorRun], counts: Sequence[int]) -> str:
    lines = [
        "| Durability | Workers | AgentRelay calls/s | pgbench calls/s | ratio | min..max ratio | target |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for durability in DURABILITIES:
        for count in counts:
            mine = [r for r in runs if r.durability == durability and r.workers == count]
            ratios = [r.ratio for r in mine]
            lines.append(
                f"| {durability} | {count} | {statistics.median(r.agent_relay for r in mine):.0f} "
                f"| {statistics.median(r.pgbench for r in mine):.0f} | {statistics.median(ratios):.2f} "
                f"| {min(ratios):.2f}..{max(ratios):.2f} | {FLOOR_TARGET:.1f} |"
            )
    return "\n".join(lines)


def in_process_table(runs: Sequence[tuple[Shape, RunResult]]) -> str:
    lines = [
        "| In one process | calls/s (median) | x 1 thread | min..max calls/s | µs per call | p99 µs per call "
        "| CPU busy |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = statistics.median(run.calls_per_s for shape, run in runs if shape == IN_PROCESS[0])
    for wanted in IN_PROCESS:
        mine = [run for shape, run in runs if shape == wanted]
        rate = [r.calls_per_s for r in mine]
        median_rate = statistics.median(rate)
        lines.append(
            f"| {wanted.label} | {median_rate:.0f} | {median_rate / base:.2f} "
            f"| {min(rate):.0f}..{max(rate):.0f} "
            f"| {statistics.median(r.mean_latency_us for r in mine):.0f} "
            f"| {statistics.median(r.p99_latency_us for r in mine):.0f} "
            f"| {_percent(_median_share([r.cpu_busy for r in mine]))} |"
        )
    return "\n".join(lines)


# --- the machine and the report ---------------------------------------------------------------------------


def _load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def postgres_info(url: str) -> list[tuple[str, str]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version()").scalar_one()
            settings = ", ".join(
                f"{name}={conn.exec_driver_sql(f'SHOW {name}').scalar_one()}"
                for name in ("fsync", "synchronous_commit", "wal_sync_method", "max_connections")
            )
    finally:
        engine.dispose()
    return [("PostgreSQL server", str(version)), ("PostgreSQL settings", settings)]


def machine_info(load_before: str, pg: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The machine block the other reports use, plus the load, psycopg and the PostgreSQL server."""
    return [
        *base_machine_info(),
        ("load average (1/5/15 min)", f"{load_before} before, {_load_average()} after"),
        ("psycopg", metadata.version("psycopg")),
        *pg,
    ]


def reproduce_command(args: argparse.Namespace) -> str:
    command = "python bench/bench_workers.py"
    command += f" --calls-per-worker {args.calls_per_worker} --repeats {args.repeats}"
    command += f" --in-process-calls {args.in_process_calls} --pgbench-seconds {args.pgbench_seconds:g}"
    if args.sections != SECTIONS:
        command += f" --sections {','.join(args.sections)}"
    if args.out.resolve() != DEFAULT_OUT:
        command += f" --out {args.out}"
    if args.pg_url != DEFAULT_PG_URL:
        command += f" --pg-url {args.pg_url}"
    return command


def workers_section(args: argparse.Namespace, warmup: int, runs: Sequence[RunResult]) -> str:
    spread = max(r.start_spread_ms for r in runs)
    load = [r.load_1min for r in runs]
    rows = args.repeats * sum(WORKER_COUNTS) * (args.calls_per_worker + warmup)
    return f"""W worker processes share one ledger; each has its
own `AgentRuntime(url)` and one `agent_session`, and makes {args.calls_per_worker} timed live calls of a
`@tool` (`send(i, worker)`, distinct arguments: a committed claim and a committed completion each)
after {warmup} untimed warm-up calls. Figures are medians over {args.repeats} repeats.

{results_table(runs, WORKER_COUNTS)}

- **calls/s**: all timed calls of the run / (last worker's end - first worker's start). Workers warm
  up, report ready and wait for one start signal, so process start-up, imports, session entry and
  warm-up are outside the window (the largest gap between workers' starts was {spread:.1f} ms).
- **x W=1**: calls/s over the same backend's calls/s with one worker.
- **µs per call**: the median over workers of each worker's mean per-call time; **p99**: over every
  timed call of the run.
- **CPU busy**: the share of all the machine's CPUs (see below) that was not idle from the start
  signal until the last worker exited: workers, database server and anything else running. Near 100%
  the run is bound by CPU, not by the ledger's locks.
- **load**: the 1-minute load average at the end of each run ranged {min(load):.2f}..{max(load):.2f}
  (the workers themselves add up to W); other work on the machine shows up here and in min..max.
- **SQLite**: a file in a temporary directory with the library's defaults (WAL, `synchronous=NORMAL`,
  writes in `BEGIN IMMEDIATE`, 10 s busy timeout). SQLite has one writer at a time, so more processes
  queue on its write lock: flat or lower throughput is what it does, not a fault of the run.
- **PostgreSQL**: a private database created on the server below and dropped afterwards, with the
  ledger's default options: the calls' statements go through psycopg directly (`ledger/pg_calls.py`,
  one autocommitted statement per commit, no ping), on a pool of its own. Each commit waits for the
  server's WAL flush (settings below).

Each backend keeps one ledger for all its runs: the schema is created once before any worker starts,
and runs add up to {rows} rows by the end. After every run the script checks that each worker exited
0 and that the ledger holds, for each of the run's W sessions, exactly {args.calls_per_worker + warmup}
`tool_calls` rows, all `succeeded`, and a `succeeded` run; otherwise it fails with the worker's stderr.
"""


def floor_section(args: argparse.Namespace, runs: Sequence[FloorRun]) -> str:
    return f"""## PostgreSQL against pgbench

The floor: `{pgbench_floor.version()}` on the same server and ledger, W clients for
{args.pgbench_seconds:g} s, each "transaction" one call's statements as AgentRelay sends them (their
text taken from `agent_relay/ledger/pg_calls.py`, prepared, every value a text parameter): for `strict`
the claim (`INSERT ... ON CONFLICT ... RETURNING`) and the outcome (`UPDATE` to succeeded), each
autocommitted; for `outcome` one `INSERT` of the finished row. Each pgbench run follows AgentRelay's
run of the same W and durability ({args.calls_per_worker} timed calls per worker process, checked as
above), so both see the same machine.

{floor_table(runs, FLOOR_COUNTS)}

- **ratio**: AgentRelay's calls/s over pgbench's in the same repeat; the median over {args.repeats}
  repeats, and its range. **target**: issue 18's, at least half the floor.
- What the ratio leaves out is the client's own cost per call: the tool wrapper, its span, the
  record and psycopg, on the same 2 CPUs as the server.
"""


def in_process_section(args: argparse.Namespace, runs: Sequence[tuple[Shape, RunResult]]) -> str:
    return f"""## Threads and async calls in one process (PostgreSQL)

One worker process, one `agent_session`, {args.in_process_calls} timed `strict` calls: from 1 thread,
from 8 and from 16 threads (each its share, in the session's context), and as async calls of an
`async def` tool, gathered 100 at a time (`asyncio.gather`: their claims and outcomes share commits).
Each run first makes {IN_PROCESS_WARMUP} untimed calls in the same shape (on as many threads), so the
pool's connections are made and their statements prepared before the clock starts.

{in_process_table(runs)}

- **x 1 thread**: calls/s over the one-thread calls/s of the same repeats; the target of issue 18 is
  3x for 8 threads. Threads' writes share commits (`agent_relay/ledger/group.py`): a thread that
  finds no write in flight writes at once, alone; threads that find one queue, and one of the ledger's
  two writer threads writes what is queued in one transaction (one statement per kind of write). The
  Python work of a call holds the GIL, and the server shares the machine's CPUs with it.
- **async**: the calls' writes are made on the ledger writer's thread for loops, never on the event
  loop's thread; the writes queued while one batch is in flight go together in the next.
"""


def render_report(
    args: argparse.Namespace,
    warmup: int,
    machine: str,
    workers: Sequence[RunResult],
    floor: Sequence[FloorRun],
    in_process: Sequence[tuple[Shape, RunResult]],
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    sections = [f"# agent_relay worker-process benchmark\n\nGenerated {when} by `bench/bench_workers.py`."]
    if workers:
        sections[0] += " " + workers_section(args, warmup, workers)
    if floor:
        sections.append(floor_section(args, floor))
    if in_process:
        sections.append(in_process_section(args, in_process))
    sections.append(f"## Machine\n\n{machine}\n")
    sections.append(
        "## Reproduce\n\nFrom the repository root, with a PostgreSQL server reachable at `--pg-url` and "
        f"`pgbench` installed:\n\n```\n{reproduce_command(args)}\n```\n"
    )
    return "\n".join(sections)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls-per-worker", type=int, default=500, help="timed calls per worker (500)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every case (3)")
    parser.add_argument(
        "--in-process-calls", type=int, default=2000, help="timed calls of each in-process case (2000)"
    )
    parser.add_argument("--pgbench-seconds", type=float, default=5.0, help="length of each pgbench run (5)")
    parser.add_argument(
        "--sections",
        type=lambda text: tuple(text.split(",")),
        default=SECTIONS,
        help=f"what to measure, comma-separated ({','.join(SECTIONS)})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report (bench/RESULTS_WORKERS.md)")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL database to create the private one from"
    )
    args = parser.parse_args(argv)
    if args.calls_per_worker < 1 or args.repeats < 1 or args.in_process_calls < 1:
        parser.error("--calls-per-worker, --in-process-calls and --repeats must be >= 1")
    if not args.sections or not set(args.sections) <= set(SECTIONS):
        parser.error(f"--sections takes some of {','.join(SECTIONS)}, not {','.join(args.sections)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warmup = max(1, min(50, args.calls_per_worker // 10))
    load_before = _load_average()
    workers: list[RunResult] = []
    floor: list[FloorRun] = []
    in_process: list[tuple[Shape, RunResult]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
        private_postgres_database(args.pg_url) as pg_url,
    ):
        if "workers" in args.sections:
            urls = {"SQLite": f"sqlite:///{Path(tmp) / 'ledger.db'}", "PostgreSQL": pg_url}
            workers = measure(urls, args.calls_per_worker, warmup, args.repeats, WORKER_COUNTS)
        if "floor" in args.sections:
            floor = measure_floor(
                pg_url, args.calls_per_worker, warmup, args.repeats, FLOOR_COUNTS, args.pgbench_seconds
            )
        if "threads" in args.sections:
            in_process = measure_in_process(pg_url, args.in_process_calls, IN_PROCESS_WARMUP, args.repeats)
        pg = postgres_info(pg_url)
    machine = "\n".join(f"- {name}: {value}" for name, value in machine_info(load_before, pg))
    report = render_report(args, warmup, machine, workers, floor, in_process)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 9 and sys.argv[1] == WORKER_FLAG:
        shape = Shape(sys.argv[6], int(sys.argv[7]), int(sys.argv[8]))
        worker_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), shape)
        sys.exit(0)
    sys.exit(main())
