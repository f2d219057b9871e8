"""Shared fixtures: a runtime on a real database, span capture, and ledger readers.

The integration tests run on SQLite (a file in the test's temp dir). Set AGENT_RELAY_TEST_POSTGRES_URL
(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test) to run them on PostgreSQL as well.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

import agent_relay
from agent_relay import AgentRuntime
from agent_relay.testing import SpanCapture, capture_spans

POSTGRES_ENV = "AGENT_RELAY_TEST_POSTGRES_URL"


def _postgres_url() -> str | None:
    return os.environ.get(POSTGRES_ENV) or None


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty ledger database: a SQLite file, or a private schema on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    base = _postgres_url()
    if base is None:
        pytest.skip(f"PostgreSQL not configured: set {POSTGRES_ENV} to run the ledger tests on it")
    # A private database per test keeps tests independent and lets them run in any order.
    name = f"ar_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(base).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture
def runtime(database_url: str) -> Iterator[AgentRuntime]:
    rt = AgentRuntime(database_url)
    yield rt
    rt.shutdown()


@pytest.fixture
def spans(runtime: AgentRuntime) -> SpanCapture:
    return capture_spans(runtime)


@pytest.fixture
def instrumented(runtime: AgentRuntime) -> Iterator[AgentRuntime]:
    """``runtime`` with the LLM clients instrumented (``agent_relay.instrument``), undone afterwards."""
    agent_relay.instrument(runtime)
    yield runtime
    agent_relay.uninstrument()
