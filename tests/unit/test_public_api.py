"""The public surface: what ``agent_relay`` exports, and the error tree's promises."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import agent_relay
from agent_relay import errors

EXPECTED = {
    "AgentRelayError", "AgentRuntime", "AgentSession", "ApprovalRejectedError", "ApprovalRequiredError",
    "ArgumentEncodingError", "BudgetExceededError", "BudgetReservationError",
    "CallInDoubtError", "CallInProgressError", "CallInfo", "ClaimLostError", "CompensationFailure",
    "ConfigurationError",
    "DuplicateToolError", "EncodingError", "IdempotencyKeyReuseError", "LedgerError", "LedgerOptions",
    "LedgerReader", "LedgerSpanProcessor", "ModelPrice", "OutputEncodingError", "ReplayDivergenceError",
    "ReplayedError", "Retry", "RunCancelledError", "RuntimeClosedError", "SchemaVersionError",
    "SessionStateError", "ToolTimeoutError", "UnknownRunError",
    "UnknownToolError", "UnpricedUsageError", "UnpricedUsageWarning", "UnrecordedCallWarning",
    "__version__", "current_call", "instrument", "tool", "uninstrument",
}  # fmt: skip


def test_exports_are_pinned_and_sorted() -> None:
    assert set(agent_relay.__all__) == EXPECTED
    assert agent_relay.__all__ == sorted(agent_relay.__all__)
    for name in agent_relay.__all__:
        assert hasattr(agent_relay, name), name


def test_every_error_has_one_root_and_is_drawn_in_the_tree() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert errors.AgentRelayError in classes
    for cls in classes:
        if issubclass(cls, Warning):
            assert cls.__name__ in (errors.__doc__ or "")
            continue
        assert issubclass(cls, errors.AgentRelayError), cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} is missing from the errors tree"


def test_configuration_and_encoding_errors_are_value_errors() -> None:
    for cls in (
        errors.ConfigurationError,
        errors.DuplicateToolError,
        errors.EncodingError,
        errors.ArgumentEncodingError,
        errors.OutputEncodingError,
    ):
        assert issubclass(cls, ValueError), cls


def test_importing_creates_no_ledger_and_no_threads(tmp_path: Path) -> None:
    code = (
        "import threading, agent_relay, agent_relay.runtime, agent_relay.tooling, agent_relay.testing;"
        "print(threading.active_count())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "1"
    assert list(tmp_path.iterdir()) == []
