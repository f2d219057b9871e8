"""Idempotency keys: deterministic names for tool calls.

A key is the SHA-256 of the canonical JSON of ``{"v": 1, "tool": name, "phase": phase, "args": args}``,
where ``args`` are the call's arguments bound to the tool's signature with defaults applied. So
``f(1, b=2)``, ``f(a=1, b=2)`` and ``f(1)`` (when ``b`` defaults to 2) share a key, and the key is the
same in every process, on every machine and Python version (``hashlib``, never ``hash()``).
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

from .encoding import JSONValue, canonical_dumps, encode
from .errors import ArgumentEncodingError

KEY_VERSION = 1

FORWARD = "forward"
COMPENSATION = "compensation"


def bind_arguments(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Bind a call to ``signature`` with defaults applied; raises ``TypeError`` like the call would."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def encode_arguments(tool_name: str, arguments: dict[str, Any]) -> dict[str, JSONValue]:
    """Encode bound arguments as JSON data, or raise ``ArgumentEncodingError`` naming the argument."""
    return {
        name: encode(
            value,
            root=name,
            error=ArgumentEncodingError,
            what=f"tool {tool_name!r}: argument",
            tool_name=tool_name,
            then=" The tool was not run.",
        )
        for name, value in arguments.items()
    }


def idempotency_key(
    tool_name: str,
    phase: str,
    arguments: dict[str, JSONValue],
    *,
    user_key: str | None = None,
    occurrence: int | None = None,
) -> str:
    """Return the 64-hex-digit key of a call from its already-encoded arguments.

    ``user_key`` (a caller-supplied key) stands in for the arguments; ``occurrence`` numbers the repeats
    of a tool that opted out of deduplication, so each repeat has its own key, the same in a replay.
    """
    material: dict[str, JSONValue] = {"v": KEY_VERSION, "tool": tool_name, "phase": phase}
    if user_key is None:
        material["args"] = arguments
    else:
        material["key"] = user_key
    if occurrence is not None:
        material["n"] = occurrence
    return hashlib.sha256(canonical_dumps(material).encode("ascii")).hexdigest()


def call_id(run_id: str, phase: str, key: str) -> str:
    """The ledger id of a call: stable for one (run, phase, key), so a retried call keeps its id."""
    return hashlib.sha256(f"{run_id}\x00{phase}\x00{key}".encode()).hexdigest()[:32]
