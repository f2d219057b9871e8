"""The ledger's key secrets (``agent_relay_key_secrets``): made with the schema, added to by a rotation,
read by ``agent_relay.keyring``. A secret is 32 random bytes, stored as hex; its row is named by the
secret's fingerprint, which is what a run records."""

from __future__ import annotations

import datetime as dt
import secrets

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..keys import fingerprint
from .schema import key_secrets


def add_secret(conn: Connection) -> str:
    """Add a new random secret (the newest: it keys the runs started from now on); its key id."""
    secret = secrets.token_bytes(32)
    key_id = fingerprint(secret)
    conn.execute(
        key_secrets.insert().values(key_id=key_id, secret=secret.hex(), created_at=dt.datetime.now(dt.UTC))
    )
    return key_id


def ensure_secret(conn: Connection) -> None:
    """Give a ledger without a secret its first one (in the transaction that creates or upgrades it)."""
    if conn.execute(sa.select(key_secrets.c.key_id).limit(1)).first() is None:
        add_secret(conn)


def read_secrets(conn: Connection) -> list[bytes]:
    """The ledger's secrets, oldest first."""
    c = key_secrets.c
    rows = conn.execute(sa.select(c.secret).order_by(c.created_at, c.key_id))
    return [bytes.fromhex(secret) for (secret,) in rows]
