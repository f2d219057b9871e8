"""The framework examples in ``docs/frameworks/`` run as written, each in a fresh interpreter (offline: a
local server or the framework's test model plays the model), where their framework is installed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

DOCS = Path(__file__).resolve().parents[2] / "docs" / "frameworks"
# each example, the framework package it needs (agent-relay[frameworks]), and a line of what it prints
EXAMPLES = {
    "openai_agents_example.py": ("agents", "bookings made: ['LH400']"),
    "langchain_example.py": ("langchain_core", "charges made: [500]"),
    "pydantic_ai_example.py": ("pydantic_ai", "lookups made: ["),
}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_framework_example_runs(example: str, tmp_path: Path) -> None:
    module, shows = EXAMPLES[example]
    pytest.importorskip(module, reason="an optional extra's package (agent-relay[frameworks])")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AGENT_RELAY_"))}
    proc = subprocess.run(
        [sys.executable, "-W", "error", str(DOCS / example)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert shows in proc.stdout
    assert "[succeeded]" in proc.stdout  # the ledger row it prints
