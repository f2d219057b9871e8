"""``ToolSpec``: what a runtime knows about one registered tool. Plain data and the tool's own
conversions (binding, decoding, cost); no I/O."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from .content import ToolContent
from .encoding import decoder_for
from .estimate import Estimator
from .keys import Binder, GlobalKey, binder
from .pricing import to_usd
from .retry import Retry
from .states import Durability

CostSpec = float | int | Decimal | Callable[[Any], float | int | Decimal]

KINDS = ("function", "llm")


@dataclasses.dataclass(eq=False)
class ToolSpec:
    """A registered tool: its options (see ``@tool``) and its signature."""

    name: str
    func: Callable[..., Any]
    compensation: str | None
    cost: CostSpec | None
    kind: str
    idempotent: bool
    deduplicate: bool
    key: Callable[[dict[str, Any]], str] | None
    raises: tuple[type[BaseException], ...]
    content: ToolContent
    provider: str | None
    durability: Durability
    is_async: bool
    span_name: str
    signature: inspect.Signature = dataclasses.field(repr=False)
    excluded: tuple[str, ...] = ()  # left out of the record and the key (``exclude=``, ``self``/``cls``)
    call_id_parameters: tuple[str, ...] = ()  # excluded ones a framework fills with the model's call id
    retry: Retry | None = None  # how a failed live call is tried again (``agent_relay.retry``)
    timeout_s: float | None = None  # how long its body may take
    approval: Callable[[dict[str, Any]], bool] | None = None  # which calls need a person's approval first
    global_key: GlobalKey | None = None  # its key= deduplicates across runs (key_scope="global")
    estimate: Estimator | None = None  # what a call may cost, before it runs (``agent_relay.estimate``)
    bind: Binder = dataclasses.field(init=False, repr=False)  # binds a call's arguments to ``signature``
    _decode: Callable[[Any], Any] | None = dataclasses.field(default=None, repr=False)
    _hints: dict[str, Any] | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.bind = binder(self.signature)

    def _type_hints(self) -> dict[str, Any]:
        if self._hints is None:
            try:
                self._hints = typing.get_type_hints(self.func)
            except Exception:  # unresolvable forward references: values are served as stored JSON
                self._hints = {}
        return self._hints

    def decode(self, stored: Any) -> Any:
        """Turn a stored output back into what the tool returns (its return annotation's type)."""
        if self._decode is None:
            self._decode = decoder_for(self._type_hints().get("return"))
        return self._decode(stored)

    def decode_argument(self, name: str, stored: Any) -> Any:
        """Turn a stored argument into parameter ``name``'s annotated type."""
        return decoder_for(self._type_hints().get(name))(stored)

    def cost_of(self, result: Any) -> Decimal | None:
        if self.cost is None:
            return None
        value = self.cost(result) if callable(self.cost) else self.cost
        return to_usd(value, f"tool {self.name!r} cost")

    @property
    def qualified_name(self) -> str:
        return f"{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', self.name)}"
