"""Containers that refuse change, so a frozen model is frozen all the way down.

pydantic's `frozen=True` stops `agent.env = {...}` but not `agent.env["X"] = "y"`
or `desired.agents["b"] = ...`. The models in `model.py` therefore hold their
mappings as `FrozenDict` and their JSON-like blobs (observed specs, grant
definitions) deeply frozen (`FrozenDict`, `FrozenList`), through the `FrozenMap`
field type.

Both are subclasses of `dict`/`list` on purpose: they compare equal to the plain
containers they hold, `json.dumps` and pydantic write them exactly as before (so
spec hashes, labels and `--output json` do not change), and code that asks
`isinstance(x, dict)` keeps working. Everything that would change one raises
`TypeError`; build a new one instead (`FrozenDict({**old, "k": v})`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, NoReturn, TypeVar

from pydantic import AfterValidator

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


def _refuse(obj: object) -> NoReturn:
    raise TypeError(f"{type(obj).__name__} is immutable: build a new one instead of changing it")


class FrozenDict(dict[K, V]):
    """A dict that cannot be changed after it is made (hashable when its values are)."""

    __slots__ = ()

    def __setitem__(self, key: K, value: V) -> NoReturn:
        _refuse(self)

    def __delitem__(self, key: K) -> NoReturn:
        _refuse(self)

    def __ior__(self, other: Any) -> NoReturn:  # type: ignore[misc]  # dict's |= returns Self; this one never returns
        _refuse(self)

    def clear(self) -> NoReturn:
        _refuse(self)

    def pop(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self)

    def popitem(self) -> NoReturn:
        _refuse(self)

    def setdefault(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self)

    def update(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self)

    def __hash__(self) -> int:  # type: ignore[override]  # dict is unhashable; a frozen one is not
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle/copy would otherwise rebuild it item by item through __setitem__
        return (type(self), (dict(self),))

    def __repr__(self) -> str:
        return f"FrozenDict({dict.__repr__(self)})"


class FrozenList(list[T]):
    """A list that cannot be changed after it is made: JSON blobs keep comparing
    equal to the lists they came from (a tuple would not: `(1,) != [1]`)."""

    __slots__ = ()

    def __setitem__(self, *args: Any) -> NoReturn:
        _refuse(self)

    def __delitem__(self, *args: Any) -> NoReturn:
        _refuse(self)

    def __iadd__(self, other: Iterable[T]) -> NoReturn:  # type: ignore[misc,override]  # list's += returns Self
        _refuse(self)

    def __imul__(self, n: Any) -> NoReturn:  # type: ignore[misc]  # list's *= returns Self
        _refuse(self)

    def append(self, item: T) -> NoReturn:
        _refuse(self)

    def extend(self, items: Iterable[T]) -> NoReturn:
        _refuse(self)

    def insert(self, *args: Any) -> NoReturn:
        _refuse(self)

    def remove(self, item: T) -> NoReturn:
        _refuse(self)

    def pop(self, *args: Any) -> NoReturn:
        _refuse(self)

    def clear(self) -> NoReturn:
        _refuse(self)

    def sort(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse(self)

    def reverse(self) -> NoReturn:
        _refuse(self)

    def __hash__(self) -> int:  # type: ignore[override]  # list is unhashable; a frozen one is not
        return hash(tuple(self))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (list(self),))

    def __repr__(self) -> str:
        return f"FrozenList({list.__repr__(self)})"


def freeze(value: Any) -> Any:
    """`value` with every dict, list and set inside it, at any depth, made
    immutable (tuples stay tuples; models and scalars are returned as they are)."""
    if isinstance(value, Mapping):
        return FrozenDict({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return FrozenList(freeze(v) for v in value)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(freeze(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return frozenset(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a frozen value (dicts and lists again)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list):
        return [thaw(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(thaw(v) for v in value)
    return value


# A model field holding a mapping that is frozen at every depth once validated:
# `env: FrozenMap[str, str] = Field(default_factory=FrozenDict)`. pydantic checks
# the keys and values as for `Mapping[K, V]` and writes it as a plain dict.
FrozenMap = Annotated[Mapping[K, V], AfterValidator(freeze)]
