"""The README's examples and the demo run as written, on a fresh ledger."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CONTINUES = "# continuing the basic workflow above"
README = (ROOT / "README.md").read_text()
_RAW = re.findall(r"```python\n(.*?)```", README, flags=re.S)
# A block that continues the basic workflow runs after it, as a reader would run it.
BLOCKS = [_RAW[0] + block if block.startswith(CONTINUES) else block for block in _RAW]
# What a block prints, where printing is what it shows: (a line of the block, its whole output).
PRINTS = [('print(f"cancelling {forward_result}")', "cancelling PNR-LH400\n")]  # the forward call's result
# A block showing an optional extra's package (the frameworks) runs where it is installed, as its tests do.
OPTIONAL = ("mcp", "agents", "pydantic_ai", "langchain_core", "langgraph")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
    return env


def test_readme_has_examples_that_check_what_they_show() -> None:
    assert len(BLOCKS) >= 2
    assert len(BLOCKS) == README.count("```python")  # every block is run below
    # A block without an assert passes whatever the code did (a replay that silently ran live, say).
    assert [i for i, block in enumerate(_RAW) if not re.search(r"^\s*assert ", block, flags=re.M)] == []


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    for module in OPTIONAL:
        if re.search(rf"^(from|import) {module}\b", BLOCKS[index], flags=re.M):
            pytest.importorskip(module, reason="an optional extra's package (agent-relay[frameworks])")
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKS[index]],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for line, output in PRINTS:
        if line in BLOCKS[index]:
            assert proc.stdout == output


def test_seed_example_leaves_the_promised_rows(tmp_path: Path) -> None:
    seed = next(b for b in BLOCKS if "email_flow" in b)
    subprocess.run([sys.executable, "-c", seed], cwd=tmp_path, env=_env(), check=True, timeout=120)
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'agent_relay.db'}")  # the documented default
    with engine.connect() as conn:
        calls = conn.exec_driver_sql("SELECT tool_name, phase, status, output FROM tool_calls").all()
        runs = conn.exec_driver_sql("SELECT name, status, output FROM agent_runs").all()
    engine.dispose()
    assert calls == [("send_email", "forward", "succeeded", '"msg-123"')]
    assert runs == [("email_flow", "succeeded", '{"message_id":"msg-123"}')]


def test_demo_runs_on_the_default_sqlite_ledger(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "demo" / "agent.py")],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "ran 1 time(s): deduplicated" in out
    assert re.search(r"trace id: [0-9a-f]{32}", out)
    assert (tmp_path / "agent_relay.db").exists()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'agent_relay.db'}")
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT c.tool_name, c.status, c.attempts FROM tool_calls c JOIN agent_runs r USING (run_id) "
            "WHERE r.name = 'email_flow' AND r.mode = 'live' ORDER BY c.seq"
        ).all()
        runs = conn.exec_driver_sql("SELECT name, status, mode FROM agent_runs").all()
    engine.dispose()
    assert rows[:2] == [("send_email", "succeeded", 1), ("open_ticket", "succeeded", 2)]
    assert sorted(tuple(r) for r in runs) == [
        ("email_flow", "succeeded", "live"),
        ("email_flow", "succeeded", "replay"),
        ("model_agent", "succeeded", "live"),
        ("model_agent", "succeeded", "replay"),
        ("newsletter", "succeeded", "resume"),
        ("refunds", "succeeded", "resume"),
        ("research", "failed", "live"),
        ("trip_booking", "compensated", "live"),
    ]
    assert "hotel booking H-Adlon cancelled" in out and "flight booking PNR-LH400 cancelled" in out
    assert "web_search ran 2 times before the budget stopped the run" in out
    assert "tool bodies run during the replay: 0; output identical: True" in out
    # the resumed newsletter: fetch and render served from the ledger, only the failed send ran again
    assert out.count("fetched subscribers of weekly") == 1 and "sent issue to 2 subscribers" in out
    # the model-driven loop: two model calls recorded, none sent again by its replay
    assert "model requests: 2 while recording, 0 during the replay" in out
    # the refund over $100: stopped for approval, approved with the CLI, paid once when resumed
    assert "issue_refund awaits approval" in out and "approved by demo-operator" in out
    assert out.count("refunded $40 to ada") == 1 and out.count("refunded $250 to grace") == 1
