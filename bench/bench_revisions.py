"""Per-call cost of this checkout against an earlier revision, measured in the same run.

    python bench/bench_revisions.py --base 469be01

A ratio against a floor (``bench_overhead.py``) moves with the disk and the load of the day; "is this
change slower than that one" is answered by running both, interleaved, in one session. The base revision
is checked out in a temporary git worktree; each round runs every case once per revision, alternating
which goes first, each in a fresh interpreter that imports its own revision's ``agent_relay``. Both run
the same measuring code (``CHILD`` below, the public API only), so a change to the benchmark cannot
favour one side. Reported: the median µs per call of each revision and their ratio (this checkout ÷
base; below 1 is faster). It writes ``bench/RESULTS_REVISIONS.md``.

Each case is timed from its first timed call until its session has ended, when every row of its calls is
in the ledger. A replay writes its served rows in batches on a background thread; a timer stopped at the
last call left out whatever that thread had not written yet, and how much that was depended on how the
GIL happened to be shared (a writer that stepped once per row got the GIL back only every switch
interval, and wrote most of its rows after the timer stopped).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "RESULTS_REVISIONS.md"
CASES = ("live", "dedup", "replay")

# One measurement in a child process: the case's best µs per call over ``repeats`` fresh ledgers. The
# tool and the calls are bench_overhead.py's (three string arguments, 200 untimed warm-up calls).
CHILD = """
import sys, tempfile, time
sys.path[:0] = [sys.argv[1]]
from agent_relay import AgentRuntime, tool
case, calls, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
WARMUP = 200

def once():
    runtime = AgentRuntime(f"sqlite:///{tempfile.mkdtemp()}/ledger.db")
    ran = []

    @tool(runtime, name="send_email")
    def send_email(to: str, subject: str, body: str) -> str:
        ran.append(to)
        return "msg-1"

    def call(to):
        if send_email(to=to, subject="Hello", body="Hi") != "msg-1":
            raise SystemExit("wrong result")

    warm = [f"warm{i}@example.com" for i in range(WARMUP)]
    timed = [f"user{i}@example.com" for i in range(calls)]
    try:
        if case == "replay":
            with runtime.agent_session(name="bench") as source:
                for to in warm + timed:
                    call(to)
            session = runtime.agent_session(name="bench", replay=True, replay_run_id=source.run_id)
        else:
            session = runtime.agent_session(name="bench")
        with session:
            for to in warm if case != "dedup" else ["user@example.com"] * (1 + WARMUP):
                call(to)
            start = time.perf_counter_ns()
            for to in timed if case != "dedup" else ["user@example.com"] * calls:
                call(to)
        elapsed = time.perf_counter_ns() - start  # (the session has ended: its rows are all written)
    finally:
        runtime.shutdown()
    expected = {"live": WARMUP + calls, "dedup": 1, "replay": WARMUP + calls}[case]
    if len(ran) != expected:
        raise SystemExit(f"{case}: the tool body ran {len(ran)} times, not {expected}")
    return elapsed

best = min(once() for _ in range(repeats))
print(best / calls / 1000)
"""


# The floor of bench_overhead.py (an SDK span around a raw sqlite3 INSERT and UPDATE, each committed),
# measured in the same rounds: both revisions' figures over it are the targets' ratios of this run.
FLOOR_CHILD = """
import sys, tempfile
from pathlib import Path
sys.path[:0] = [sys.argv[1] + "/bench"]
import bench_overhead as b
calls, repeats = int(sys.argv[2]), int(sys.argv[3])
print(min(b.run_floor(calls, 200, Path(tempfile.mkdtemp())) for _ in range(repeats)) / calls / 1000)
"""


def measure_floor(calls: int, repeats: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", FLOOR_CHILD, str(ROOT), str(calls), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return float(done.stdout.strip().splitlines()[-1])


def measure(tree: Path, case: str, calls: int, repeats: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), case, str(calls), str(repeats)],
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
    )
    return float(done.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", required=True, help="the revision to compare with (e.g. 469be01)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement (2000; live: 1/4)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements kept the best of (3)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(
            ["git", "worktree", "add", "-q", "--detach", str(base_tree), args.base], cwd=ROOT, check=True
        )
        try:
            samples: dict[tuple[str, str], list[float]] = {}
            for round_no in range(args.rounds):
                samples.setdefault(("floor", "-"), []).append(measure_floor(args.calls // 4, args.repeats))
                for case in CASES:
                    calls = args.calls // 4 if case == "live" else args.calls
                    trees = [("base", base_tree), ("head", ROOT)]
                    for label, tree in trees if round_no % 2 == 0 else trees[::-1]:
                        samples.setdefault((case, label), []).append(measure(tree, case, calls, args.repeats))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(base_tree)], cwd=ROOT, check=True)
    lines = [
        "# This checkout against an earlier revision",
        "",
        f"`python bench/bench_revisions.py --base {args.base} --rounds {args.rounds}` on "
        f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: base `{args.base}`, this checkout `{head}` (its "
        f"working tree). Median over {args.rounds} interleaved rounds of the best of {args.repeats}.",
        "",
        "| case | base µs/call | this µs/call | this ÷ base | base x floor | this x floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    floor = statistics.median(samples["floor", "-"])
    for case in CASES:
        base, this = statistics.median(samples[case, "base"]), statistics.median(samples[case, "head"])
        ratios = f"{this / base:.2f} | {base / floor:.2f} | {this / floor:.2f}"
        lines.append(f"| {case} | {base:.1f} | {this:.1f} | {ratios} |")
    lines += [
        "",
        f"x floor: over bench_overhead.py's floor measured in the same rounds ({floor:.1f} µs per call: "
        "an SDK span around a raw sqlite3 INSERT and UPDATE, each committed, on this checkout's floor "
        "schema). Every case is timed until its session has ended (see this script's docstring).",
    ]
    report = "\n".join(lines) + "\n"
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
