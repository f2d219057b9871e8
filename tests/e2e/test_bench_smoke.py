"""The benchmarks run: every case once, with tiny sizes, so they cannot rot. Nothing here is timed; the
figures they print are not checked, only that every case ran, checked its own rows and was reported."""

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


@pytest.mark.timeout(1200)  # the first run creates bench/.venv and installs DBOS and LangGraph into it
def test_run_all_writes_every_case_into_one_report(tmp_path: Path) -> None:
    pg_url = os.environ.get(POSTGRES_ENV)
    if not pg_url:
        pytest.skip(f"PostgreSQL not configured: set {POSTGRES_ENV} (bench_workers.py measures it)")
    command = [sys.executable, "bench/run_all.py", "--quick", "--out-dir", str(tmp_path), "--pg-url", pg_url]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1100)
    assert done.returncode == 0, done.stderr[-4000:]
    report = (tmp_path / "RESULTS.md").read_text(encoding="utf-8")
    rows = _rows(report)
    expected = [
        "live call <= 1.5x floor",
        "replayed call <= 0.4x floor",
        "agent_relay deduplicated call (served from session, 1 span)",
        '`durability="outcome"`, `synchronous=FULL`',
        "DBOS live `@DBOS.step` in a workflow, WAL + NORMAL",
        "DBOS live `@DBOS.step` in a workflow, defaults",
        'LangGraph node super-step, WAL + NORMAL, `durability="sync"`',
        "DBOS recorded step served (fork of the workflow), WAL + NORMAL",
        "100 calls, `asyncio.gather`",
        "1,000 calls, `asyncio.gather`",
        "8",  # threads
        "Python heap (tracemalloc, traced bytes)",
        "`agent-relay show <run>` (1000 calls, text)",
        "`LedgerStore.forward_calls(run_id)` (replay index), 1000-call run",
        "2,000 calls (2 runs)",  # lookup flatness, small ledger against the large one
    ]
    missing = [row for row in expected if row not in rows]
    assert not missing, missing
    targets = report.split("## Per-call overhead")[0]
    assert "| not measured |" not in targets  # DBOS and LangGraph both ran
    assert "not measured (see below)" not in report
    workers = report.split("## Worker processes")[1]
    for backend in ("SQLite", "PostgreSQL"):
        for count in (1, 4, 8):
            assert re.search(rf"\| {backend} \| {count} \|", workers), (backend, count)
    for name in ("RESULTS_OVERHEAD.md", "RESULTS_COMPARE.md", "RESULTS_SCALE.md", "RESULTS_WORKERS.md"):
        assert (tmp_path / name).is_file()
