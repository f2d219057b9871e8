"""agent_relay next to DBOS Transact and LangGraph on SQLite, plus parallel calls, threads and memory.

One agent loop, N tool calls of a tiny function returning a string, written three ways: N ``@tool`` calls
in one ``agent_session``; a ``@DBOS.workflow()`` calling N ``@DBOS.step()`` functions; a LangGraph
``StateGraph`` whose node runs N times through a loop edge, compiled with ``SqliteSaver``. Each system is
measured at its own SQLite defaults and at equal durability settings (WAL, ``synchronous=NORMAL``), in the
same process and the same repeats as the floor of ``bench_overhead.py`` (an OpenTelemetry span plus a raw
``sqlite3`` INSERT and UPDATE, each committed), so every figure is also a ratio to that floor. Then:
recorded calls served again (agent_relay replay, DBOS ``fork_workflow``), 100 and 1,000 parallel async
calls in one session, 8 threads against 1 in one session, and the memory of a 10,000-call session.

DBOS and LangGraph live in a separate environment, ``bench/.venv``, installed from
``bench/requirements-compare.txt``; they are never dependencies of agent_relay. ``--setup`` creates it.
When it exists and the running interpreter lacks them, the script re-runs itself under ``bench/.venv``.
Without them it still measures the agent_relay cases and says why the others are missing.

Run from the repository root: ``python bench/bench_compare.py`` (see ``--help``). It writes
``bench/RESULTS_COMPARE.md`` and prints the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import dataclasses
import datetime as dt
import functools
import gc
import importlib
import json
import os
import re
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypedDict

try:
    import sqlalchemy as sa
    from bench_overhead import machine_info, run_floor

    from agent_relay import AgentRuntime, LedgerOptions, tool
    from agent_relay.run import current_run
except ImportError:
    # Run by an interpreter without agent_relay: bench/.venv has it (and DBOS and LangGraph) when set up.
    _VENV = Path(__file__).resolve().parent / ".venv"
    _PYTHON = _VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if __name__ != "__main__" or not _PYTHON.exists() or Path(sys.prefix).resolve() == _VENV.resolve():
        raise
    print(f"running under {_PYTHON} (agent_relay is not importable here)", file=sys.stderr, flush=True)
    os.execv(_PYTHON, [str(_PYTHON), str(Path(__file__).resolve()), *sys.argv[1:]])

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_OUT = BENCH_DIR / "RESULTS_COMPARE.md"
OVERHEAD_RESULTS = BENCH_DIR / "RESULTS_OVERHEAD.md"
BENCH_VENV = BENCH_DIR / ".venv"
REQUIREMENTS = BENCH_DIR / "requirements-compare.txt"
MEMORY_CHILD_FLAG = "--memory-child"
CHILD_TIMEOUT_S = 900.0

# What each framework needs importable, by the name the report uses.
FRAMEWORK_MODULES: dict[str, tuple[str, ...]] = {
    "DBOS": ("dbos",),
    "LangGraph": ("langgraph.graph", "langgraph.checkpoint.sqlite"),
}
FRAMEWORK_DISTRIBUTIONS = ("dbos", "langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite")

SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

# The targets.
LIVE_TARGET = 1.5  # live call <= 1.5x the floor
REPLAY_TARGET = 0.4  # replayed call <= 0.4x the floor
DBOS_SPEEDUP_TARGET = 8.0  # >= 8x faster per call than a DBOS step at equal durability
FLAT_BYTES_PER_CALL = 16.0  # "flat": the session's heap grows by less than this per call


class BenchError(RuntimeError):
    """A case did not do what it is meant to measure (wrong row count, body ran too often...)."""


def _expect(what: str, got: object, want: object) -> None:
    if got != want:
        raise BenchError(f"{what}: expected {want!r}, got {got!r}")


class _Counter:
    def __init__(self) -> None:
        self.n = 0


def _tiny(i: int) -> str:
    """The tool body of every system: a tiny function returning a string."""
    return f"r{i}"


def _synchronous_name(value: object) -> str:
    return SYNCHRONOUS_NAMES.get(int(str(value)), str(value))


def _sqlite_settings(journal_mode: object, synchronous: object) -> str:
    return f"journal_mode={str(journal_mode).upper()}, synchronous={_synchronous_name(synchronous)}"


def _engine_settings(engine: sa.Engine) -> str:
    """The journal mode and synchronous level of a connection from ``engine``'s pool."""
    with engine.connect() as conn:
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
        synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    return _sqlite_settings(journal, synchronous)


# A runner sets a system up in a fresh directory, warms up, times ``calls`` calls of one or more rows and
# checks what was recorded; it returns, per row key, the nanoseconds the timed calls took (set-up,
# warm-up and checks excluded) and the SQLite settings it observed on the system's own connection.
Measured = dict[str, tuple[int, str]]
RunnerFn = Callable[[int, int, Path], Measured]


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    label: str


@dataclasses.dataclass(frozen=True)
class Runner:
    key: str
    rows: tuple[str, ...]
    framework: str | None  # None: agent_relay or the floor, always available
    run: RunnerFn


# --- the floor ---------------------------------------------------------------------------------------------


def run_floor_case(calls: int, warmup: int, workdir: Path) -> Measured:
    """``bench_overhead.run_floor`` as it is: the same floor as bench/RESULTS_OVERHEAD.md."""
    return {"floor": (run_floor(calls, warmup, workdir), "journal_mode=WAL, synchronous=NORMAL")}


def run_commit_floors(calls: int, warmup: int, workdir: Path) -> Measured:
    """The least a durable call can cost: a span and one raw INSERT of the finished row, committed, at
    NORMAL and at FULL. No system checkpointing one row per call can be faster than this."""
    (workdir / "normal").mkdir()
    (workdir / "full").mkdir()
    normal = run_floor(calls, warmup, workdir / "normal", synchronous="NORMAL", commits=1)
    full = run_floor(calls, warmup, workdir / "full", synchronous="FULL", commits=1)
    return {
        "floor1": (normal, "journal_mode=WAL, synchronous=NORMAL"),
        "floor1_full": (full, "journal_mode=WAL, synchronous=FULL"),
    }


# --- agent_relay ------------------------------------------------------------------------------------------


