"""The floor a PostgreSQL ledger is measured against: pgbench running the ledger's own statements.

A pgbench "transaction" here is one tool call's writes, as ``agent_relay.ledger.pg_calls`` sends them
(the statement text is taken from that module): for ``strict``, the claim (``INSERT ... ON CONFLICT ...
RETURNING``) and the outcome (``UPDATE`` to succeeded), each autocommitted; for ``outcome``, the one
``INSERT`` of the finished row. Prepared (``-M prepared``), every value a parameter sent as text, as psycopg
sends them (NULLs written out), into the same ``tool_calls`` table of the same ledger, under a run of its
own. What pgbench reaches is what the server and its WAL flushes allow with a client that costs nearly
nothing; AgentRelay's calls/s are reported as a ratio to it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from agent_relay.ledger import columns as col
from agent_relay.ledger import pg_calls
from agent_relay.ledger.records import CallRecord
from agent_relay.states import CallStatus, Durability

PGBENCH = shutil.which("pgbench") or "/usr/bin/pgbench"
# the values that make each call distinct: pgbench variables set per transaction
_PER_CALL = {"call_id": ":cid", "idempotency_key": ":cid", "seq": ":seq"}
_SETS = "\\set cid random(1, 9223372036854775806)\n\\set seq random(1, 2147483647)\n"


def _text(value: Any) -> str:
    """A parameter's text, as the server receives it from psycopg (text format)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return str(value)


def _statement(
    sql: str, names: tuple[str, ...], values: tuple[Any, ...], defines: dict[str, str], prefix: str
) -> str:
    """``sql`` with its ``%s`` placeholders as pgbench variables (constants added to ``defines``, named
    ``prefix`` + column)."""
    parts = sql.split("%s")
    assert len(parts) == len(names) + 1, (sql, names)
    out = parts[0]
    for name, value, rest in zip(names, values, parts[1:], strict=True):
        if name in _PER_CALL:
            token = _PER_CALL[name]
        elif value is None:
            token = "NULL"
        else:
            token = f":{prefix}{name}"
            defines[f"{prefix}{name}"] = _text(value)
        out += token + rest
    return out + ";\n"


def _record(run_id: str, durability: Durability) -> CallRecord:
    """A call like the benchmark workers' (``send(i, worker)`` returning ``"ok-i"``), finished (the claim
    is made of a pending copy)."""
    now = time.time_ns()
    return CallRecord(
        run_id=run_id, call_id="", seq=0, tool_name="send", phase="forward", idempotency_key="",
        arguments={"i": 1, "worker": 0}, arguments_text='{"i":1,"worker":0}', owner="pgbench:0",
        durability=durability, trace_id="0af7651916cd43dd8448eb211c80319c", span_id="b7ad6b7169203331",
        started_ns=now, ended_ns=now + 50_000, status=CallStatus.SUCCEEDED, output="ok-1",
        lease_until_ns=now + 30_000_000_000,  # (a claim carries a lease, as the writer's do)
    )  # fmt: skip


def script(run_id: str, durability: Durability) -> tuple[str, dict[str, str]]:
    """The pgbench script of one call of ``durability``, and its ``-D`` variables."""
    record = _record(run_id, durability)
    defines: dict[str, str] = {}
    text = _SETS
    if durability is Durability.STRICT:
        claim = col.postgres_params(col.CLAIM)(dataclasses.replace(record, status=CallStatus.PENDING))
        finish_names = (*col.OUTCOME, "call_id", "owner")  # (an outcome lands only on its own claim)
        finish = col.postgres_params(finish_names)(record)
        text += _statement(pg_calls.CLAIM, col.CLAIM, claim, defines, "claim_")
        text += _statement(pg_calls.FINISH, finish_names, finish, defines, "finish_")
    else:
        row = col.postgres_params(col.ROW)(record)
        text += _statement(pg_calls.INSERT_OUTCOME, col.ROW, row, defines, "row_")
    return text, defines


def create_run(url: str) -> str:
    """The ``agent_runs`` row pgbench's calls belong to (the foreign key wants one)."""
    run_id = str(uuid.uuid4())
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO agent_runs (run_id, name, status, mode, started_at) "
                "VALUES (%(run_id)s, 'pgbench', 'running', 'live', now())",
                {"run_id": run_id},
            )
    finally:
        engine.dispose()
    return run_id


def run_pgbench(url: str, run_id: str, durability: Durability, clients: int, seconds: float) -> float:
    """pgbench's calls/s (its transactions per second) with ``clients`` connections for ``seconds``."""
    parsed = sa.make_url(url)
    text, defines = script(run_id, durability)
    with tempfile.TemporaryDirectory(prefix="pgbench-floor-") as tmp:
        path = Path(tmp) / f"{durability}.sql"
        path.write_text(text, encoding="utf-8")
        command = [
            PGBENCH, "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients),
            "-T", str(max(1, round(seconds))), "-f", str(path),
            "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432),
            "-U", parsed.username or "postgres",
            *(arg for name, value in defines.items() for arg in ("-D", f"{name}={value}")),
            parsed.database or "postgres",
        ]  # fmt: skip
        env = dict(os.environ)
        if parsed.password:
            env["PGPASSWORD"] = parsed.password
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    found = re.search(r"^tps = ([0-9.]+)", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"pgbench failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


def version() -> str:
    done = subprocess.run([PGBENCH, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"
