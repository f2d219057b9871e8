"""The benchmarks run: every case once, with tiny sizes, so they cannot rot. Nothing here is timed; the
figures they print are not checked, only that every case ran, checked its own rows and was reported.

The default run is offline: it runs agent_relay's own cases (``run_all.py --no-venv``). The comparison with
DBOS and LangGraph needs them installed in ``bench/.venv`` (from the package index), so its smoke test is
marked ``bench_compare`` and deselected by default; ``.ci/run`` installs bench/.venv and runs it after the
README's test command (``pytest -m bench_compare``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import POSTGRES_ENV

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
BENCH_PYTHON = REPO / "bench" / ".venv" / "bin" / "python"
# The comparison's cases against DBOS and LangGraph, as their rows are labelled.
COMPARED = [
    "DBOS live `@DBOS.step` in a workflow, WAL + NORMAL",
    "DBOS live `@DBOS.step` in a workflow, defaults",
    'LangGraph node super-step, WAL + NORMAL, `durability="sync"`',
    "DBOS recorded step served (fork of the workflow), WAL + NORMAL",
]


def _rows(report: str) -> list[str]:
    """The first cell of every table row of a markdown report."""
    return [line.split("|")[1].strip() for line in report.splitlines() if re.match(r"\|[^-]", line)]


def test_overhead_benchmark_runs_every_case(tmp_path: Path) -> None:
    out = tmp_path / "overhead.md"
    command = [sys.executable, "bench/bench_overhead.py", "--calls", "20", "--repeats", "1"]
    command += ["--durability-calls", "5", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _rows(out.read_text(encoding="utf-8"))
    for case in ("floor: SDK span", "agent_relay live call", "deduplicated", "replayed call", "outside any"):
        assert any(row.startswith(case) or case in row for row in rows), (case, rows)
    for mode in ("strict", "outcome"):
        for sync in ("NORMAL", "FULL"):
            assert f'`durability="{mode}"`, `synchronous={sync}`' in rows
    assert "python bench/bench_overhead.py --calls 20 --repeats 1 --durability-calls 5" in out.read_text()


def test_run_all_writes_every_case_into_one_report(tmp_path: Path) -> None:
    pg_url = os.environ.get(POSTGRES_ENV)
    if not pg_url:
        pytest.skip(f"PostgreSQL not configured: set {POSTGRES_ENV} (bench_workers.py measures it)")
    command = [sys.executable, "bench/run_all.py", "--quick", "--no-venv", "--out-dir", str(tmp_path)]
    command += ["--pg-url", pg_url]
    venv_existed = BENCH_PYTHON.exists()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert BENCH_PYTHON.exists() == venv_existed  # bench/.venv neither created (nor used: see below)
    report = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    rows = _rows(report)
    expected = [
        "live call <= 1.5x floor",
        "replayed call <= 0.4x floor",
        "agent_relay deduplicated call (served from session, 1 span)",
        '`durability="outcome"`, `synchronous=FULL`',
        "100 calls, `asyncio.gather`",
        "1,000 calls, `asyncio.gather`",
        "8",  # threads
        "Python heap (tracemalloc, traced bytes)",
        "`agent-relay show <run>` (1000 calls, text)",
        "`LedgerStore.forward_calls(run_id)` (replay index), 1000-call run",
        "2,000 calls (2 runs)",  # lookup flatness, small ledger against the large one
        *COMPARED,  # listed, as not measured
    ]
    missing = [row for row in expected if row not in rows]
    assert not missing, missing
    for case in COMPARED:
        assert f"| {case} | not measured (see below) |" in report, case
    workers = report.split("## Worker processes")[1]
    for backend in ("SQLite", "PostgreSQL"):
        for count in (1, 4, 8):
            assert re.search(rf"\| {backend} \| {count} \|", workers), (backend, count)
    for durability in ("strict", "outcome"):  # against pgbench with the same statements
        for count in (1, 4):
            assert re.search(rf"\| {durability} \| {count} \| \d+ \| \d+ \| \d+\.\d\d \|", workers)
    for shape in ("1 thread", "8 threads", "async, gather 100"):
        assert re.search(rf"\| {shape} \| \d+ \| \d+\.\d\d \|", workers), shape
    for name in ("RESULTS_OVERHEAD.md", "RESULTS_COMPARE.md", "RESULTS_SCALE.md", "RESULTS_WORKERS.md"):
        assert (tmp_path / name).is_file()


@pytest.mark.bench_compare
def test_comparison_measures_dbos_and_langgraph(tmp_path: Path) -> None:
    if not BENCH_PYTHON.exists():  # asked for by -m bench_compare: a failure, not a skip that passes CI
        pytest.fail(
            "bench/.venv is missing: create it first (python bench/bench_compare.py --setup, or as .ci/run "
            "does); tests install nothing"
        )
    out = tmp_path / "RESULTS_COMPARE.md"
    command = [str(BENCH_PYTHON), "bench/bench_compare.py", "--calls", "20", "--repeats", "1"]
    command += ["--thread-calls", "16", "--memory-calls", "200", "--out", str(out)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    report = out.read_text(encoding="utf-8")
    rows = _rows(report)
    missing = [row for row in COMPARED if row not in rows]
    assert not missing, missing
    assert "not measured (see below)" not in report  # DBOS and LangGraph both ran
    targets = report.split("## Targets")[1].split("\n## ")[0]
    assert "| not measured |" not in targets
