"""Idempotency keys: deterministic names for tool calls.

A key is the SHA-256 of the canonical JSON of ``{"v": 1, "tool": name, "phase": phase, "args": args}``,
where ``args`` are the call's arguments bound to the tool's signature with defaults applied. So
``f(1, b=2)``, ``f(a=1, b=2)`` and ``f(1)`` (when ``b`` defaults to 2) share a key, and the key is the
same in every process, on every machine and Python version (``hashlib``, never ``hash()``).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable
from typing import Any

from .encoding import JSONValue, canonical_dumps, encode
from .errors import ArgumentEncodingError

KEY_VERSION = 1


def bind_arguments(
    signature: inspect.Signature, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Bind a call to ``signature`` with defaults applied; raises ``TypeError`` like the call would."""
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


Binder = Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]

_PLAIN_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def binder(signature: inspect.Signature) -> Binder:
    """``bind_arguments`` for one signature, made once per tool.

    For the common signature (named parameters only: no ``*args``, ``**kwargs`` or positional-only) a
    call is bound with a few dict operations; anything unusual — a missing, unknown or repeated argument
    — and every other signature go through ``inspect.Signature.bind``, which raises as the call would.
    """
    params = list(signature.parameters.values())
    if not all(p.kind in _PLAIN_KINDS for p in params):
        return lambda args, kwargs: bind_arguments(signature, args, kwargs)
    names = tuple(p.name for p in params)
    positional = tuple(p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
    defaults = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}

    known = frozenset(names)
    required = known - defaults.keys()

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) <= len(positional) and kwargs.keys() <= known:
            given = dict(zip(positional, args, strict=False))
            if given.keys().isdisjoint(kwargs):
                given.update(kwargs)
                if required <= given.keys():
                    return {n: given[n] if n in given else defaults[n] for n in names}
        return bind_arguments(signature, args, kwargs)

    return bind


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
    arguments_text: str | None = None,
) -> str:
    """Return the 64-hex-digit key of a call from its already-encoded arguments.

    ``user_key`` (a caller-supplied key) stands in for the arguments; ``occurrence`` numbers the repeats
    of a tool that opted out of deduplication, so each repeat has its own key, the same in a replay.
    ``arguments_text``, when given, is ``canonical_dumps(arguments)`` already made.

    The material is the canonical JSON of ``{"v", "tool", "phase", "args" | "key"[, "n"]}``, written out
    here member by member in sorted order (the arguments' text is reused, not serialised again).
    """
    if user_key is None:
        head = '{"args":' + (canonical_dumps(arguments) if arguments_text is None else arguments_text)
    else:
        head = '{"key":' + canonical_dumps(user_key)
    if occurrence is not None:
        head += f',"n":{int(occurrence)}'
    material = head + _key_tail(phase, tool_name)
    return hashlib.sha256(material.encode("ascii")).hexdigest()


@functools.lru_cache(maxsize=4096)
def _key_tail(phase: str, tool_name: str) -> str:
    return f',"phase":{canonical_dumps(phase)},"tool":{canonical_dumps(tool_name)},"v":{KEY_VERSION}}}'


def call_id(run_id: str, phase: str, key: str) -> str:
    """The ledger id of a call: stable for one (run, phase, key), so a retried call keeps its id."""
    return hashlib.sha256(f"{run_id}\x00{phase}\x00{key}".encode()).hexdigest()[:32]


def external_key(run_id: str, phase: str, key: str) -> str:
    """The key a tool forwards to an external API's own idempotency header: scoped to the run, so a
    retried or resumed call carries the same one and a call of another run (a second order, a replay
    gone live) never shares it — unlike the idempotency key, which is the same in every run."""
    return hashlib.sha256(f"agent_relay.external\x00{run_id}\x00{phase}\x00{key}".encode()).hexdigest()
