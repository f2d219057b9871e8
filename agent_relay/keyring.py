"""Which secret keys a run's idempotency keys, and how much of a key its spans show.

Every ledger holds a key secret, made with its schema (``agent_relay_key_secrets``; schema version 5 adds
one to older ledgers); every process on that ledger keys its calls with the newest one, so keys agree
across workers. A deployment where several ledgers must agree (or that keeps the secret out of the
database) supplies its own: ``AgentRuntime(key_secret=...)`` or ``AGENT_RELAY_KEY_SECRET``.

Each run records the key version and the secret (by its fingerprint, ``key_id``) its calls were keyed
with, and a replay, fork or resume keys its calls the same way — so rotating the secret never breaks an
old run: new runs use the new secret, old runs keep theirs, found in the ledger's table or among the
supplied secrets (give the new one first, then the old ones).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .errors import ConfigurationError
from .keys import KEY_VERSION, LEGACY_KEY_VERSION, KeyScheme

ENV_SECRET = "AGENT_RELAY_KEY_SECRET"
ENV_SPAN_KEY = "AGENT_RELAY_SPAN_KEY"
MIN_SECRET_BYTES = 16

SecretValue = str | bytes
SecretSource = SecretValue | Sequence[SecretValue] | Callable[[], SecretValue | Sequence[SecretValue]]

# what a span shows of a call's key (the ledger always has all of it): how many of its 64 hex digits
SPAN_KEY_FORMS: Mapping[str, int] = {"full": 64, "short": 16, "none": 0}


class SecretStore(Protocol):
    """The ledger's key secrets (``LedgerStore``)."""

    def key_secrets(self) -> list[bytes]: ...


class KeyedRun(Protocol):
    """What a recorded run (an ``agent_runs`` row) says of how its calls were keyed."""

    @property
    def run_id(self) -> str: ...
    @property
    def key_version(self) -> int | None: ...
    @property
    def key_id(self) -> str | None: ...


def span_key_chars(form: str | None, environ: Mapping[str, str] | None = None) -> int:
    """How many hex digits of a key a span shows, for ``span_key=`` (or ``AGENT_RELAY_SPAN_KEY``)."""
    source = "AgentRuntime(span_key=...)"
    if form is None:
        form = (os.environ if environ is None else environ).get(ENV_SPAN_KEY) or "full"
        source = ENV_SPAN_KEY
    chars = SPAN_KEY_FORMS.get(form.strip().lower()) if isinstance(form, str) else None
    if chars is None:
        raise ConfigurationError(
            f"{source} must be one of {', '.join(map(repr, SPAN_KEY_FORMS))} (the whole key, its first 16 "
            f"hex digits, or no key on spans), not {form!r}."
        )
    return chars


def supplied_secrets(source: SecretSource | None, environ: Mapping[str, str] | None = None) -> list[bytes]:
    """The key secrets given from outside, newest first: ``key_secret=`` (a value, a list, or a callable
    returning either), else ``AGENT_RELAY_KEY_SECRET`` (comma-separated); empty when neither is set."""
    what = "AgentRuntime(key_secret=...)"
    value: Any = source
    if callable(source):
        value = source()
        what = "the value AgentRuntime(key_secret=...) returned"
    elif source is None:
        text = (os.environ if environ is None else environ).get(ENV_SECRET, "")
        value = [part.strip() for part in text.split(",") if part.strip()]
        what = ENV_SECRET
    values = [value] if isinstance(value, str | bytes) else value
    if not isinstance(values, Sequence) or (source is not None and not values):
        raise ConfigurationError(
            f"{what} must be a secret (text or bytes) or a list of them, newest first, not {value!r}."
        )
    secrets = []
    for item in values:
        secret = item.encode() if isinstance(item, str) else item
        if not isinstance(secret, bytes) or len(secret) < MIN_SECRET_BYTES:
            shown = (
                f"a {type(item).__name__}" if not isinstance(item, str | bytes) else f"{len(secret)} bytes"
            )
            raise ConfigurationError(
                f"{what}: a key secret must be text or bytes of at least {MIN_SECRET_BYTES} bytes ({shown} "
                f"given); make one with: python -c 'import secrets; print(secrets.token_hex(32))'."
            )
        secrets.append(secret)
    return secrets


class KeyRing:
    """The key schemes of one runtime: ``current`` for new runs, ``for_run`` for recorded ones."""

    def __init__(self, supplied: list[bytes], ledger: SecretStore, database: str) -> None:
        self._ledger = ledger
        self._database = database
        schemes = [KeyScheme(secret) for secret in supplied]
        self._schemes = {scheme.key_id: scheme for scheme in schemes}
        self._lock = threading.Lock()
        self._anchor: KeyScheme | None = None
        if schemes:
            self.current = schemes[0]
        else:
            newest = self._load()
            if newest is None:
                raise ConfigurationError(
                    f"the ledger at {database} holds no key secret; upgrade it (agent-relay db upgrade) or "
                    f"supply one with AgentRuntime(key_secret=...) or {ENV_SECRET}."
                )
            self.current = newest

    @property
    def anchor(self) -> KeyScheme:
        """The scheme of global keys (``keys.scope_key``): the ledger's first secret, whatever the current
        one is. Rotation moves new runs to a new secret; a global key must keep naming the same call for
        as long as it is retained, so it stays with the secret the ledger was made with."""
        if self._anchor is None:
            secrets = self._ledger.key_secrets()  # oldest first
            if not secrets:
                raise ConfigurationError(
                    f"the ledger at {self._database} holds no key secret for global keys; upgrade it "
                    f"(agent-relay db upgrade)."
                )
            self._anchor = KeyScheme(secrets[0])
        return self._anchor

    def _load(self) -> KeyScheme | None:
        """Read the ledger's secrets into the ring; the newest of them."""
        newest = None
        for secret in self._ledger.key_secrets():  # oldest first
            newest = KeyScheme(secret)
            with self._lock:
                self._schemes.setdefault(newest.key_id, newest)
        return newest

    def for_run(self, run: KeyedRun) -> KeyScheme:
        """How a recorded run's calls were keyed (its recorded version and secret)."""
        run_id, version, key_id = run.run_id, run.key_version, run.key_id
        if version is None or version == LEGACY_KEY_VERSION:  # (recorded before keys had versions)
            return KeyScheme.LEGACY
        if version != KEY_VERSION:
            raise ConfigurationError(
                f"run {run_id} was keyed with key version {version}, which this AgentRelay does not know "
                f"(it knows {LEGACY_KEY_VERSION} and {KEY_VERSION}); use the AgentRelay release that "
                f"recorded it."
            )
        scheme = self._schemes.get(key_id)
        if scheme is None:
            self._load()  # (rotated by another process since this runtime started)
            scheme = self._schemes.get(key_id)
        if scheme is None:
            raise ConfigurationError(
                f"run {run_id} was keyed with the secret {key_id!r}, which neither the ledger at "
                f"{self._database} nor the secrets this runtime was given hold; pass it with the current "
                f"one, newest first: AgentRuntime(key_secret=[current, old]) or {ENV_SECRET}=current,old."
            )
        return scheme
