"""Frontends translate a framework's graph into tensor-level IR, one rule per source op."""

from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


def rule_registrar(table: dict[str, F]) -> Callable[..., Callable[[F], F]]:
    """`@rule("add", "sub")` for a frontend's rule table: registers the function under each name."""
    def rule(*names: str) -> Callable[[F], F]:
        def register(fn: F) -> F:
            for n in names:
                table[n] = fn
            return fn
        return register
    return rule
