"""What of a call's arguments and result may reach a span: opt-in, redacted, truncated.

Arguments and results go on spans (``gen_ai.tool.call.arguments`` / ``gen_ai.tool.call.result``) only
when asked: ``AGENT_RELAY_CAPTURE_CONTENT=true`` or ``AgentRuntime(content=ContentPolicy(capture=True))``,
and per tool ``@tool(capture_content=...)``. Redaction happens before anything reaches a span: a field
named in ``redact`` is replaced by ``"[REDACTED]"`` wherever it occurs — a bare name (``password``) at any
depth, a dotted path (``card.number``) wherever those keys are nested that way. Values longer than the
attribute limit are cut down while staying valid JSON. The ledger keeps values whole unless
``redact_ledger=True``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Final

from .encoding import JSONValue, compact_dumps
from .errors import ConfigurationError

CAPTURE_CONTENT_ENV: Final = "AGENT_RELAY_CAPTURE_CONTENT"
REDACT_ENV: Final = "AGENT_RELAY_REDACT"
ATTRIBUTE_LIMIT_ENVS: Final = ("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT")
DEFAULT_LIMIT: Final = 4096
REDACTED: Final = "[REDACTED]"
_TRUE = ("1", "true", "yes", "on")


class Redactor:
    """Replaces named fields of JSON data, names matched case-insensitively (``authorization`` redacts
    ``Authorization``). Immutable; thread-safe."""

    __slots__ = ("_names", "_paths")

    def __init__(self, fields: Iterable[str]) -> None:
        cleaned = [f.strip().lower() for f in fields if f and f.strip()]
        self._names = frozenset(f for f in cleaned if "." not in f)
        self._paths = frozenset(tuple(f.split(".")) for f in cleaned if "." in f)

    def __bool__(self) -> bool:
        return bool(self._names or self._paths)

    def __call__(self, value: JSONValue) -> JSONValue:
        return self._walk(value, ()) if self else value

    def _hides(self, here: tuple[str, ...]) -> bool:
        return here[-1] in self._names or any(
            len(here) >= len(p) and here[-len(p) :] == p for p in self._paths
        )

    def _walk(self, value: JSONValue, path: tuple[str, ...]) -> JSONValue:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                here = (*path, k.lower())
                out[k] = REDACTED if self._hides(here) else self._walk(v, here)
            return out
        if isinstance(value, list):
            return [self._walk(v, path) for v in value]
        return value

    def secrets(self, value: JSONValue) -> set[str]:
        """The texts of the values this redactor hides in ``value`` (each scalar, as it would be written
        in a message), so that messages quoting them can be scrubbed too (see ``scrub``)."""
        found: set[str] = set()
        if self:
            self._collect(value, (), found, hidden=False)
        return found

    def _collect(self, value: JSONValue, path: tuple[str, ...], found: set[str], *, hidden: bool) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                here = (*path, k.lower())
                self._collect(v, here, found, hidden=hidden or self._hides(here))
        elif isinstance(value, list):
            for v in value:
                self._collect(v, path, found, hidden=hidden)
        elif hidden and value is not None and not isinstance(value, bool):
            text = str(value)
            if len(text) >= _MIN_SECRET:
                found.add(text)


# A hidden value shorter than this is not scrubbed out of messages (it would blank out ordinary words
# and numbers); it still never reaches a span or the ledger as a value.
_MIN_SECRET = 3


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret (longest first) replaced by ``[REDACTED]``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def env_flag(value: str | None) -> bool | None:
    return None if value is None or not value.strip() else value.strip().lower() in _TRUE


def env_fields(value: str | None) -> tuple[str, ...]:
    return tuple(f.strip() for f in (value or "").split(",") if f.strip())


def attribute_text(value: JSONValue, limit: int) -> str:
    """JSON text of ``value`` within ``limit`` characters, still valid JSON when cut."""
    text = compact_dumps(value)
    if len(text) <= limit:
        return text
    marker = "...[truncated]"
    keep = max(limit - len(marker) - 8, 0)
    while True:  # escapes lengthen the dumped string: shrink until the JSON string fits
        cut = json.dumps(text[:keep] + marker, ensure_ascii=False)
        if len(cut) <= limit or keep == 0:
            return cut
        keep = max(keep - (len(cut) - limit) - 1, 0)


class ContentPolicy:
    """Whether and how arguments and results reach spans (and, redacted, the ledger). Immutable.

    ``capture``: put arguments and results on tool spans (default off). ``redact``: field names or dotted
    paths replaced by ``"[REDACTED]"`` on spans. ``redact_ledger``: redact the ledger's ``arguments`` and
    ``output`` too — compensations then receive the redacted values. ``attribute_limit``: the longest
    span attribute written, in characters.
    """

    __slots__ = ("attribute_limit", "capture", "redact", "redact_ledger", "redactor")

    def __init__(
        self,
        *,
        capture: bool = False,
        redact: Iterable[str] = (),
        redact_ledger: bool = False,
        attribute_limit: int = DEFAULT_LIMIT,
    ) -> None:
        if not isinstance(attribute_limit, int) or attribute_limit < 32:
            raise ConfigurationError(f"attribute_limit must be an int >= 32, not {attribute_limit!r}.")
        self.capture = bool(capture)
        self.redact = tuple(redact)
        self.redact_ledger = bool(redact_ledger)
        self.attribute_limit = attribute_limit
        self.redactor = Redactor(self.redact)

    @classmethod
    def from_env(cls, environ: dict[str, str] | Any) -> ContentPolicy:
        limit = next(
            (environ.get(v) for v in ATTRIBUTE_LIMIT_ENVS if environ.get(v, "").strip().isdigit()), None
        )
        return cls(
            capture=bool(env_flag(environ.get(CAPTURE_CONTENT_ENV))),
            redact=env_fields(environ.get(REDACT_ENV)),
            attribute_limit=max(int(limit), 32) if limit else DEFAULT_LIMIT,
        )

    def for_tool(self, capture: bool | None, redact: Iterable[str]) -> ToolContent:
        fields = (*self.redact, *redact)
        return ToolContent(
            self.capture if capture is None else capture,
            Redactor(fields),
            self.redact_ledger,
            self.attribute_limit,
        )


class ToolContent:
    """A ``ContentPolicy`` as it applies to one tool (its own ``capture_content`` and ``redact`` added)."""

    __slots__ = ("capture", "limit", "redact_ledger", "redactor", "redacts")

    def __init__(self, capture: bool, redactor: Redactor, redact_ledger: bool, limit: int) -> None:
        self.capture, self.redactor, self.redact_ledger, self.limit = capture, redactor, redact_ledger, limit
        self.redacts = bool(redactor)  # (asked on every call: kept, not recomputed)

    def span_text(self, value: JSONValue) -> str:
        return attribute_text(self.redactor(value), self.limit)

    def for_ledger(self, value: JSONValue) -> JSONValue:
        return self.redactor(value) if self.redact_ledger else value