def _relay_runtime(
    workdir: Path, synchronous: str, durability: str = "strict"
) -> tuple[AgentRuntime, Callable[..., str], _Counter]:
    runtime = AgentRuntime(  # own TracerProvider, no exporters
        f"sqlite:///{workdir}/ledger.db",
        ledger_options=LedgerOptions(sqlite_synchronous=synchronous),
        durability=durability,
    )
    ran = _Counter()

    @tool(runtime, name="tiny")
    def tiny(i: int) -> str:
        ran.n += 1
        return _tiny(i)

    return runtime, tiny, ran


def _ledger_counts(workdir: Path) -> tuple[int, int, int]:
    """(rows, succeeded rows, replayed rows) of the ledger, read after the runtime shut down."""
    conn = sqlite3.connect(workdir / "ledger.db")
    try:
        total, succeeded, replayed = conn.execute(
            "SELECT count(*), coalesce(sum(status = 'succeeded'), 0), coalesce(sum(origin = 'replayed'), 0) "
            "FROM tool_calls"
        ).fetchone()
    finally:
        conn.close()
    return int(total), int(succeeded), int(replayed)


def _live_session(
    runtime: AgentRuntime, tiny: Callable[..., str], calls: int, warmup: int
) -> tuple[int, str]:
    """One session of live calls with distinct arguments: (ns the timed calls took, its run id)."""
    with runtime.agent_session(name="bench-compare") as session:
        for i in range(warmup):
            tiny(i=-1 - i)
        start = time.perf_counter_ns()
        for i in range(calls):
            tiny(i=i)
        return time.perf_counter_ns() - start, session.run_id


def run_relay_outcome(calls: int, warmup: int, workdir: Path, *, synchronous: str, suffix: str) -> Measured:
    """Live calls with ``durability="outcome"``: one commit per call, after the body (a DBOS step's)."""
    runtime, tiny, ran = _relay_runtime(workdir, synchronous, durability="outcome")
    try:
        settings = _engine_settings(runtime.ledger.engine)
        live_ns, _ = _live_session(runtime, tiny, calls, warmup)
    finally:
        runtime.shutdown()
    _expect("agent_relay outcome: tool body runs", ran.n, warmup + calls)
    _expect("agent_relay outcome: rows", _ledger_counts(workdir), (warmup + calls, warmup + calls, 0))
    return {f"relay_outcome{suffix}": (live_ns, settings + ', durability="outcome"')}


