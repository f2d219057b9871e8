"""Idempotency keys: deterministic names for tool calls that reveal nothing of their arguments.

A key is the HMAC-SHA256, under the ledger's key secret, of the canonical JSON of
``{"v": 2, "tool": name, "phase": phase, "args": args}``, where ``args`` are the call's arguments bound to
the tool's signature with defaults applied. So ``f(1, b=2)``, ``f(a=1, b=2)`` and ``f(1)`` (when ``b``
defaults to 2) share a key, and every process using the same ledger (and so the same secret) makes the
same key, on every machine and Python version (``hashlib``, never ``hash()``). Without the secret a key
cannot be recomputed, so hashing candidate values (a PIN, a card number) against the keys a trace
backend received finds nothing, even for a redacted argument.

Version 1 (ledgers before schema version 5) was the plain SHA-256 of the same material with ``"v": 1``;
runs recorded with it keep it (``KeyScheme.LEGACY``), so they replay, fork and resume unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import hmac
import inspect
from collections.abc import Callable
from typing import Any

from .encoding import JSONValue, canonical_dumps, encode
from .errors import ArgumentEncodingError, ConfigurationError

KEY_VERSION = 2  # the version new runs key their calls with; see KeyScheme
LEGACY_KEY_VERSION = 1
_BLOCK = 64  # SHA-256's block size, for HMAC's pads


class KeyScheme:
    """How one run's keys are made: version 2, HMAC-SHA256 under a secret named ``key_id`` (the
    secret's fingerprint); or version 1, plain SHA-256 (``LEGACY``, runs recorded before version 2).

    The HMAC's inner and outer hash states are made once here (RFC 2104), so a key costs two hash
    copies and updates rather than a new HMAC object per call.
    """

    __slots__ = ("_inner", "_outer", "key_id", "version")

    LEGACY: KeyScheme

    def __init__(self, secret: bytes | None) -> None:
        self.version = LEGACY_KEY_VERSION if secret is None else KEY_VERSION
        self.key_id = None if secret is None else fingerprint(secret)
        self._inner = self._outer = None
        if secret is not None:
            padded = (hashlib.sha256(secret).digest() if len(secret) > _BLOCK else secret).ljust(
                _BLOCK, b"\0"
            )
            self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
            self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def digest(self, material: str) -> str:
        """The 64-hex-digit key of ``material`` (ASCII: canonical JSON escapes the rest)."""
        data = material.encode("ascii")
        if self._inner is None or self._outer is None:
            return hashlib.sha256(data).hexdigest()
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def __repr__(self) -> str:
        return f"KeyScheme(version={self.version}, key_id={self.key_id!r})"


KeyScheme.LEGACY = KeyScheme(None)


def fingerprint(secret: bytes) -> str:
    """The name of a key secret, stored with each run it keys: reveals nothing of the secret, and is the
    same wherever the same secret is used (in the ledger's table or supplied from outside)."""
    return hmac.new(secret, b"agent_relay.key_id", hashlib.sha256).hexdigest()[:16]


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
            given = kwargs
            if args:
                given = dict(zip(positional, args, strict=False))
                if not given.keys().isdisjoint(kwargs):  # an argument given twice: bind raises
                    return bind_arguments(signature, args, kwargs)
                given.update(kwargs)
            if required <= given.keys():
                if len(given) < len(names):
                    given = {**defaults, **given}
                return dict(zip(names, map(given.__getitem__, names), strict=True))  # (in order)
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
    scheme: KeyScheme = KeyScheme.LEGACY,
) -> str:
    """Return the 64-hex-digit key of a call from its already-encoded arguments, as ``scheme`` makes keys
    (a run's: ``Run.keys``).

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
    return scheme.digest(head + _key_tail(phase, tool_name, scheme.version))


@functools.lru_cache(maxsize=4096)
def _key_tail(phase: str, tool_name: str, version: int) -> str:
    return f',"phase":{canonical_dumps(phase)},"tool":{canonical_dumps(tool_name)},"v":{version}}}'


KEY_SCOPES = ("run", "global")


@dataclasses.dataclass(frozen=True, slots=True)
class GlobalKey:
    """``@tool(key=..., key_scope="global")``: the key deduplicates across runs, for ``retain`` (None:
    for good) after the call that holds it started."""

    retain: dt.timedelta | None


def global_key(
    scope: object, retain: object, *, has_key: bool, deduplicate: bool, tool_name: str
) -> GlobalKey | None:
    """Check ``key_scope=`` and ``retain=`` together; the tool's ``GlobalKey``, or None (run scope)."""
    where = f"@tool({tool_name!r})"
    if scope not in KEY_SCOPES:
        raise ConfigurationError(
            f"{where}: key_scope must be 'run' (the default: a key deduplicates within its run) or 'global' "
            f"(across runs: an order id charged once, ever), not {scope!r}."
        )
    if scope == "run":
        if retain is not None:
            raise ConfigurationError(
                f"{where}: retain=... needs key_scope='global' (a run's keys last as it does)."
            )
        return None
    if not has_key:
        raise ConfigurationError(
            f"{where}: key_scope='global' needs key=..., the function naming the call across runs (e.g. "
            f"key=lambda a: a['order_id']): arguments alone would make every identical call of any run one."
        )
    if not deduplicate:
        raise ConfigurationError(f"{where}: key_scope='global' cannot be combined with deduplicate=False.")
    if retain is not None and (not isinstance(retain, dt.timedelta) or retain <= dt.timedelta(0)):
        raise ConfigurationError(
            f"{where}: retain must be a positive datetime.timedelta (how long a global key is kept), or None "
            f"to keep it for good, not {retain!r}."
        )
    return GlobalKey(retain)


def scope_key(tool_name: str, user_key: str, scheme: KeyScheme) -> str:
    """The key that names a call across runs (``@tool(key=..., key_scope="global")``): the HMAC, under
    ``scheme`` (the ledger's first secret, ``KeyRing.anchor``: never rotated, so an order id names the same
    call for as long as it is retained), of ``{"key", "scope": "global", "tool", "v"}``. Never on a span."""
    material = canonical_dumps({"key": user_key, "scope": "global", "tool": tool_name, "v": scheme.version})
    return scheme.digest(material)


def call_id(run_id: str, phase: str, key: str) -> str:
    """The ledger id of a call: stable for one (run, phase, key), so a retried call keeps its id."""
    return hashlib.sha256(f"{run_id}\x00{phase}\x00{key}".encode()).hexdigest()[:32]


def external_key(run_id: str, phase: str, key: str) -> str:
    """The key a tool forwards to an external API's own idempotency header: scoped to the run, so a
    retried or resumed call carries the same one and a call of another run (a second order, a replay
    gone live) never shares it — unlike the idempotency key, which is the same in every run."""
    return hashlib.sha256(f"agent_relay.external\x00{run_id}\x00{phase}\x00{key}".encode()).hexdigest()
