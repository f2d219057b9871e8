"""Values the ledger cannot store are refused with the library's own errors, naming the place, and never
leave a row stuck ``pending`` or a wrong explanation behind."""

from __future__ import annotations

from typing import Any

import pytest

from agent_relay import AgentRuntime, ArgumentEncodingError, OutputEncodingError, tool
from tests.support import calls_of, run_row


def test_an_unencodable_result_fails_the_call_and_the_call_can_run_again(database_url: str) -> None:
    runtime = AgentRuntime(database_url, wait_timeout_s=1)
    ran: list[int] = []
    try:

        @tool(runtime)
        def read_name(n: int) -> str:
            ran.append(n)
            return "caf\udce9"  # a lone surrogate (bytes decoded with surrogateescape): not UTF-8

        with runtime.agent_session(name="names") as session:
            for _ in range(2):  # the same call again: it runs again, never waits on a stuck row
                with pytest.raises(OutputEncodingError, match=r"result.*\\udce9.*UTF-8") as caught:
                    read_name(1)
                assert caught.value.path == "result"
        rows = calls_of(runtime, session.run_id)
    finally:
        runtime.shutdown()
    assert ran == [1, 1]
    assert [(r["status"], r["attempts"]) for r in rows] == [("failed", 2)]
    assert rows[0]["error_type"] == "agent_relay.errors.OutputEncodingError"


@pytest.mark.parametrize(
    ("message", "recorded"),
    [
        ("cannot parse caf\udce9.txt", "cannot parse caf\\udce9.txt"),  # a lone surrogate: not UTF-8
        ("bad byte \x00 at 7", "bad byte \\x00 at 7"),  # NUL: PostgreSQL's text cannot hold it
    ],
    ids=["not-utf8", "nul"],
)
def test_an_error_message_the_ledger_cannot_hold_is_recorded_escaped(
    database_url: str, message: str, recorded: str
) -> None:
    """Alike on both backends: the call's and the run's rows are written (not a ``LedgerError``), with the
    character escaped."""
    runtime = AgentRuntime(database_url)
    try:

        @tool(runtime)
        def parse(path: str) -> str:
            raise ValueError(message)

        with pytest.raises(ValueError), runtime.agent_session(name="files") as session:
            parse("x")
        rows = calls_of(runtime, session.run_id)
        run = run_row(runtime, session.run_id)
    finally:
        runtime.shutdown()
    assert [(r["status"], r["error_message"]) for r in rows] == [("failed", recorded)]
    assert (run["status"], run["error_message"]) == ("failed", recorded)


def _deep(levels: int) -> list[Any]:
    root: list[Any] = []
    current = root
    for _ in range(levels):
        nested: list[Any] = []
        current.append(nested)
        current = nested
    return root


def _loop() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (int("9" * 4000) * 10**400, "more digits than this Python writes"),
        (_deep(5000), "nested deeper than"),
        (_loop(), "nested deeper than"),
        ("x\ud800", "UTF-8 cannot encode"),
    ],
    ids=["huge-int", "deep", "self-reference", "surrogate"],
)
def test_pathological_arguments_are_argument_encoding_errors(
    runtime: AgentRuntime, value: Any, reason: str
) -> None:
    ran: list[Any] = []

    @tool(runtime)
    def store(blob: Any, label: str = "x") -> None:
        ran.append(blob)

    with runtime.agent_session(name="store") as session:
        with pytest.raises(ArgumentEncodingError, match=reason) as caught:
            store(value)
        assert caught.value.argument == "blob" and caught.value.tool_name == "store"
        store("fine")  # the session goes on
    assert len(ran) == 1 and [r["status"] for r in calls_of(runtime, session.run_id)] == ["succeeded"]
