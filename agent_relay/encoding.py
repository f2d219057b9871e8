"""Canonical JSON: how arguments, outputs and keys are written, and how served outputs are read back.

Encoding is strict and deterministic: the same value gives the same bytes in every process, on every
machine and Python version (sorted keys, no whitespace, ASCII only, no NaN). What JSON cannot say exactly
is refused with an error that names the place (``items[2].price``), never guessed at and never pickled.

Accepted: ``None``, ``bool``, ``int``, finite ``float``, ``str``, lists and tuples (as arrays), sets
(as sorted arrays), dicts with ``str`` keys, and through pydantic's JSON mode: dataclasses, Pydantic
models, ``Enum``, ``datetime``/``date``/``time``/``timedelta``, ``UUID``, ``Decimal``, ``Path``.
Decoding takes the tool's return annotation and rebuilds that type with pydantic's ``TypeAdapter``.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections.abc import Callable
from typing import Any

import pydantic
import pydantic_core

from .errors import EncodingError

JSONValue = Any  # None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]

_SCALARS = (str, bool, int, type(None))


class _Unencodable(Exception):
    def __init__(self, path: str, type_name: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.type_name = type_name
        self.reason = reason


def to_json_value(value: Any, *, root: str = "") -> JSONValue:
    """Return ``value`` as plain JSON data, or raise ``_Unencodable`` naming where it failed."""
    return _walk(value, root)


MAX_DEPTH = 200  # nesting deeper than this is refused (the encoders would run out of stack first)


def safe_text(text: str) -> str:
    """``text`` as it can be stored and exported, alike on every backend: characters UTF-8 cannot encode
    (lone surrogates) are written as ``\\udc80`` escapes, and NUL, which PostgreSQL's text cannot hold,
    as ``\\x00``."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _max_int_bits() -> int:
    digits = sys.get_int_max_str_digits()
    return int(digits * 3.3219) if digits else 0  # (log2(10) bits per digit; 0: no limit)


def _utf8(value: str, path: str) -> str:
    """``value``, if UTF-8 can encode it (a lone surrogate cannot be stored or exported)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Unencodable(
            path, "str", f"it holds {value[exc.start : exc.end]!a}, which UTF-8 cannot encode"
        ) from None
    return value


def _walk(value: Any, path: str, depth: int = 0) -> JSONValue:
    kind = type(value)
    if kind is str:  # (the common cases first, by exact type: this runs for every argument)
        return value if value.isascii() else _utf8(value, path)
    if (kind is int and value.bit_length() <= 64) or kind is bool or value is None:
        return value
    if isinstance(value, str):  # a str subclass (an enum's member, say)
        return _utf8(value, path)
    if isinstance(value, int) and value.bit_length() > 64 and not isinstance(value, bool):
        limit = _max_int_bits()
        if limit and value.bit_length() > limit:
            raise _Unencodable(
                path,
                "int",
                f"an integer of {value.bit_length()} bits has more digits than this Python writes as text "
                f"(sys.get_int_max_str_digits() is {sys.get_int_max_str_digits()})",
            )
        return value
    if isinstance(value, _SCALARS):
        return value
    if depth > MAX_DEPTH:
        raise _Unencodable(path, type(value).__name__, f"it is nested deeper than {MAX_DEPTH} levels")
    depth += 1
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unencodable(path, "float", f"{value!r} has no JSON form")
        return value
    if isinstance(value, dict):
        out: dict[str, JSONValue] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Unencodable(
                    f"{path}[{k!r}]", type(k).__name__, f"dict keys must be str, not {type(k).__name__}"
                )
            out[k] = _walk(v, f"{path}.{k}" if path else k, depth)
        return out
    if isinstance(value, (list, tuple)):
        return [_walk(v, f"{path}[{i}]", depth) for i, v in enumerate(value)]
    if isinstance(value, (set, frozenset)):
        items = [_walk(v, f"{path}{{}}", depth) for v in value]
        return sorted(items, key=canonical_dumps)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise _Unencodable(
            path,
            type(value).__name__,
            "bytes have no canonical JSON form (encode them as base64 or hex text first)",
        )
    # Dataclasses, Pydantic models, enums, datetimes, UUIDs, Decimals, paths: pydantic's JSON mode,
    # the same rules its TypeAdapter reverses when a served output is decoded.
    try:
        plain = pydantic_core.to_jsonable_python(value)
    except pydantic_core.PydanticSerializationError:
        raise _Unencodable(
            path, type(value).__qualname__, f"a {type(value).__qualname__} cannot be encoded as JSON"
        ) from None
    return _walk(plain, path, depth)


_HOW = (
    "Pass JSON-compatible values (str, numbers, bools, None, lists, str-keyed dicts, dataclasses, Pydantic "
    "models, datetimes, UUIDs, Decimals)."
)


def encode(
    value: Any,
    *,
    root: str,
    error: type[EncodingError],
    what: str,
    tool_name: str | None = None,
    then: str = "",
) -> JSONValue:
    """``to_json_value``, raising ``error`` (a message naming ``what`` and the place, and what to do)."""
    try:
        return _walk(value, root)
    except RecursionError:  # (a structure that refers to itself)
        raise error(
            f"{what} {root!r} cannot be recorded: it is nested too deeply (or contains itself). {_HOW}{then}",
            tool_name=tool_name,
            path=root,
            type_name=type(value).__name__,
        ) from None
    except _Unencodable as exc:
        where = exc.path if len(exc.path) <= 120 else f"{exc.path[:60]}...{exc.path[-40:]}"
        raise error(
            f"{what} {where!r} ({exc.type_name}) cannot be recorded: {exc.reason}. {_HOW}{then}",
            tool_name=tool_name,
            path=exc.path,
            type_name=exc.type_name,
        ) from None


# Made once: ``json.dumps`` builds an encoder on every call, and these run on every tool call. (An
# encoder keeps no state between calls: ``encode`` is safe from any thread.)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def canonical_dumps(value: JSONValue) -> str:
    """Serialise plain JSON data canonically (sorted keys, compact, ASCII)."""
    return _CANONICAL.encode(value)


def compact_dumps(value: JSONValue) -> str:
    """Serialise for storage: compact, keys in their given order, UTF-8 kept readable."""
    return _COMPACT.encode(value)


class JSONText(str):
    """JSON already serialised (a call's canonical arguments text): stored as it is, not again."""

    __slots__ = ()


def storage_dumps(value: Any) -> str:
    """The ledger's JSON serialiser: ``JSONText`` as it is, anything else ``compact_dumps``."""
    return value if isinstance(value, JSONText) else compact_dumps(value)


@functools.lru_cache(maxsize=512)
def _adapter(annotation: Any) -> pydantic.TypeAdapter[Any]:
    return pydantic.TypeAdapter(annotation)


def decoder_for(annotation: Any) -> Callable[[JSONValue], Any]:
    """Return a function turning stored JSON back into ``annotation``'s type.

    Without an annotation (or ``Any``/``object``) the stored JSON is returned as it is.
    """
    if annotation is None or annotation is Any or annotation is object:
        return _identity
    validate = _adapter(annotation).validate_python
    if annotation in (str, int, float, bool):
        # a stored str/int/float/bool that already is the annotated type is returned as it is (pydantic
        # would return it unchanged, slower); anything else, a float stored for an int say, is validated
        def decode_scalar(value: JSONValue) -> Any:
            return value if type(value) is annotation else validate(value)

        return decode_scalar
    return validate


def _identity(value: JSONValue) -> JSONValue:
    return value
