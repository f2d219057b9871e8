"""Redaction and truncation of what reaches spans."""

from __future__ import annotations

import json

import pytest

from agent_relay.content import REDACTED, ContentPolicy, Redactor, attribute_text


def test_names_and_dotted_paths_redact_at_any_depth() -> None:
    redact = Redactor(["password", "card.number"])
    data = {
        "user": "ada", "password": "hunter2",
        "card": {"number": "4242", "exp": "12/30"},
        "items": [{"password": "x", "card": {"number": "4343"}, "number": "kept: not under card"}],
    }  # fmt: skip
    assert redact(data) == {
        "user": "ada", "password": REDACTED,
        "card": {"number": REDACTED, "exp": "12/30"},
        "items": [{"password": REDACTED, "card": {"number": REDACTED}, "number": "kept: not under card"}],
    }  # fmt: skip
    assert data["password"] == "hunter2"  # the original is untouched
    assert Redactor([])(data) is data


@pytest.mark.parametrize("limit", [32, 50, 100, 1000])
@pytest.mark.parametrize(
    "value", [{"text": "a" * 5000}, ['é"\\\n' * 800], "x" * 10_000, {"n": list(range(3000))}]
)
def test_truncated_text_stays_valid_json_within_the_limit(value: object, limit: int) -> None:
    text = attribute_text(value, limit)
    assert len(text) <= limit
    parsed = json.loads(text)
    assert isinstance(parsed, str) and parsed.endswith("...[truncated]")


def test_short_values_are_left_whole() -> None:
    assert json.loads(attribute_text({"a": [1, "b"]}, 100)) == {"a": [1, "b"]}


def test_policy_from_environment() -> None:
    policy = ContentPolicy.from_env(
        {
            "AGENT_RELAY_CAPTURE_CONTENT": "true",
            "AGENT_RELAY_REDACT": "token, card.cvc",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT": "256",
        }
    )
    assert (policy.capture, policy.redact, policy.attribute_limit) == (True, ("token", "card.cvc"), 256)
    assert ContentPolicy.from_env({}).capture is False


def test_attribute_limit_is_checked() -> None:
    with pytest.raises(ValueError, match="attribute_limit"):
        ContentPolicy(attribute_limit=5)
