"""Make a generated grpclib service base concrete: every RPC not written answers UNIMPLEMENTED.

The generated bases declare each RPC abstract (with a body that would send nothing), so
a servicer must define all of them to be instantiated. The client maps UNIMPLEMENTED to
`modal.exception.UnimplementedError`, which makes a missing RPC obvious in a test.
"""

from __future__ import annotations

from typing import Any, TypeVar

from grpclib import GRPCError, Status

C = TypeVar("C", bound=type)


def _unimplemented(name: str) -> Any:
    async def handler(self: Any, stream: Any) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, f"fake Modal does not implement {name}")

    handler.__name__ = name
    return handler


def fill_unimplemented(cls: C) -> C:
    """Class decorator: define every remaining abstract RPC as UNIMPLEMENTED."""
    missing = set(getattr(cls, "__abstractmethods__", ()))
    for name in missing:
        setattr(cls, name, _unimplemented(name))
    cls.__abstractmethods__ = frozenset()  # type: ignore[attr-defined]
    every = {n for base in cls.__mro__[1:] for n in getattr(base, "__abstractmethods__", ())}
    cls.implemented_rpcs = tuple(sorted(every - missing))  # type: ignore[attr-defined]
    return cls
