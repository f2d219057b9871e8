"""A redacted value never leaves through a message: not through the library's own errors, not through a
tool's exception, not through span status, exception events, the session span or the ledger's error
columns. Field names match case-insensitively."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_relay import AgentRuntime, IdempotencyKeyReuseError, ReplayDivergenceError, tool
from agent_relay.content import ContentPolicy
from agent_relay.testing import SpanCapture, capture_spans
from tests.support import calls_of, run_row

SECRET = "hunter2-s3cr3t"
TOKEN = "tok_live_9f8e7d"


def _everything_written(spans: SpanCapture, runtime: AgentRuntime, run_id: str) -> str:
    """Every text the library wrote about the run: span names, attributes, statuses, events, the ledger's
    rows (runs and calls), as one string to search."""
    parts: list[str] = []
    for span in spans.spans():
        parts += [span.name, json.dumps(dict(span.attributes or {}), default=str)]
        parts.append(span.status.description or "")
        for event in span.events:
            parts += [event.name, json.dumps(dict(event.attributes or {}), default=str)]
    parts.append(json.dumps(run_row(runtime, run_id), default=str))
    for row in calls_of(runtime, run_id):
        parts += [str(row["error_message"]), str(row["error_type"])]
    return "\n".join(parts)


@pytest.fixture
def redacting(database_url: str) -> Any:
    runtime = AgentRuntime(
        database_url, content=ContentPolicy(capture=True, redact=("password", "Authorization", "token"))
    )
    yield runtime, capture_spans(runtime)
    runtime.shutdown()


def test_a_tools_own_error_message_is_scrubbed(redacting: Any) -> None:
    runtime, spans = redacting

    @tool(runtime)
    def login(user: str, password: str) -> str:
        raise PermissionError(f"login failed for {user} with password {password}")

    with pytest.raises(PermissionError), runtime.agent_session(name="auth") as session:
        login("ada", SECRET)
    written = _everything_written(spans, runtime, session.run_id)
    assert SECRET not in written
    assert "login failed for ada with password [REDACTED]" in written  # the message, scrubbed
    assert calls_of(runtime, session.run_id)[0]["error_message"] == (
        "login failed for ada with password [REDACTED]"
    )


def test_key_reuse_errors_do_not_show_redacted_arguments(redacting: Any) -> None:
    runtime, spans = redacting

    @tool(runtime, key=lambda args: args["order"])
    def pay(order: str, password: str) -> str:
        return "paid"

    with pytest.raises(IdempotencyKeyReuseError) as caught, runtime.agent_session(name="shop") as session:
        pay("o-1", "first-" + SECRET)
        pay("o-1", SECRET)
    assert SECRET not in str(caught.value) and "password" in str(caught.value)
    assert SECRET not in _everything_written(spans, runtime, session.run_id)


def test_a_divergence_does_not_show_a_recorded_secret_result(redacting: Any) -> None:
    runtime, spans = redacting

    @tool(runtime)
    def issue(user: str) -> dict[str, str]:
        return {"user": user, "token": TOKEN}

    with runtime.agent_session(name="issue") as source:
        issue("ada")
    with (
        pytest.raises(ReplayDivergenceError) as caught,
        runtime.agent_session(name="issue", replay=True, replay_run_id=source.run_id) as replay,
    ):
        issue("bob")
    assert TOKEN not in str(caught.value) and "[REDACTED]" in str(caught.value)
    assert TOKEN not in _everything_written(spans, runtime, replay.run_id)


def test_field_names_match_case_insensitively(redacting: Any) -> None:
    runtime, spans = redacting

    @tool(runtime, redact=("API_KEY",))
    def call(headers: dict[str, str], api_key: str) -> str:
        return "ok"

    with runtime.agent_session(name="http"):
        call({"authorization": "Bearer " + SECRET, "Accept": "json"}, api_key=TOKEN)
    (span,) = spans.tool_spans()
    captured = str((span.attributes or {}).get("gen_ai.tool.call.arguments"))
    assert SECRET not in captured and TOKEN not in captured and "json" in captured