def run_relay(calls: int, warmup: int, workdir: Path, *, synchronous: str, suffix: str) -> Measured:
    """Live calls with distinct arguments in one session, then the same calls replayed from its run."""
    runtime, tiny, ran = _relay_runtime(workdir, synchronous)
    try:
        settings = _engine_settings(runtime.ledger.engine)
        live_ns, source_run = _live_session(runtime, tiny, calls, warmup)
        recorded = ran.n
        with runtime.agent_session(name="bench-compare", replay=True, replay_run_id=source_run):
            for i in range(warmup):
                tiny(i=-1 - i)
            start = time.perf_counter_ns()
            for i in range(calls):
                result = tiny(i=i)
        replay_ns = time.perf_counter_ns() - start  # (its session has ended: every replayed row is written)
    finally:
        runtime.shutdown()
    both = 2 * (warmup + calls)
    _expect("agent_relay: tool body runs", recorded, warmup + calls)
    _expect("agent_relay: tool body runs during the replay", ran.n - recorded, 0)
    _expect("agent_relay: replayed result", result, _tiny(calls - 1))
    _expect("agent_relay: rows (all, succeeded, replayed)", _ledger_counts(workdir), (both, both, both // 2))
    return {f"relay_live{suffix}": (live_ns, settings), f"relay_replay{suffix}": (replay_ns, settings)}


# --- DBOS Transact ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _DbosApp:
    dbos: Any  # the DBOS class
    set_workflow_id: Any  # dbos.SetWorkflowID
    agent_loop: Callable[[int, int], int]
    ran: _Counter
    elapsed: dict[str, int]  # workflow id -> ns its loop of steps took


@functools.cache
def _dbos_app() -> _DbosApp:
    """The workflow and its step, registered once per process (DBOS keeps a global registry)."""
    from dbos import DBOS, SetWorkflowID

    ran = _Counter()
    elapsed: dict[str, int] = {}

    @DBOS.step()
    def tiny(i: int) -> str:
        ran.n += 1
        return _tiny(i)

    @DBOS.workflow()
    def agent_loop(first: int, n: int) -> int:
        # Timed inside the workflow: the N steps, not the workflow's own start and end rows (as
        # agent_relay's session entry and exit are not timed). Each step is checkpointed before it returns.
        start = time.perf_counter_ns()
        for i in range(first, first + n):
            tiny(i)
        took = time.perf_counter_ns() - start
        workflow_id = DBOS.workflow_id
        assert workflow_id is not None  # always set inside a workflow
        elapsed[workflow_id] = took
        return n

    return _DbosApp(DBOS, SetWorkflowID, agent_loop, ran, elapsed)


def _sqlite_wal_normal(path: Path) -> sqlite3.Connection:
    """A connection for DBOS's own engine (``db_engine_kwargs={"creator": ...}``): WAL, NORMAL."""
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _dbos_step_rows(path: Path, workflow_id: str) -> tuple[int, str]:
    conn = sqlite3.connect(path)
    try:
        (steps,) = conn.execute(
            "SELECT count(*) FROM operation_outputs WHERE workflow_uuid = ?", (workflow_id,)
        ).fetchone()
        (status,) = conn.execute(
            "SELECT status FROM workflow_status WHERE workflow_uuid = ?", (workflow_id,)
        ).fetchone()
    finally:
        conn.close()
    return int(steps), str(status)


def run_dbos(calls: int, warmup: int, workdir: Path, *, wal: bool) -> Measured:
    """A workflow of N live steps, then the same steps served from their records by a fork of it."""
    app = _dbos_app()
    path = workdir / "dbos_system.sqlite"
    config: dict[str, Any] = {
        "name": "bench-compare",
        "system_database_url": f"sqlite:///{path}",
        "log_level": "WARNING",
    }
    if wal:
        config["db_engine_kwargs"] = {"creator": functools.partial(_sqlite_wal_normal, path)}
    suffix = "wal" if wal else "default"
    before = app.ran.n
    instance = app.dbos(config=config)
    try:
        app.dbos.launch()
        # DBOS keeps no public handle on its engine; its connection's settings are read for the report.
        settings = _engine_settings(instance._sys_db.engine)
        warm_id, timed_id = f"warm-{uuid.uuid4()}", f"timed-{uuid.uuid4()}"
        with app.set_workflow_id(warm_id):
            app.agent_loop(-warmup, warmup)
        with app.set_workflow_id(timed_id):
            app.agent_loop(0, calls)
        live_runs = app.ran.n - before
        # A fork starting after the last step copies every step's recorded output to a new workflow, which
        # runs the same code: each step is served from its record (the recovery path), no step body runs.
        app.dbos.fork_workflow(warm_id, warmup + 1).get_result()
        fork = app.dbos.fork_workflow(timed_id, calls + 1)
        _expect("DBOS: forked workflow result", fork.get_result(), calls)
        fork_id = fork.workflow_id
    finally:
        app.dbos.destroy()
    _expect("DBOS: step body runs", live_runs, warmup + calls)
    _expect("DBOS: step body runs during the fork", app.ran.n - before, warmup + calls)
    _expect("DBOS: timed workflow's recorded steps", _dbos_step_rows(path, timed_id), (calls, "SUCCESS"))
    _expect("DBOS: forked workflow's recorded steps", _dbos_step_rows(path, fork_id), (calls, "SUCCESS"))
    return {
        f"dbos_live_{suffix}": (app.elapsed[timed_id], settings),
        f"dbos_recorded_{suffix}": (app.elapsed[fork_id], settings),
    }


# --- LangGraph --------------------------------------------------------------------------------------------


class _LoopState(TypedDict):
    i: int
    end: int
    last: str


@dataclasses.dataclass(frozen=True)
class _LangGraphApp:
    builder: Any  # a StateGraph, compiled per run with that run's checkpointer
    ran: _Counter


@functools.cache
def _langgraph_app() -> _LangGraphApp:
    """A one-node graph looping on itself until ``i == end``: one super-step (and checkpoint) per call."""
    from langgraph.graph import END, START, StateGraph

    ran = _Counter()

    def tool_node(state: _LoopState) -> dict[str, Any]:
        ran.n += 1
        i = state["i"]
        return {"i": i + 1, "last": _tiny(i)}

    def route(state: _LoopState) -> str:
        return "tool" if state["i"] < state["end"] else END

    builder = StateGraph(_LoopState)
    builder.add_node("tool", tool_node)
    builder.add_edge(START, "tool")
    builder.add_conditional_edges("tool", route)
    return _LangGraphApp(builder, ran)


def run_langgraph(calls: int, warmup: int, workdir: Path, *, equal: bool) -> Measured:
    """One graph run of N node super-steps, each checkpointed by SqliteSaver; timed as a whole."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    app = _langgraph_app()
    before = app.ran.n
    conn = sqlite3.connect(workdir / "checkpoints.sqlite", check_same_thread=False)
    try:
        if equal:
            conn.execute("PRAGMA synchronous=NORMAL")  # SqliteSaver.setup() sets WAL itself
        graph = app.builder.compile(checkpointer=SqliteSaver(conn))
        options: dict[str, Any] = {"durability": "sync"} if equal else {}

        def invoke(thread_id: str, first: int, n: int) -> Any:
            config = {"configurable": {"thread_id": thread_id}, "recursion_limit": n + 10}
            return graph.invoke({"i": first, "end": first + n, "last": ""}, config, **options)

        invoke("warm", -warmup, warmup)
        # Timed as a whole: with the default durability ("async") checkpoints are written in the
        # background, and invoke() returns only once they are all written.
        start = time.perf_counter_ns()
        state = invoke("timed", 0, calls)
        elapsed = time.perf_counter_ns() - start
        (journal,) = conn.execute("PRAGMA journal_mode").fetchone()
        (synchronous,) = conn.execute("PRAGMA synchronous").fetchone()
        settings = _sqlite_settings(journal, synchronous)
        (checkpoints,) = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = 'timed'").fetchone()
    finally:
        conn.close()
    _expect("LangGraph: node runs", app.ran.n - before, warmup + calls)
    _expect("LangGraph: final state", (state["i"], state["last"]), (calls, _tiny(calls - 1)))
    if checkpoints < calls:
        raise BenchError(f"LangGraph: expected a checkpoint per super-step ({calls}), got {checkpoints}")
    return {f"lg_{'equal' if equal else 'default'}": (elapsed, settings)}


# --- the comparison table ---------------------------------------------------------------------------------

ROWS: tuple[Row, ...] = (
    Row("floor", "floor: SDK span + raw sqlite3 INSERT and UPDATE, 2 commits"),
    Row("relay_live", "agent_relay live `@tool` call, defaults"),
    Row("relay_live_full", 'agent_relay live `@tool` call, `sqlite_synchronous="FULL"`'),
    Row("floor1", "floor of one durable call: SDK span + one raw sqlite3 INSERT, committed"),
    Row("floor1_full", "the same floor at `synchronous=FULL` (one WAL sync per call)"),
    Row("relay_outcome", 'agent_relay live call, `durability="outcome"` (one commit, as a DBOS step)'),
    Row("relay_outcome_full", 'agent_relay live call, `durability="outcome"`, `sqlite_synchronous="FULL"`'),
    Row("dbos_live_default", "DBOS live `@DBOS.step` in a workflow, defaults"),
    Row("dbos_live_wal", "DBOS live `@DBOS.step` in a workflow, WAL + NORMAL"),
    Row("lg_default", "LangGraph node super-step + SqliteSaver checkpoint, defaults"),
    Row("lg_equal", 'LangGraph node super-step, WAL + NORMAL, `durability="sync"`'),
    Row("relay_replay", "agent_relay replayed call (served from the source run), defaults"),
    Row("relay_replay_full", 'agent_relay replayed call, `sqlite_synchronous="FULL"`'),
    Row("dbos_recorded_default", "DBOS recorded step served (fork of the workflow), defaults"),
    Row("dbos_recorded_wal", "DBOS recorded step served (fork of the workflow), WAL + NORMAL"),
)

RUNNERS: tuple[Runner, ...] = (
    Runner("floor", ("floor",), None, run_floor_case),
    Runner("floor1", ("floor1", "floor1_full"), None, run_commit_floors),
    Runner(
        "relay",
        ("relay_live", "relay_replay"),
        None,
        functools.partial(run_relay, synchronous="NORMAL", suffix=""),
    ),
    Runner(
        "relay-full",
        ("relay_live_full", "relay_replay_full"),
        None,
        functools.partial(run_relay, synchronous="FULL", suffix="_full"),
    ),
    Runner(
        "relay-outcome",
        ("relay_outcome",),
        None,
        functools.partial(run_relay_outcome, synchronous="NORMAL", suffix=""),
    ),
    Runner(
        "relay-outcome-full",
        ("relay_outcome_full",),
        None,
        functools.partial(run_relay_outcome, synchronous="FULL", suffix="_full"),
    ),
    Runner(
        "dbos-default",
        ("dbos_live_default", "dbos_recorded_default"),
        "DBOS",
        functools.partial(run_dbos, wal=False),
    ),
    Runner("dbos-wal", ("dbos_live_wal", "dbos_recorded_wal"), "DBOS", functools.partial(run_dbos, wal=True)),
    Runner("lg-default", ("lg_default",), "LangGraph", functools.partial(run_langgraph, equal=False)),
    Runner("lg-equal", ("lg_equal",), "LangGraph", functools.partial(run_langgraph, equal=True)),
)


@dataclasses.dataclass
class Samples:
    """Per-call microseconds of every row in every repeat, and the settings each row ran with."""

    us: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    settings: dict[str, str] = dataclasses.field(default_factory=dict)

    def add(self, key: str, us: float, settings: str | None = None) -> None:
        self.us.setdefault(key, []).append(us)
        if settings is not None:
            self.settings.setdefault(key, settings)

    def median(self, key: str) -> float | None:
        values = self.us.get(key)
        return statistics.median(values) if values else None


def measure_comparison(calls: int, repeats: int, warmup: int, missing: dict[str, str]) -> Samples:
    """Every available runner in every repeat. A framework whose run fails (it cannot be configured, or a
    check fails) is added to ``missing`` with the error, its rows are dropped, and the others go on."""
    runners = [r for r in RUNNERS if r.framework is None or r.framework not in missing]
    samples = Samples()
    for r in range(repeats):
        shift = r % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            if runner.framework in missing:
                continue
            gc.collect()
            try:
                with tempfile.TemporaryDirectory(prefix=f"bench-compare-{runner.key}-") as tmp:
                    measured = runner.run(calls, warmup, Path(tmp))
                _expect(f"{runner.key}: rows measured", sorted(measured), sorted(runner.rows))
            except Exception as exc:
                if runner.framework is None:
                    raise
                missing[runner.framework] = f"case `{runner.key}` failed: {type(exc).__name__}: {exc}"
                _progress(f"{runner.framework} dropped: {missing[runner.framework]}")
                for dropped in RUNNERS:
                    if dropped.framework == runner.framework:
                        for key in dropped.rows:
                            samples.us.pop(key, None)
                continue
            for key, (elapsed_ns, settings) in measured.items():
                us = elapsed_ns / calls / 1000
                samples.add(key, us, settings)
                _progress(f"repeat {r + 1}/{repeats} {key:<22} {us:9.1f} µs/call")
    return samples


def _progress(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


# --- parallel async calls in one session ------------------------------------------------------------------


def run_async(calls: int, warmup: int, workdir: Path, *, gather: bool) -> int:
    """``calls`` awaits of an async tool with distinct arguments in one session, gathered or in turn."""
    runtime = AgentRuntime(f"sqlite:///{workdir}/ledger.db")
    ran = _Counter()

    @tool(runtime, name="fetch")
    async def fetch(i: int) -> str:
        await asyncio.sleep(0)  # a real suspension point: gathered calls interleave, as I/O-bound tools do
        ran.n += 1
        return _tiny(i)

    async def agent() -> tuple[int, list[str]]:
        async with runtime.agent_session(name="bench-async"):
            await asyncio.gather(*(fetch(i=-1 - j) for j in range(warmup)))
            start = time.perf_counter_ns()
            if gather:
                results = await asyncio.gather(*(fetch(i=i) for i in range(calls)))
            else:
                results = [await fetch(i=i) for i in range(calls)]
            return time.perf_counter_ns() - start, results

    try:
        elapsed, results = asyncio.run(agent())
    finally:
        runtime.shutdown()
    _expect("async: results", results, [_tiny(i) for i in range(calls)])
    _expect("async: tool body runs", ran.n, warmup + calls)
    _expect("async: rows (all, succeeded, replayed)", _ledger_counts(workdir), (ran.n, ran.n, 0))
    return elapsed


ASYNC_CASES: tuple[tuple[str, str, int, bool], ...] = (
    ("gather100", "100 calls, `asyncio.gather`", 100, True),
    ("gather1000", "1,000 calls, `asyncio.gather`", 1000, True),
    ("seq1000", "1,000 calls awaited one after another (reference)", 1000, False),
)


def measure_async(repeats: int) -> Samples:
    samples = Samples()
    for r in range(repeats):
        for key, _label, calls, gather in ASYNC_CASES:
            gc.collect()
            with tempfile.TemporaryDirectory(prefix="bench-compare-async-") as tmp:
                elapsed = run_async(calls, min(50, calls // 10), Path(tmp), gather=gather)
            us = elapsed / calls / 1000
            samples.add(key, us)
            _progress(f"repeat {r + 1}/{repeats} async {key:<10} {us:9.1f} µs/call")
    return samples


# --- threads in one session -------------------------------------------------------------------------------


def run_threads(threads: int, calls: int, warmup: int, workdir: Path) -> int:
    """``calls`` live sync tool calls in one session, split over ``threads`` threads started together."""
    runtime, tiny, ran = _relay_runtime(workdir, "NORMAL")
    per_thread = calls // threads
    barrier = threading.Barrier(threads + 1)
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        barrier.wait()
        try:
            for i in range(t * per_thread, (t + 1) * per_thread):
                tiny(i=i)
        except BaseException as exc:
            errors.append(exc)

    try:
        with runtime.agent_session(name="bench-threads"):
            for i in range(warmup):
                tiny(i=-1 - i)
            workers = [
                # each thread runs in a copy of this context, so the session is current in it
                threading.Thread(target=contextvars.copy_context().run, args=(worker, t))
                for t in range(threads)
            ]
            for w in workers:
                w.start()
            barrier.wait()
            start = time.perf_counter_ns()
            for w in workers:
                w.join()
            elapsed = time.perf_counter_ns() - start
    finally:
        runtime.shutdown()
    if errors:
        raise BenchError(f"threads: {len(errors)} thread(s) failed") from errors[0]
    done = warmup + threads * per_thread
    _expect("threads: tool body runs", ran.n, done)
    _expect("threads: rows (all, succeeded, replayed)", _ledger_counts(workdir), (done, done, 0))
    return elapsed


THREAD_COUNTS = (1, 8)


def measure_threads(calls: int, repeats: int) -> Samples:
    samples = Samples()
    for r in range(repeats):
        for threads in THREAD_COUNTS:
            gc.collect()
            with tempfile.TemporaryDirectory(prefix="bench-compare-threads-") as tmp:
                elapsed = run_threads(threads, calls, min(100, calls // 10), Path(tmp))
            us = elapsed / (calls // threads * threads) / 1000
            samples.add(str(threads), us)
            _progress(f"repeat {r + 1}/{repeats} threads {threads} {us:9.1f} µs/call")
    return samples


# --- memory of a long session (measured in child processes) -----------------------------------------------


def _rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc``; 0 elsewhere)."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def _deep_size(root: object) -> int:
    """Bytes of ``root`` and everything it holds (dicts, tuples, lists, sets), each object counted once."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
    return total


_SNAPSHOT_FILTERS = (
    tracemalloc.Filter(False, tracemalloc.__file__),  # the snapshots themselves
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
)


def memory_child(mode: str, calls: int, first: int) -> dict[str, Any]:
    """One session of ``calls`` live calls; memory at session entry, after ``first`` calls and at the end.

    ``rss``: resident set size (no tracing); ``heap``: tracemalloc's traced bytes; ``lines``: tracemalloc
    snapshots after ``first`` calls and at the end, compared by source line (what grows).
    """
    if mode != "rss":
        tracemalloc.start()
    out: dict[str, Any] = {"mode": mode, "calls": calls, "first_calls": first}
    snapshots: list[tracemalloc.Snapshot] = []

    def sample(name: str, session: Any) -> None:
        gc.collect()
        out[name] = {
            "rss": _rss_bytes(),
            "heap": tracemalloc.get_traced_memory()[0] if mode == "heap" else None,
            "index_entries": len(session.table),
            "index_bytes": _deep_size(session.table),
        }
        if mode == "lines":
            snapshots.append(tracemalloc.take_snapshot().filter_traces(_SNAPSHOT_FILTERS))

    with tempfile.TemporaryDirectory(prefix="bench-compare-memory-") as tmp:
        runtime, tiny, ran = _relay_runtime(Path(tmp), "NORMAL")
        try:
            with runtime.agent_session(name="bench-memory"):
                session = current_run()  # the run's call table: its in-memory dedup index
                sample("entry", session)
                for i in range(first):
                    tiny(i=i)
                sample("after_first", session)
                for i in range(first, calls):
                    tiny(i=i)
                sample("end", session)
        finally:
            runtime.shutdown()
    _expect("memory: tool body runs", ran.n, calls)
    out["peak_rss"] = _peak_rss_bytes()
    if mode == "heap":
        out["heap_peak"] = tracemalloc.get_traced_memory()[1]
    if mode == "lines":
        before, after = snapshots[1], snapshots[2]
        out["lines_growth"] = sum(s.size for s in after.statistics("filename")) - sum(
            s.size for s in before.statistics("filename")
        )
        out["top_lines"] = [
            {"where": str(s.traceback), "bytes": s.size_diff, "blocks": s.count_diff}
            for s in after.compare_to(before, "lineno")[:8]
        ]
    return out


def measure_memory(calls: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for mode in ("rss", "heap", "lines"):
        _progress(f"memory: {mode}, {calls} calls in one session (child process)")
        command = [sys.executable, str(Path(__file__).resolve()), MEMORY_CHILD_FLAG, mode]
        command += ["--memory-calls", str(calls)]
        done = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"memory child ({mode}) failed:\n{done.stderr}")
        results[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


# --- report -----------------------------------------------------------------------------------------------


def _fmt_range(values: Sequence[float]) -> str:
    return f"{min(values):.1f}..{max(values):.1f}"


def comparison_table(samples: Samples, floor: float) -> str:
    lines = [
        "| Case | SQLite settings (observed) | µs per call (median) | x floor | min..max µs |",
        "|---|---|---:|---:|---:|",
    ]
    for row in ROWS:
        median = samples.median(row.key)
        if median is None:
            lines.append(f"| {row.label} | not measured (see below) | | | |")
            continue
        settings = samples.settings.get(row.key, "")
        lines.append(
            f"| {row.label} | {settings} | {median:.1f} | {median / floor:.2f} | "
            f"{_fmt_range(samples.us[row.key])} |"
        )
    return "\n".join(lines)


def async_table(samples: Samples, floor: float) -> str:
    lines = [
        "| Case (one session, async tool) | µs per call (median) | x floor | calls/s | min..max µs |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label, _calls, _gather in ASYNC_CASES:
        median = samples.median(key)
        assert median is not None
        lines.append(
            f"| {label} | {median:.1f} | {median / floor:.2f} | {1e6 / median:,.0f} | "
            f"{_fmt_range(samples.us[key])} |"
        )
    return "\n".join(lines)


def threads_table(samples: Samples, floor: float, calls: int) -> str:
    lines = [
        "| Threads (one session, sync tool) | calls | µs per call (wall / calls) | x floor | calls/s | "
        "vs 1 thread |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    one = samples.median("1")
    assert one is not None
    for threads in THREAD_COUNTS:
        median = samples.median(str(threads))
        assert median is not None
        lines.append(
            f"| {threads} | {calls // threads * threads} | {median:.1f} | {median / floor:.2f} | "
            f"{1e6 / median:,.0f} | {one / median:.2f}x |"
        )
    return "\n".join(lines)


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclasses.dataclass(frozen=True)
class MemoryFigures:
    calls: int
    first: int
    heap_per_call: float
    index_per_call: float
    rss_per_call: float

    @property
    def other_per_call(self) -> float:
        return self.heap_per_call - self.index_per_call


def memory_figures(memory: dict[str, dict[str, Any]]) -> MemoryFigures:
    heap, rss = memory["heap"], memory["rss"]
    span = heap["calls"] - heap["first_calls"]
    return MemoryFigures(
        calls=heap["calls"],
        first=heap["first_calls"],
        heap_per_call=(heap["end"]["heap"] - heap["after_first"]["heap"]) / span,
        index_per_call=(heap["end"]["index_bytes"] - heap["after_first"]["index_bytes"]) / span,
        rss_per_call=(rss["end"]["rss"] - rss["after_first"]["rss"]) / span,
    )


def memory_table(memory: dict[str, dict[str, Any]]) -> str:
    heap, rss, lines = memory["heap"], memory["rss"], memory["lines"]
    fig = memory_figures(memory)
    first, calls = fig.first, fig.calls
    end_index = heap["end"]
    rows = [
        "| Measure | at session entry | after "
        f"{first:,} calls | after {calls:,} calls | growth per call ({first:,} to {calls:,}) |",
        "|---|---:|---:|---:|---:|",
        f"| RSS (no tracing) | {_mib(rss['entry']['rss'])} | {_mib(rss['after_first']['rss'])} | "
        f"{_mib(rss['end']['rss'])} | {fig.rss_per_call:.0f} B |",
        f"| Python heap (tracemalloc, traced bytes) | {_mib(heap['entry']['heap'])} | "
        f"{_mib(heap['after_first']['heap'])} | {_mib(heap['end']['heap'])} | {fig.heap_per_call:.0f} B |",
        f"| the session's dedup index (the run's `CallTable`, deep size) | "
        f"{heap['entry']['index_bytes']:,} B ({heap['entry']['index_entries']} entries) | "
        f"{heap['after_first']['index_bytes']:,} B ({heap['after_first']['index_entries']:,}) | "
        f"{end_index['index_bytes']:,} B ({end_index['index_entries']:,}) | {fig.index_per_call:.0f} B |",
        f"| heap growth other than the dedup index | | | | {fig.other_per_call:.0f} B |",
        "",
        f"- Peak RSS of the whole process (`ru_maxrss`, imports included): {_mib(rss['peak_rss'])} "
        f"(untraced run); tracemalloc peak of the traced run: {_mib(heap['heap_peak'])}.",
        f"- Heap growth by source line from {first:,} to {calls:,} calls (tracemalloc snapshots; "
        f"total {lines['lines_growth'] / (calls - first):.0f} B per call):",
        "",
        "| Source line | bytes | blocks | per call |",
        "|---|---:|---:|---:|",
    ]
    for top in lines["top_lines"]:
        rows.append(
            f"| `{_short_path(top['where'])}` | {top['bytes']:,} | {top['blocks']:,} | "
            f"{top['bytes'] / (calls - first):.0f} B |"
        )
    return "\n".join(rows)


def _short_path(where: str) -> str:
    for prefix in (str(REPO_ROOT) + os.sep, *(p + os.sep for p in sys.path if p)):
        if where.startswith(prefix):
            return where[len(prefix) :]
    return where


def quoted_overhead(path: Path) -> tuple[str, dict[str, tuple[float, str]]]:
    """The overhead report's generation line and its live / replayed x-floor figures: (ratio, as written)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return f"{path.name} not found", {}
    generated = re.search(r"Generated ([^.]*?) by", text)
    figures: dict[str, tuple[float, str]] = {}
    for key, prefix in (("live", "| agent_relay live call ("), ("replay", "| agent_relay replayed call (")):
        for line in text.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith(prefix) and len(cells) >= 3 and key not in figures:  # the main table's row
                figures[key] = (float(cells[2]), f"{cells[2]}x ({cells[1]} µs)")
    return (generated.group(1) if generated else "date unknown"), figures


def _verdict(met: bool) -> str:
    return "**met**" if met else "**not met**"


def targets_table(
    samples: Samples, floor: float, memory: dict[str, dict[str, Any]], overhead_report: Path
) -> str:
    """The issue's targets. The live and replayed verdicts go by the overhead report (its tool is the
    reference one) when there is one, else by this run."""
    when, quoted = quoted_overhead(overhead_report)
    lines = [
        f"| Target (from the issue) | this run | {overhead_report.name} ({when}) | verdict |",
        "|---|---|---|---|",
    ]
    for key, target, limit in (
        ("relay_live", f"live call <= {LIVE_TARGET}x floor", LIVE_TARGET),
        ("relay_replay", f"replayed call <= {REPLAY_TARGET}x floor", REPLAY_TARGET),
    ):
        here = samples.median(key)
        assert here is not None
        reference = quoted.get(key.removeprefix("relay_"))
        ratio = reference[0] if reference else here / floor
        shown = reference[1] if reference else "not found"
        lines.append(
            f"| {target} | {here / floor:.2f}x ({here:.1f} µs) | {shown} | {_verdict(ratio <= limit)} |"
        )
    pairs = (
        ("dbos_live_wal", "relay_outcome", "floor1", "equal durability (one commit per call), WAL + NORMAL"),
        ("dbos_live_default", "relay_outcome_full", "floor1_full", "equal durability, synchronous=FULL"),
        ("dbos_live_wal", "relay_live", "floor1", "agent_relay `strict` (2 commits), WAL + NORMAL"),
        ("dbos_live_default", "relay_live_full", "floor1_full", "agent_relay `strict`, synchronous=FULL"),
    )
    for dbos_key, relay_key, floor_key, what in pairs:
        dbos, relay, least = samples.median(dbos_key), samples.median(relay_key), samples.median(floor_key)
        target = f">= {DBOS_SPEEDUP_TARGET:.0f}x faster than a DBOS step; {what}"
        if dbos is None or relay is None or least is None:
            lines.append(f"| {target} | not measured | | - |")
            continue
        speedup, reachable = dbos / relay, dbos / least
        verdict = _verdict(speedup >= DBOS_SPEEDUP_TARGET)
        if reachable < DBOS_SPEEDUP_TARGET:
            verdict += f"; out of reach: DBOS / the one-commit floor is {reachable:.1f}x"
        lines.append(
            f"| {target} | {speedup:.2f}x ({dbos:.1f} vs {relay:.1f} µs; at most {reachable:.1f}x: "
            f"the one-commit floor is {least:.1f} µs) | not measured there | {verdict} |"
        )
    fig = memory_figures(memory)
    flat = _verdict(fig.heap_per_call < FLAT_BYTES_PER_CALL)
    lines.append(
        f"| flat memory per session (< {FLAT_BYTES_PER_CALL:.0f} B heap per call, {fig.first:,} to "
        f"{fig.calls:,} calls) | {fig.heap_per_call:.0f} B/call, of which the dedup index "
        f"{fig.index_per_call:.0f} B/call | not measured there | {flat} |"
    )
    return "\n".join(lines)


def versions() -> list[tuple[str, str]]:
    found = []
    for dist in FRAMEWORK_DISTRIBUTIONS:
        try:
            found.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            found.append((dist, "not installed"))
    return found


def reproduce_command(args: argparse.Namespace) -> str:
    command = "python bench/bench_compare.py"
    defaults = {"calls": 1000, "repeats": 5, "thread_calls": 2000, "memory_calls": 10000}
    for name, default in defaults.items():
        if getattr(args, name) != default:
            command += f" --{name.replace('_', '-')} {getattr(args, name)}"
    if args.out.resolve() != DEFAULT_OUT:
        command += f" --out {args.out}"
    if args.overhead_report.resolve() != OVERHEAD_RESULTS:
        command += f" --overhead-report {args.overhead_report}"
    return command


def missing_section(missing: dict[str, str]) -> str:
    if not missing:
        return ""
    lines = ["## Not measured", ""]
    for name, reason in missing.items():
        lines.append(f"- **{name}**: {reason}")
    lines += ["", f"Create it with `python bench/bench_compare.py --setup` ({_setup_hint()}).", ""]
    return "\n".join(lines) + "\n"


def render_report(
    args: argparse.Namespace,
    warmup: int,
    comparison: Samples,
    async_samples: Samples,
    thread_samples: Samples,
    memory: dict[str, dict[str, Any]],
    missing: dict[str, str],
) -> str:
    floor = comparison.median("floor")
    assert floor is not None
    machine = "\n".join(f"- {name}: {value}" for name, value in [*machine_info(), *versions()])
    machine += f"\n- interpreter: {sys.executable}"
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""# agent_relay next to DBOS Transact and LangGraph

Generated {when} by `bench/bench_compare.py`. Per-call time in microseconds: for each case, the median
over {args.repeats} repeats of (time of {args.calls} timed calls / {args.calls}), each repeat after
{warmup} untimed warm-up calls on a fresh SQLite file, all cases in one process, the order rotating
between repeats. "x floor" divides by the floor's median in this same run (the floor of
`bench_overhead.py`, unchanged: {floor:.1f} µs here).

## The same agent loop in three systems

The loop: {args.calls} calls of a tiny function returning a string (`f"r{{i}}"`, a distinct argument per
call), as `@tool` calls in one `agent_session`, as `@DBOS.step()` calls in one `@DBOS.workflow()`, and as
super-steps of a LangGraph `StateGraph` whose one node loops on itself (state: a counter, its end and the
last result), compiled with `SqliteSaver`.

{comparison_table(comparison, floor)}

- **defaults**: what each system does when given only a SQLite path. agent_relay: WAL,
  `synchronous=NORMAL`. DBOS (`system_database_url="sqlite:///..."`): SQLite's own defaults, a rollback
  journal (`DELETE`) and `synchronous=FULL`; its engine adds `pool_pre_ping`, `busy_timeout` and
  `isolation_level="IMMEDIATE"`. LangGraph: `SqliteSaver.setup()` turns WAL on and leaves
  `synchronous` at SQLite's `FULL`; `invoke()` defaults to `durability="async"` (a super-step's checkpoint
  is written in the background while the next one runs, and `invoke()` returns once all are written).
- **equal durability (WAL + NORMAL)**: every committed step survives a process crash, as agent_relay's
  default. DBOS: `db_engine_kwargs={{"creator": ...}}` in its config, a function opening each
  `sqlite3` connection of DBOS's own engine with `PRAGMA journal_mode=WAL` and `PRAGMA
  synchronous=NORMAL` (DBOS still builds the engine and still applies its own connect hook to those
  connections; `connect_args`, which DBOS only fills with a PostgreSQL timeout it drops for SQLite, are
  not used with a creator). LangGraph: `PRAGMA synchronous=NORMAL` on the connection handed to
  `SqliteSaver`, and `invoke(..., durability="sync")`, so each super-step's checkpoint is committed
  before the next step starts.
- **agent_relay `sqlite_synchronous="FULL"`** (WAL, FULL) is the row to hold against DBOS's defaults
  (FULL): both then survive power loss; the journals still differ (WAL against DELETE).
- **`durability="outcome"`** is agent_relay at a DBOS step's durability: one commit per call, of the
  finished call's row, before the call returns; a process that dies mid-call leaves no row and the call
  runs again on resume (a DBOS step likewise re-runs on recovery). agent_relay's default, `strict`, also
  commits a pending row before the body runs (a second commit), so a crash mid-call leaves the call
  known to be in doubt; that is more than a DBOS step records, and the targets table shows it beside.
- **What is timed.** agent_relay: the calls (session entry and exit, which write the run's row, are not
  timed, as in `bench_overhead.py`; a replay's exit is, see below). DBOS: the loop of steps inside the
  workflow function (the workflow's own start and end rows are not timed); each step's output is
  committed before the step returns. LangGraph: the whole `invoke()`, because with `durability="async"`
  checkpoints are still being written after the last node ran; its start and end add two or three
  super-steps to the {args.calls}.
- **Recorded calls served.** agent_relay: `agent_session(replay=True, replay_run_id=...)` of the live
  run (loading the source's rows at session entry is not timed); each call writes a `replayed` row, in
  batches on a background thread, timed until the session has ended and every row is written. DBOS:
  `DBOS.fork_workflow(workflow_id, start_step=N + 1)` copies the N recorded step outputs to a new workflow,
  which runs the same function: every step is served from its record (the path of a recovered workflow),
  no step body runs, nothing is written per step; the fork's copy and the queue dispatch are not timed.
  A second call of a finished workflow with the same id returns its recorded result without running its
  body at all, so it serves no step. LangGraph has no per-node counterpart: resuming a thread from a
  checkpoint restores its state and runs only the nodes after it (the ones before are not called, so no
  call is served): not measured.
- **Tracing.** agent_relay's rows include an OpenTelemetry SDK span per call (no exporter), as the floor
  does. DBOS starts its spans on the global tracer provider, which is OpenTelemetry's no-op proxy here
  (no OTLP endpoint configured), and LangGraph records none: their rows carry no span cost.
- Checks: every case verifies what it recorded (agent_relay rows and replayed rows, DBOS's
  `operation_outputs` rows and workflow status of the workflow and its fork, LangGraph's checkpoints and
  final state, how many times each body ran) and fails if it differs.

{missing_section(missing)}## Parallel async calls in one session

An `async def` tool (`await asyncio.sleep(0)`, then return the string) called with distinct arguments
in one `async with runtime.agent_session(...)`, defaults (WAL, NORMAL); µs per call is the wall time of
all the calls divided by their number. Median over {args.repeats} repeats. Gathered calls share their
commits (`agent_relay.batching`: the claims, then the outcomes, of the calls in flight on the loop go in
one transaction per turn, each still committed before its body runs and before it returns); calls
awaited one after another each write at once.

{async_table(async_samples, floor)}

## Threads in one session

{args.thread_calls} live calls of a sync tool in one session, split evenly over the threads, each thread
started in `contextvars.copy_context().run` inside the session and released together by a barrier;
µs per call is the wall time until every thread finished divided by the calls. Median over
{args.repeats} repeats, on {os.cpu_count()} logical CPUs.

{threads_table(thread_samples, floor, args.thread_calls)}

## Memory of one session

One session of {memory_figures(memory).calls:,} live calls with distinct arguments (defaults), each
measure in its own fresh process: RSS without tracing; tracemalloc's traced bytes; tracemalloc snapshots
compared by source line. Memory is sampled after `gc.collect()` at session entry, after
{memory_figures(memory).first:,} calls and at the end; growth per call is (end - after
{memory_figures(memory).first:,}) / {memory_figures(memory).calls - memory_figures(memory).first:,}.

{memory_table(memory)}

The session keeps its most recently completed calls (key, output; arguments only for a caller-supplied
key) in the run's `CallTable`, its in-memory dedup index: a repeated call is served from it without
touching the ledger. It holds at most `agent_relay.session.DEDUP_INDEX_SIZE` (1,024) calls; an older
one asked again is served from its ledger row. So the index stops growing after 1,024 distinct calls.

## Targets

{targets_table(comparison, floor, memory, args.overhead_report)}

The live and replayed figures of this run come from this file's tiny tool (`tiny(i: int) -> str`);
`bench_overhead.py` measures the same paths with a three-string-argument tool and is the reference for
those two targets.

## Machine

{machine}

## Reproduce

From the repository root, once: `python bench/bench_compare.py --setup` (creates `bench/.venv` from
`bench/requirements-compare.txt`); then:

```
{reproduce_command(args)}
```
"""


# --- the environment --------------------------------------------------------------------------------------


def _venv_python() -> Path:
    return BENCH_VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _setup_hint() -> str:
    return (
        f"or by hand, from the repository root: `python -m venv bench/.venv && "
        f"bench/.venv/bin/python -m pip install -r bench/{REQUIREMENTS.name}`"
    )


def missing_frameworks() -> dict[str, str]:
    """Framework name -> why it cannot be measured in this interpreter (absent when it can)."""
    missing: dict[str, str] = {}
    for name, modules in FRAMEWORK_MODULES.items():
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception as exc:  # ImportError, or a broken install raising anything else
                missing[name] = f"`import {module}` failed in {sys.executable}: {type(exc).__name__}: {exc}"
                break
    return missing


def _in_bench_venv() -> bool:
    return Path(sys.prefix).resolve() == BENCH_VENV.resolve()


def setup_venv() -> None:
    """Create bench/.venv if missing and install bench/requirements-compare.txt into it."""
    if not _venv_python().exists():
        print(f"creating {BENCH_VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
    print(f"installing {REQUIREMENTS.name} into {BENCH_VENV}", file=sys.stderr)
    subprocess.run(
        [str(_venv_python()), "-m", "pip", "install", "-r", str(REQUIREMENTS)], cwd=REPO_ROOT, check=True
    )


def _reexec_in_venv(argv: Sequence[str]) -> None:
    python = str(_venv_python())
    print(f"running under {python} (DBOS and LangGraph are installed there)", file=sys.stderr, flush=True)
    os.execv(python, [python, str(Path(__file__).resolve()), *argv])


# --- main -------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=1000, help="timed calls per case and repeat (1000)")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of every case (5)")
    parser.add_argument("--thread-calls", type=int, default=2000, help="calls of the threads case (2000)")
    parser.add_argument("--memory-calls", type=int, default=10000, help="calls of the memory session (10000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report (bench/RESULTS_COMPARE.md)")
    parser.add_argument(
        "--setup", action="store_true", help="create bench/.venv and install requirements-compare.txt first"
    )
    parser.add_argument(
        "--no-venv", action="store_true", help="run in this interpreter even if bench/.venv has more"
    )
    parser.add_argument(
        "--overhead-report",
        type=Path,
        default=OVERHEAD_RESULTS,
        help="bench_overhead.py's report, quoted in the targets (bench/RESULTS_OVERHEAD.md)",
    )
    parser.add_argument(MEMORY_CHILD_FLAG, choices=("rss", "heap", "lines"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    too_few = args.calls < 10 or args.thread_calls < max(THREAD_COUNTS) or args.memory_calls < 10
    if too_few or args.repeats < 1:
        parser.error("--calls >= 10, --repeats >= 1, --thread-calls >= 8 and --memory-calls >= 10")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(raw_argv)
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child, args.memory_calls, max(1, args.memory_calls // 10))))
        return 0
    if args.setup:
        setup_venv()
        _reexec_in_venv([a for a in raw_argv if a != "--setup"])
    missing = missing_frameworks()
    if missing and not args.no_venv and not _in_bench_venv() and _venv_python().exists():
        _reexec_in_venv(raw_argv)
    if missing:
        for name, reason in missing.items():
            print(f"{name} will not be measured: {reason}", file=sys.stderr)
        if not _venv_python().exists():
            print(f"To measure it: python bench/bench_compare.py --setup ({_setup_hint()})", file=sys.stderr)

    warmup = max(1, min(100, args.calls // 10))
    print(f"comparison: {args.repeats} repeats, {args.calls} calls each (+{warmup} warm-up)", file=sys.stderr)
    comparison = measure_comparison(args.calls, args.repeats, warmup, missing)
    async_samples = measure_async(args.repeats)
    thread_samples = measure_threads(args.thread_calls, args.repeats)
    memory = measure_memory(args.memory_calls)
    report = render_report(args, warmup, comparison, async_samples, thread_samples, memory, missing)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    floor = comparison.median("floor")
    assert floor is not None
    print(comparison_table(comparison, floor))
    print()
    print(async_table(async_samples, floor))
    print()
    print(threads_table(thread_samples, floor, args.thread_calls))
    print()
    print(memory_table(memory))
    print()
    print(targets_table(comparison, floor, memory, args.overhead_report))
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
