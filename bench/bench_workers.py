"""Tool calls per second with 1, 4 and 8 worker processes on one ledger: PostgreSQL next to SQLite.

Every worker is a separate process with its own ``AgentRuntime(url)`` and one ``agent_session``, making
live tool calls (a committed claim and a committed completion each) with distinct arguments. Workers
warm up, report ready, and wait for a start signal on stdin, so process start-up, imports, session entry
and warm-up are not timed. Throughput is all timed calls over (last worker's end - first worker's
start); latency is the median over workers of each worker's mean per-call time. After each run the
ledger is checked: every call of those runs is one ``succeeded`` row, and every worker exited cleanly.

Run from the repository root: ``python bench/bench_workers.py`` (see ``--help``). It needs a PostgreSQL
server (``--pg-url``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``), on which it creates
a private database and drops it at the end. It writes ``bench/RESULTS_WORKERS.md`` and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from bench_overhead import machine_info as base_machine_info  # same directory: one machine block

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS_WORKERS.md"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_COUNTS = (1, 4, 8)
WORKER_FLAG = "--as-worker"
WORKER_TIMEOUT_S = 600.0


class BenchError(RuntimeError):
    """A worker failed, or the ledger does not hold what the run should have recorded."""


# --- the worker process -----------------------------------------------------------------------------------


def worker_main(url: str, worker: int, calls: int, warmup: int) -> None:
    """One worker: warm up, print ``ready``, wait for ``go`` on stdin, time ``calls`` live calls.

    Prints one JSON line: run id, wall-clock start and end of the timed loop (``time.time()``, comparable
    between processes) and the per-call latencies in nanoseconds.
    """
    from agent_relay import AgentRuntime, tool

    runtime = AgentRuntime(url)

    @tool(runtime, name="send")
    def send(i: int, worker: int) -> str:
        return f"ok-{i}"

    latencies: list[int] = []
    with runtime.agent_session(name="bench") as session:
        for i in range(calls, calls + warmup):  # distinct from the timed arguments
            send(i, worker)
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            raise SystemExit("worker: no start signal on stdin")
        start = time.time()
        for i in range(calls):
            t0 = time.perf_counter_ns()
            out = send(i, worker)
            latencies.append(time.perf_counter_ns() - t0)
            if out != f"ok-{i}":
                raise SystemExit(f"worker {worker}: send({i}) returned {out!r}")
        end = time.time()
    runtime.shutdown()
    result = {"run_id": session.run_id, "start": start, "end": end, "latencies_ns": latencies}
    print(json.dumps(result), flush=True)


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


def _spawn(url: str, worker: int, calls: int, warmup: int, stderr: IO[str]) -> Worker:
    command = [sys.executable, str(Path(__file__).resolve()), WORKER_FLAG, url, str(worker)]
    proc = subprocess.Popen(
        [*command, str(calls), str(warmup)],
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


def run_workers(url: str, count: int, calls: int, warmup: int) -> tuple[list[WorkerResult], float | None]:
    """Start ``count`` workers on the ledger at ``url`` and release them together.

    Returns their results and the share of the machine's CPU time that was busy from the start signal
    until the last worker exited (None off Linux).
    """
    with tempfile.TemporaryDirectory(prefix="bench-workers-err-") as errdir:
        workers: list[Worker] = []
        try:
            for index in range(count):
                stderr = open(Path(errdir) / f"worker-{index}.txt", "w+", encoding="utf-8")  # noqa: SIM115
                workers.append(_spawn(url, index, calls, warmup, stderr))
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
    if args.out.resolve() != DEFAULT_OUT:
        command += f" --out {args.out}"
    if args.pg_url != DEFAULT_PG_URL:
        command += f" --pg-url {args.pg_url}"
    return command


def render_report(
    args: argparse.Namespace, warmup: int, table: str, runs: Sequence[RunResult], machine: str
) -> str:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    spread = max(r.start_spread_ms for r in runs)
    load = [r.load_1min for r in runs]
    rows = args.repeats * sum(WORKER_COUNTS) * (args.calls_per_worker + warmup)
    return f"""# agent_relay worker-process benchmark

Generated {when} by `bench/bench_workers.py`. W worker processes share one ledger; each has its
own `AgentRuntime(url)` and one `agent_session`, and makes {args.calls_per_worker} timed live calls of a
`@tool` (`send(i, worker)`, distinct arguments: a committed claim and a committed completion each)
after {warmup} untimed warm-up calls. Figures are medians over {args.repeats} repeats.

{table}

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
- **PostgreSQL**: a private database created on the server below and dropped afterwards; the
  ledger's default engine options (`pool_pre_ping=True`). Each commit waits for the server's WAL
  flush (settings below).

Each backend keeps one ledger for all its runs: the schema is created once before any worker starts,
and runs add up to {rows} rows by the end. After every run the script checks that each worker exited
0 and that the ledger holds, for each of the run's W sessions, exactly {args.calls_per_worker + warmup}
`tool_calls` rows, all `succeeded`, and a `succeeded` run; otherwise it fails with the worker's stderr.

## Machine

{machine}

## Reproduce

From the repository root, with a PostgreSQL server reachable at `--pg-url`:

```
{reproduce_command(args)}
```
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls-per-worker", type=int, default=500, help="timed calls per worker (500)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of every case (3)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report (bench/RESULTS_WORKERS.md)")
    parser.add_argument(
        "--pg-url", default=DEFAULT_PG_URL, help="a PostgreSQL database to create the private one from"
    )
    args = parser.parse_args(argv)
    if args.calls_per_worker < 1 or args.repeats < 1:
        parser.error("--calls-per-worker and --repeats must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    warmup = max(1, min(50, args.calls_per_worker // 10))
    load_before = _load_average()
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
        private_postgres_database(args.pg_url) as pg_url,
    ):
        urls = {"SQLite": f"sqlite:///{Path(tmp) / 'ledger.db'}", "PostgreSQL": pg_url}
        runs = measure(urls, args.calls_per_worker, warmup, args.repeats, WORKER_COUNTS)
        pg = postgres_info(pg_url)
    machine = "\n".join(f"- {name}: {value}" for name, value in machine_info(load_before, pg))
    report = render_report(args, warmup, results_table(runs, WORKER_COUNTS), runs, machine)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == WORKER_FLAG:
        worker_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
        sys.exit(0)
    sys.exit(main())
