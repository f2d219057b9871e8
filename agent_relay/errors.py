"""Errors raised by AgentRelay.

Every error derives from one root, so ``except AgentRelayError`` catches all of them. Each carries the
facts it names as attributes (``tool_name``, ``run_id``, ``argument``, ``database``, ...) and a message
that says what to do about it. Configuration mistakes are also ``ValueError``s, so code that validates
input the usual way catches them too::

    AgentRelayError
    ├── ConfigurationError (ValueError)      a runtime, tool or session was set up wrongly
    │   ├── DuplicateToolError               two tools registered under one name
    │   └── SessionStateError                a session used outside its lifetime or entered twice
    ├── EncodingError (ValueError)           a value cannot be stored as canonical JSON
    │   ├── ArgumentEncodingError            ... a tool argument (raised before the tool runs)
    │   └── OutputEncodingError              ... a tool's result or a session output
    ├── LedgerError                          the ledger could not be read or written
    │   └── SchemaVersionError               the ledger was made by another schema version
    ├── CallInProgressError                  another worker holds the claim on this call
    └── RuntimeClosedError                   the runtime was shut down
"""

from __future__ import annotations

__all__ = [
    "AgentRelayError",
    "ArgumentEncodingError",
    "CallInProgressError",
    "ConfigurationError",
    "DuplicateToolError",
    "EncodingError",
    "LedgerError",
    "OutputEncodingError",
    "RuntimeClosedError",
    "SchemaVersionError",
    "SessionStateError",
]


class AgentRelayError(Exception):
    """Root of every error AgentRelay raises."""


class ConfigurationError(AgentRelayError, ValueError):
    """A runtime, tool or session was configured wrongly; raised before any side effect."""


class DuplicateToolError(ConfigurationError):
    """A tool name is already registered on this runtime."""

    def __init__(self, tool_name: str, existing: str, new: str) -> None:
        self.tool_name = tool_name
        super().__init__(
            f"tool name {tool_name!r} is already registered on this runtime (by {existing}); "
            f"{new} cannot take it too. Pass a different name=... to @tool, or use another runtime."
        )


class SessionStateError(ConfigurationError):
    """A session was used outside its lifetime (entered twice, output set after exit, ...)."""


class EncodingError(AgentRelayError, ValueError):
    """A value cannot be encoded as canonical JSON for the ledger and the idempotency key."""

    def __init__(self, message: str, *, tool_name: str | None, path: str, type_name: str) -> None:
        self.tool_name = tool_name
        self.path = path
        self.type_name = type_name
        super().__init__(message)


class ArgumentEncodingError(EncodingError):
    """A tool argument cannot be encoded; the tool did not run and nothing was recorded.

    ``argument`` names the parameter, ``path`` the exact place inside it (``items[2].price``).
    """

    @property
    def argument(self) -> str:
        return self.path.split(".", 1)[0].split("[", 1)[0]


class OutputEncodingError(EncodingError):
    """A tool's result (or a session's output) cannot be encoded.

    For a tool, the body has run (its side effect may have happened), but the call is recorded as
    ``failed`` rather than pretending its output was stored.
    """


class LedgerError(AgentRelayError):
    """The ledger could not be read or written.

    Raised to the caller whenever a record could not be made durable: a tool whose claim failed did not
    run; a tool whose completion failed did run, and its row stays ``pending`` (outcome unknown).
    ``database`` is the ledger's URL with any password masked.
    """

    def __init__(
        self, message: str, *, database: str, run_id: str | None = None, tool_name: str | None = None
    ) -> None:
        self.database = database
        self.run_id = run_id
        self.tool_name = tool_name
        super().__init__(message)


class SchemaVersionError(LedgerError):
    """The ledger's recorded schema version is not the one this version of AgentRelay uses."""

    def __init__(self, *, database: str, found: int, expected: int) -> None:
        self.found = found
        self.expected = expected
        if found > expected:
            advice = "upgrade agent-relay to a version that knows this schema"
        else:
            advice = "upgrade the ledger (a later version of agent-relay ships `agent-relay db upgrade`)"
        super().__init__(
            f"the ledger at {database} has schema version {found}, this agent-relay uses version "
            f"{expected}: {advice}.",
            database=database,
        )


class CallInProgressError(AgentRelayError):
    """Another worker holds the pending claim on this call, so it was not run here."""

    def __init__(self, *, tool_name: str, run_id: str, idempotency_key: str) -> None:
        self.tool_name = tool_name
        self.run_id = run_id
        self.idempotency_key = idempotency_key
        super().__init__(
            f"tool call {tool_name!r} (key {idempotency_key[:16]}...) of run {run_id} is claimed by another "
            f"worker and still pending; it was not run again here. Wait for that worker, or resume the run "
            f"once it is gone."
        )


class RuntimeClosedError(AgentRelayError):
    """The runtime was shut down; create a new one to record more runs."""
