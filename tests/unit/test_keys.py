"""Idempotency keys and canonical JSON: deterministic, stable, strict."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import inspect
import os
import subprocess
import sys
import uuid
from decimal import Decimal

import pydantic
import pytest

from agent_relay.encoding import canonical_dumps, decoder_for, to_json_value
from agent_relay.errors import ArgumentEncodingError
from agent_relay.keys import KeyScheme, bind_arguments, binder, call_id, encode_arguments, idempotency_key


def _charge(customer: str, amount: int, currency: str = "usd", *extra: str, **meta: str) -> None: ...


SIG = inspect.signature(_charge)


def key_of(*args: object, **kwargs: object) -> str:
    bound = bind_arguments(SIG, args, kwargs)
    return idempotency_key("charge", "forward", encode_arguments("charge", bound))


def test_positional_keyword_and_default_forms_share_a_key() -> None:
    k = key_of("alice", 100)
    assert k == key_of(customer="alice", amount=100) == key_of("alice", 100, "usd")
    assert k == key_of(amount=100, customer="alice", currency="usd")
    assert k != key_of("alice", 100, "eur")
    assert k != key_of("alice", 100, "usd", "x")
    assert k != key_of("alice", 100, note="x")


def test_key_depends_on_tool_and_phase() -> None:
    args = {"a": 1}
    assert (
        len(
            {
                idempotency_key("t", "forward", args),
                idempotency_key("u", "forward", args),
                idempotency_key("t", "compensation", args),
            }
        )
        == 3
    )


# the arguments of the pinned keys below
PINNED_ARGS = {
    "to": "user@example.com",
    "n": 3,
    "tags": ["b", "a"],
    "price": 1.5,
    "meta": {"z": None, "a": True},
}


def test_key_is_pinned_across_versions_and_processes() -> None:
    # A changed value here breaks every stored ledger's dedup and replay: never update it casually.
    # It is sha256 of the documented recipe, checked by hand with sha256sum:
    # {"args":{"meta":{"a":true,"z":null},"n":3,"price":1.5,"tags":["b","a"],"to":"user@example.com"},
    #  "phase":"forward","tool":"send_email","v":1}   (one line, no spaces)
    pinned = "c121b76dd84b253686ae7a45caa615f5269612fb146192f4e1dd164af4686e31"
    args = PINNED_ARGS
    assert idempotency_key("send_email", "forward", args) == pinned
    code = (
        "from agent_relay.keys import idempotency_key;"
        f"print(idempotency_key('send_email', 'forward', {args!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    )
    assert out.stdout.strip() == pinned


def test_call_id_is_stable_per_run_phase_and_key() -> None:
    assert call_id("r1", "forward", "k") == call_id("r1", "forward", "k")
    assert (
        len(
            {call_id("r1", "forward", "k"), call_id("r2", "forward", "k"), call_id("r1", "compensation", "k")}
        )
        == 3
    )


def test_canonical_json_sorts_keys_and_is_compact() -> None:
    assert canonical_dumps({"b": 1, "a": [1, 2.5, "é"]}) == '{"a":[1,2.5,"\\u00e9"],"b":1}'


class Colour(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Item:
    sku: str
    qty: int


class Order(pydantic.BaseModel):
    id: uuid.UUID
    items: list[Item]
    at: dt.datetime
    total: Decimal


def test_rich_values_encode_to_plain_json() -> None:
    order = Order(
        id=uuid.UUID(int=1),
        items=[Item("a", 2)],
        at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        total=Decimal("9.99"),
    )
    assert to_json_value({"order": order, "colour": Colour.RED, "tags": {"b", "a"}, "pair": (1, 2)}) == {
        "order": {
            "id": "00000000-0000-0000-0000-000000000001",
            "items": [{"sku": "a", "qty": 2}],
            "at": "2026-01-01T00:00:00Z",
            "total": "9.99",
        },
        "colour": "red",
        "tags": ["a", "b"],
        "pair": [1, 2],
    }


def test_decoding_rebuilds_the_annotated_type() -> None:
    order = Order(
        id=uuid.uuid4(),
        items=[Item("a", 2)],
        at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        total=Decimal("9.99"),
    )
    assert decoder_for(Order)(to_json_value(order)) == order
    assert decoder_for(list[Item])(to_json_value([Item("x", 1)])) == [Item("x", 1)]
    assert decoder_for(tuple[int, str])([1, "a"]) == (1, "a")
    assert decoder_for(None)({"raw": 1}) == {"raw": 1}


@pytest.mark.parametrize(
    ("value", "path", "reason"),
    [
        ({"x": float("inf")}, "payload.x", "no JSON form"),
        ({1: "a"}, "payload[1]", "keys must be str"),
        ([b"raw"], "payload[0]", "base64"),
        ({"fn": len}, "payload.fn", "cannot be encoded"),
    ],
)
def test_unencodable_values_name_their_place(value: object, path: str, reason: str) -> None:
    with pytest.raises(ArgumentEncodingError) as caught:
        encode_arguments("upload", {"payload": value})
    err = caught.value
    assert err.path == path and err.argument == "payload" and err.tool_name == "upload"
    assert reason in str(err) and "tool was not run" in str(err)


@pytest.mark.parametrize(
    ("user_key", "occurrence"), [(None, None), ("order-7", None), (None, 0), ("k\u00e9y", 3)]
)
def test_key_material_is_the_canonical_json_of_the_documented_recipe(
    user_key: str | None, occurrence: int | None
) -> None:
    # the key is built member by member for speed; it must equal the recipe serialised as a whole
    args = {"to": "\u00e9@example.com", "n": [1, 2.5, None], "meta": {"b": True, "a": "x"}}
    material: dict[str, object] = {"v": 1, "tool": "send_\u00e9mail", "phase": "forward"}
    if user_key is None:
        material["args"] = args
    else:
        material["key"] = user_key
    if occurrence is not None:
        material["n"] = occurrence
    expected = hashlib.sha256(canonical_dumps(material).encode("ascii")).hexdigest()  # type: ignore[arg-type]
    got = idempotency_key("send_\u00e9mail", "forward", args, user_key=user_key, occurrence=occurrence)
    assert got == expected
    text = canonical_dumps(args)
    assert idempotency_key(
        "send_\u00e9mail", "forward", {}, user_key=user_key, occurrence=occurrence, arguments_text=text
    ) == (expected if user_key is not None else got)


def _kw_only(a: int, b: str = "x", *, c: float = 1.0, d: bool) -> None: ...


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((1,), {"d": True}),
        ((1, "y"), {"d": False, "c": 2.0}),
        ((), {"a": 1, "d": True}),
        ((), {"d": True, "b": "z", "a": 3}),
    ],
)
def test_binder_binds_like_signature_bind(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    sig = inspect.signature(_kw_only)
    assert binder(sig)(args, kwargs) == bind_arguments(sig, args, kwargs)
    assert list(binder(sig)(args, kwargs)) == ["a", "b", "c", "d"]  # the signature's order


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {"d": True}),  # a required argument missing
        ((1, "y", 2.0), {"d": True}),  # too many positional arguments
        ((1,), {"a": 2, "d": True}),  # one argument given twice
        ((1,), {"d": True, "e": 0}),  # an unknown keyword
        ((1,), {"e": 0}),  # an unknown keyword where a required one is missing
    ],
)
def test_binder_raises_type_error_like_the_call_would(
    args: tuple[object, ...], kwargs: dict[str, object]
) -> None:
    sig = inspect.signature(_kw_only)
    with pytest.raises(TypeError) as fast:
        binder(sig)(args, kwargs)
    with pytest.raises(TypeError) as slow:
        bind_arguments(sig, args, kwargs)
    assert str(fast.value) == str(slow.value)
    with pytest.raises(TypeError):
        _kw_only(*args, **kwargs)  # type: ignore[arg-type]


def test_binder_of_a_signature_with_var_arguments_keeps_them() -> None:
    assert binder(SIG)(("a", 1, "eur", "x"), {"k": "v"}) == {
        "customer": "a",
        "amount": 1,
        "currency": "eur",
        "extra": ("x",),
        "meta": {"k": "v"},
    }


def test_a_keyed_key_is_the_hmac_of_the_documented_material_and_differs_by_secret() -> None:
    # Pinned like the version-1 key above, and checked by hand with
    # printf '%s' '<material>' | openssl dgst -sha256 -hmac a-secret-of-the-ledger-000001
    # where <material> is the version-1 recipe above with "v":2.
    pinned = "296264e51e96449d9069addc204c5b0f576443625f68423147ef94b1dc367938"
    args = PINNED_ARGS
    scheme = KeyScheme(b"a-secret-of-the-ledger-000001")
    assert idempotency_key("send_email", "forward", args, scheme=scheme) == pinned
    other = KeyScheme(b"a-secret-of-the-ledger-000002")
    assert idempotency_key("send_email", "forward", args, scheme=other) != pinned
    assert scheme.version == 2 and scheme.key_id != other.key_id and len(scheme.key_id or "") == 16
    # long secrets are hashed first, as HMAC says: still the standard HMAC
    long_secret = bytes(range(100))
    assert KeyScheme(long_secret).digest("m") == hmac.new(long_secret, b"m", hashlib.sha256).hexdigest()
