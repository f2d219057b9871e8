"""Align two runs' forward calls: what a developer needs after a divergent replay or a fork."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from ..replay import argument_diff
from ..states import Phase


@dataclasses.dataclass(frozen=True, slots=True)
class Pair:
    """One line of the alignment: ``kind`` is same | output | arguments | call | only_a | only_b."""

    kind: str
    a: dict[str, Any] | None
    b: dict[str, Any] | None
    detail: str = ""


def align(calls_a: list[dict[str, Any]], calls_b: list[dict[str, Any]]) -> list[Pair]:
    """Pairs of forward calls in order, matched by idempotency key where they agree."""
    a = [c for c in calls_a if c["phase"] == Phase.FORWARD]
    b = [c for c in calls_b if c["phase"] == Phase.FORWARD]
    matcher = difflib.SequenceMatcher(
        a=[c["idempotency_key"] for c in a], b=[c["idempotency_key"] for c in b], autojunk=False
    )
    pairs: list[Pair] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            for ca, cb in zip(a[i1:i2], b[j1:j2], strict=True):
                same = ca["status"] == cb["status"] and ca["output"] == cb["output"]
                pairs.append(Pair("same", ca, cb) if same else Pair("output", ca, cb, _outcome_diff(ca, cb)))
            continue
        left, right = a[i1:i2], b[j1:j2]
        for k in range(max(len(left), len(right))):
            x: dict[str, Any] | None = left[k] if k < len(left) else None
            y: dict[str, Any] | None = right[k] if k < len(right) else None
            if x is None:
                pairs.append(Pair("only_b", None, y))
            elif y is None:
                pairs.append(Pair("only_a", x, None))
            elif x["tool_name"] == y["tool_name"]:
                pairs.append(
                    Pair("arguments", x, y, argument_diff(x["arguments"] or {}, y["arguments"] or {}))
                )
            else:
                pairs.append(Pair("call", x, y, f"{x['tool_name']} -> {y['tool_name']}"))
    return pairs


def _outcome_diff(x: dict[str, Any], y: dict[str, Any]) -> str:
    if x["status"] != y["status"]:
        return f"status: {x['status']} -> {y['status']}"
    return argument_diff({"output": x["output"]}, {"output": y["output"]})
