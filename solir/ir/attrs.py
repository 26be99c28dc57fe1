"""Attribute values beyond plain Python data: affine access maps and dense constants.

Attributes are ints, floats, bools, strings, None, DTypes, tuples of those, AffineMaps and
numpy arrays (dense constants). All of them print and parse losslessly (see printer/parser).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AffineExpr:
    """`(sum_k coeffs[k] * d_k + const) / div`; with div > 1 the access is valid only when
    the division is exact (base dilation, interior padding)."""

    coeffs: tuple[int, ...]
    const: int = 0
    div: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "coeffs", tuple(int(c) for c in self.coeffs))
        object.__setattr__(self, "const", int(self.const))
        object.__setattr__(self, "div", int(self.div))

    def __str__(self) -> str:
        terms = []
        for k, c in enumerate(self.coeffs):
            if c == 0:
                continue
            term = f"d{k}" if abs(c) == 1 else f"d{k} * {abs(c)}"
            terms.append(("- " if c < 0 else "+ ") + term)
        if self.const or not terms:
            terms.append(("- " if self.const < 0 else "+ ") + str(abs(self.const)))
        text = " ".join(terms)
        text = text[2:] if text.startswith("+ ") else "-" + text[2:]
        if self.div != 1:
            text = f"({text}) / {self.div}"
        return text

    @staticmethod
    def dim(n: int, k: int, coeff: int = 1, const: int = 0) -> "AffineExpr":
        c = [0] * n
        c[k] = coeff
        return AffineExpr(tuple(c), const)

    @staticmethod
    def constant(n: int, value: int) -> "AffineExpr":
        return AffineExpr((0,) * n, value)

    def compose(self, inner: "AffineMap") -> "AffineExpr":
        """Substitute d_k := inner.exprs[k]; inner exprs must not divide."""
        coeffs = [0] * inner.n_dims
        const = self.const
        for c, e in zip(self.coeffs, inner.exprs):
            assert e.div == 1, "cannot compose through a dividing map"
            for j, ec in enumerate(e.coeffs):
                coeffs[j] += c * ec
            const += c * e.const
        return AffineExpr(tuple(coeffs), const, self.div)

    def evaluate(self, dims: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """Index grid and (for div > 1) the exactness mask."""
        total = np.asarray(self.const, dtype=np.int64)
        for c, d in zip(self.coeffs, dims):
            if c:
                total = total + c * d
        if self.div == 1:
            return total, None
        return np.floor_divide(total, self.div), (total % self.div) == 0


@dataclass(frozen=True)
class AffineMap:
    n_dims: int
    exprs: tuple[AffineExpr, ...]

    def __str__(self) -> str:
        dims = ", ".join(f"d{k}" for k in range(self.n_dims))
        return f"({dims}) -> ({', '.join(str(e) for e in self.exprs)})"

    @staticmethod
    def identity(n: int) -> "AffineMap":
        return AffineMap(n, tuple(AffineExpr.dim(n, k) for k in range(n)))

    @staticmethod
    def select(n: int, dims: tuple[int, ...]) -> "AffineMap":
        return AffineMap(n, tuple(AffineExpr.dim(n, k) for k in dims))

    @property
    def divides(self) -> bool:
        return any(e.div != 1 for e in self.exprs)

    def compose(self, inner: "AffineMap") -> "AffineMap":
        return AffineMap(inner.n_dims, tuple(e.compose(inner) for e in self.exprs))

    @staticmethod
    def parse(text: str) -> "AffineMap":
        m = re.fullmatch(r"\s*\(([^)]*)\)\s*->\s*\((.*)\)\s*", text)
        if not m:
            raise ValueError(f"not an affine map: {text!r}")
        dims = [d.strip() for d in m.group(1).split(",") if d.strip()]
        n = len(dims)
        body = m.group(2).strip()
        exprs = [_parse_expr(part, n) for part in _split_top(body)] if body else []
        return AffineMap(n, tuple(exprs))


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _parse_expr(text: str, n: int) -> AffineExpr:
    text = text.strip()
    div = 1
    m = re.fullmatch(r"\((.*)\)\s*/\s*(\d+)", text)
    if m:
        text, div = m.group(1), int(m.group(2))
    coeffs, const = [0] * n, 0
    for sign, term in re.findall(r"([+-]?)\s*([^+-]+)", text.replace(" ", "")):
        s = -1 if sign == "-" else 1
        tm = re.fullmatch(r"d(\d+)(?:\*(\d+))?", term)
        if tm:
            coeffs[int(tm.group(1))] += s * int(tm.group(2) or 1)
        else:
            const += s * int(term)
    return AffineExpr(tuple(coeffs), const, div)
