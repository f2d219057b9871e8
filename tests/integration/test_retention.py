"""Retention and bulk export: ``prune`` deletes old runs with their calls and attempts, in short
transactions, never a run still running or waiting for a person, and a process recording calls meanwhile
does not fail; ``agent-relay export`` streams many runs as JSON Lines or Parquet; ``runs`` filters and
``show`` lists a retried call's earlier attempts. SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent_relay import AgentRuntime, tool
from agent_relay.ledger import agent_runs, tool_calls
from agent_relay.ledger.schema import tool_call_attempts
from agent_relay.query import LedgerReader

OLD = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
COUNT = sa.select(sa.func.count())


def _counts(runtime: AgentRuntime) -> tuple[int, int, int]:
    with runtime.ledger.engine.connect() as conn:
        return tuple(  # type: ignore[return-value]
            conn.execute(COUNT.select_from(t)).scalar_one()
            for t in (agent_runs, tool_calls, tool_call_attempts)
        )


def _backdate(runtime: AgentRuntime, run_id: str, status: str | None = None, when: dt.datetime = OLD) -> None:
    values: dict[str, Any] = {"started_at": when}
    if status is not None:
        values["status"] = status
    with runtime.ledger.engine.begin() as conn:
        conn.execute(agent_runs.update().where(agent_runs.c.run_id == run_id).values(**values))


def _runs(runtime: AgentRuntime) -> dict[str, str]:
    """Runs of every kind, by what they stand for: old ones (one with a retried call, so an attempt row)
    of each status, and a recent one."""
    tries: list[int] = []

    @tool(runtime)
    def flaky(n: int) -> int:
        tries.append(n)
        if len(tries) == 1:
            raise ConnectionError("reset")
        return n

    made = {}
    for label in ("old", "old_failed", "running", "in_doubt", "compensation_failed", "recent"):
        try:
            with runtime.agent_session(name=label) as session:
                if label == "old":
                    with pytest.raises(ConnectionError):
                        flaky(1)
                flaky(1)
                if label == "old_failed":
                    raise RuntimeError("agent gave up")
        except RuntimeError:
            pass
        made[label] = session.run_id
    for label, run_id in made.items():
        if label != "recent":
            status = label if label in ("running", "in_doubt", "compensation_failed") else None
            _backdate(runtime, run_id, status)
    return made


def test_prune_deletes_old_runs_with_their_calls_and_attempts_and_keeps_the_rest(
    runtime: AgentRuntime,
) -> None:
    made = _runs(runtime)
    assert _counts(runtime) == (6, 6, 1)
    dry = runtime.ledger.prune(dt.timedelta(days=30), dry_run=True)
    assert (dry.runs, dry.calls, dry.dry_run) == (2, 2, True) and _counts(runtime) == (6, 6, 1)
    only_failed = runtime.ledger.prune(dt.timedelta(days=30), statuses=["failed"])
    assert (only_failed.runs, only_failed.calls) == (1, 1)
    done = runtime.ledger.prune(dt.timedelta(days=30), batch=1)
    assert (done.runs, done.calls, done.dry_run) == (1, 1, False)
    assert _counts(runtime) == (4, 4, 0)  # the retried call's attempt went with its run
    with LedgerReader(runtime.ledger) as ledger:
        kept = {run.name for run in ledger.runs()}
    assert kept == {"running", "in_doubt", "compensation_failed", "recent"}
    assert runtime.ledger.prune(dt.timedelta(days=30)).runs == 0
    assert made["recent"] in {r.run_id for r in LedgerReader(runtime.ledger).runs()}


def test_prune_refuses_bad_arguments_before_deleting(runtime: AgentRuntime) -> None:
    _runs(runtime)
    with pytest.raises(ValueError, match="'in_doubt' are never pruned"):
        runtime.ledger.prune(dt.timedelta(days=1), statuses=["failed", "in_doubt"])
    with pytest.raises(ValueError, match="unknown run status 'done'"):
        runtime.ledger.prune(dt.timedelta(days=1), statuses="done")
    with pytest.raises(TypeError, match=r"older_than must be a datetime\.timedelta"):
        runtime.ledger.prune(30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch must be a positive int"):
        runtime.ledger.prune(dt.timedelta(days=1), batch=0)
    assert _counts(runtime) == (6, 6, 1)


WRITER = textwrap.dedent(
    """
    import os, sys
    from agent_relay import AgentRuntime, tool

    runtime = AgentRuntime(sys.argv[1])

    @tool(runtime)
    def record(n: int) -> int:
        return n

    done = 0
    while done < 200 or not os.path.exists(sys.argv[2]):
        with runtime.agent_session(name="busy-writer"):
            record(done)
            record(done + 1)
        done += 2
        if done == 2:
            print("ready", flush=True)
    runtime.shutdown()
    print(done, flush=True)
    """
)


def test_prune_while_another_process_records_calls(runtime: AgentRuntime, tmp_path: Path) -> None:
    """Many old runs are pruned in batches while a subprocess records calls the whole time: it finishes
    every call, none failing (each batch is a short transaction)."""
    runs = [
        {"run_id": f"old-{i:06d}", "name": "old", "status": "succeeded", "mode": "live", "started_at": OLD}
        for i in range(100_000)
    ]
    calls = [
        {"call_id": f"c{i:06d}", "run_id": f"old-{i:06d}", "seq": 1, "tool_name": "t", "phase": "forward",
         "idempotency_key": "k", "status": "succeeded", "attempts": 1, "started_at": OLD}
        for i in range(100_000)
    ]  # fmt: skip
    with runtime.ledger.engine.begin() as conn:
        conn.execute(agent_runs.insert(), runs)
        conn.execute(tool_calls.insert(), calls)
    url = runtime.ledger.db.url.render_as_string(hide_password=False)
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, url, str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        pruned = runtime.ledger.prune(dt.timedelta(days=30))
    finally:
        stop.touch()
        out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    done = int(out.strip())
    assert (pruned.runs, pruned.calls) == (100_000, 100_000)
    with runtime.ledger.engine.connect() as conn:
        written = conn.execute(
            sa.select(tool_calls.c.status, sa.func.count())
            .join(agent_runs)
            .where(agent_runs.c.name == "busy-writer")
            .group_by(tool_calls.c.status)
        ).all()
    assert [tuple(row) for row in written] == [("succeeded", done)] and done >= 200
    assert _counts(runtime)[0] == done // 2


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
    return subprocess.run(
        [sys.executable, "-m", "agent_relay.cli", "--db", url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _on_a_terminal(url: str, *args: str) -> tuple[int, str]:
    """The command run with its stderr on a pseudo-terminal: (exit status, what it drew there)."""
    import pty

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
    master, slave = pty.openpty()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "agent_relay.cli", "--db", url, *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, timeout=120,
            env={**env, "TERM": "xterm", "COLUMNS": "100"},
        )  # fmt: skip
    finally:
        os.close(slave)
    drawn = b""
    with contextlib.suppress(OSError):  # (the pty's end: EIO once the child is gone)
        while chunk := os.read(master, 65536):
            drawn += chunk
    os.close(master)
    return done.returncode, drawn.decode(errors="replace")


def _exported(runtime: AgentRuntime) -> list[str]:
    """Three runs, the first two of them old, whose calls have exact values to export."""

    @tool(runtime, cost=0.1)
    def quote(sku: str) -> dict[str, Any]:
        return {"sku": sku, "price": 1.0, "big": 2**70}

    ids = []
    for sku in ("a", "b", "c"):
        with runtime.agent_session(name="quotes", input_payload={"sku": sku}) as session:
            quote(sku)
        ids.append(session.run_id)
    _backdate(runtime, ids[0])
    _backdate(runtime, ids[1], when=OLD + dt.timedelta(minutes=1))
    return ids


def test_export_many_runs_as_json_lines(runtime: AgentRuntime) -> None:
    ids = _exported(runtime)
    url = runtime.ledger.db.url.render_as_string(hide_password=False)
    done = _cli(url, "export", "--since", "7d")
    assert done.returncode == 0 and done.stderr == "", done.stderr  # piped: no progress drawn
    [line] = done.stdout.splitlines()  # the two old runs are out of range
    record = json.loads(line)
    assert record["run"]["run_id"] == ids[2] and record["run"]["input_payload"] == {"sku": "c"}
    [call] = record["calls"]
    assert call["output"] == {"sku": "c", "price": 1.0, "big": 2**70} and Decimal(
        call["cost_usd"]
    ) == Decimal("0.1")
    everything = _cli(url, "export", "--format", "jsonl", "--until", "7d")
    assert [json.loads(x)["run"]["run_id"] for x in everything.stdout.splitlines()] == ids[:2]  # oldest first
    refused = _cli(url, "export", ids[0], "--since", "7d")
    assert refused.returncode == 2 and "leave RUN out to export many" in refused.stderr


def test_export_many_runs_as_parquet(runtime: AgentRuntime, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    ids = _exported(runtime)
    with runtime.ledger.engine.begin() as conn:  # every column of a run goes out typed, this one too
        conn.execute(agent_runs.update().where(agent_runs.c.run_id == ids[2]).values(cancel_requested_at=OLD))
    url = runtime.ledger.db.url.render_as_string(hide_password=False)
    out = tmp_path / "runs.parquet"
    done = _cli(url, "export", "--format", "parquet", "--output", str(out))
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out).to_pylist()
    assert [row["run_id"] for row in rows] == ids
    call = rows[2]["calls"][0]
    assert (call["tool_name"], call["cost_usd"], json.loads(call["output"])["big"]) == (
        "quote", Decimal("0.1"), 2**70,
    )  # fmt: skip
    assert rows[2]["started_at"].tzinfo is not None and rows[2]["cost_usd"] == Decimal("0.1")
    assert rows[2]["cancel_requested_at"] == OLD and rows[1]["calls"]
    assert _cli(url, "export", "--format", "parquet").returncode == 2  # a file is needed


def test_prune_from_the_command_line(runtime: AgentRuntime) -> None:
    _runs(runtime)
    url = runtime.ledger.db.url.render_as_string(hide_password=False)
    dry = _cli(url, "prune", "--older-than", "30d", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.startswith("would delete 2 runs (2 calls) started before")
    refused = _cli(url, "prune", "--older-than", "30d", "--status", "running")
    assert refused.returncode == 2 and "never pruned" in refused.stderr
    done = _cli(url, "prune", "--older-than", "30d", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["runs"] == 2 and done.stderr == ""
    assert _counts(runtime) == (4, 4, 0)


def test_progress_is_drawn_on_a_terminal(runtime: AgentRuntime, tmp_path: Path) -> None:
    _exported(runtime)
    url = runtime.ledger.db.url.render_as_string(hide_password=False)
    status, drawn = _on_a_terminal(url, "export", "-o", str(tmp_path / "runs.jsonl"))
    assert status == 0 and "exporting runs" in drawn and "100%" in drawn
    assert len((tmp_path / "runs.jsonl").read_text().splitlines()) == 3
    status, drawn = _on_a_terminal(url, "prune", "--older-than", "30d")
    assert status == 0 and "pruning runs" in drawn


def test_runs_filters_from_the_command_line(runtime: AgentRuntime) -> None:
    ids = _exported(runtime)
    with runtime.agent_session(name="replayed", replay=True, replay_run_id=ids[2]) as replay:
        pass  # (nothing called: the replay records a run of its own, mode replay)
    url = runtime.ledger.db.url.render_as_string(hide_password=False)

    def listed(*args: str) -> list[str]:
        done = _cli(url, "runs", "--json", *args)
        assert done.returncode == 0, done.stderr
        return [run["run_id"] for run in json.loads(done.stdout)]

    assert listed("--until", "7d") == [ids[1], ids[0]]  # newest first
    assert listed("--mode", "replay") == [replay.run_id]
    assert listed("--mode", "live", "--since", "7d") == [ids[2]]
    assert listed("--parent", ids[2]) == []


@pytest.mark.parametrize(("max_calls", "batches"), [(3, [1, 1, 1, 1, 1]), (4, [2, 2, 1]), (100, [3, 2])])
def test_a_prune_batch_holds_few_runs_and_few_calls(
    runtime: AgentRuntime, max_calls: int, batches: list[int]
) -> None:
    """Each transaction deletes at most ``batch`` runs whose calls add up to at most ``max_calls``."""
    with runtime.ledger.engine.begin() as conn:
        conn.execute(
            agent_runs.insert(),
            [{"run_id": f"r{i}", "name": "old", "status": "failed", "mode": "live", "started_at": OLD}
             for i in range(5)],
        )  # fmt: skip
        conn.execute(
            tool_calls.insert(),
            [{"call_id": f"c{i}{j}", "run_id": f"r{i}", "seq": j, "tool_name": "t", "phase": "forward",
              "idempotency_key": f"k{j}", "status": "failed", "attempts": 1, "started_at": OLD}
             for i in range(5) for j in range(2)],
        )  # fmt: skip
    seen: list[int] = []
    pruned = runtime.ledger.prune(dt.timedelta(days=1), batch=3, max_calls=max_calls, progress=seen.append)
    assert seen == batches and (pruned.runs, pruned.calls) == (5, 10)
    assert _counts(runtime) == (0, 0, 0)


def test_show_lists_a_retried_calls_earlier_attempts(runtime: AgentRuntime) -> None:
    tries: list[str] = []

    @tool(runtime)
    def send(to: str) -> str:
        tries.append(to)
        if len(tries) == 1:
            raise ConnectionError("smtp: connection reset\nsecond line")
        return "sent"

    with runtime.agent_session(name="mail") as session:
        with pytest.raises(ConnectionError):
            send("ops@example.com")
        send("ops@example.com")
    url = runtime.ledger.db.url.render_as_string(hide_password=False)
    shown = _cli(url, "show", session.run_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    call = next(i for i, line in enumerate(lines) if line.startswith("  #") and " send " in line)
    assert "succeeded" in lines[call] and "attempts 2" in lines[call]
    # under the call: its arguments, output, then the earlier attempt (its message's first line)
    assert lines[call + 3].strip().startswith("attempt 1 failed ConnectionError: smtp: connection reset")
    assert "second line" not in shown.stdout
    data = json.loads(_cli(url, "show", session.run_id, "--json").stdout)
    [history] = [c["history"] for c in data["calls"]]
    assert [(a["attempt"], a["status"], a["latest"]) for a in history] == [
        (1, "failed", False),
        (2, "succeeded", True),
    ]
