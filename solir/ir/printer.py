"""Deterministic MLIR-style text. Values keep their name hints (uniqued with a suffix),
attributes print in sorted order, locations only when asked. Parsing the output gives a
module that prints identically (see parser.py)."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from solir.ir.attrs import AffineMap
from solir.ir.core import Block, Func, Module, Op, Value
from solir.ir.types import DType, TensorType

DENSE_INLINE_LIMIT = 16


class Namer:
    def __init__(self) -> None:
        self.names: dict[Value, str] = {}
        self.used: set[str] = set()
        self.counter = 0

    def __call__(self, v: Value) -> str:
        name = self.names.get(v)
        if name is None:
            name = self._fresh(v.name)
            self.names[v] = name
        return "%" + name

    def _fresh(self, hint: str) -> str:
        hint = re.sub(r"[^A-Za-z0-9_.]", "_", hint)
        if not hint or hint[0].isdigit():
            while str(self.counter) in self.used:
                self.counter += 1
            hint = str(self.counter)
            self.counter += 1
        name, k = hint, 1
        while name in self.used:
            name = f"{hint}_{k}"
            k += 1
        self.used.add(name)
        return name


def format_scalar(x: Any, dtype: DType) -> str:
    if dtype.is_bool:
        return "true" if bool(x) else "false"
    if dtype.is_int:
        return str(int(x))
    f = float(x)
    if np.isnan(f):
        return "nan"
    if np.isinf(f):
        return "inf" if f > 0 else "-inf"
    npt = np.float32 if dtype in (DType.F32, DType.BF16) else np.float16 if dtype is DType.F16 else np.float64
    text = np.format_float_positional(npt(f), unique=True, trim="0")
    if len(text) > 12:
        text = np.format_float_scientific(npt(f), unique=True, trim="0")
    return text


def format_dense(value: np.ndarray, elide: bool | str = False) -> str:
    """elide=True abbreviates large constants (for reading); elide="digest" replaces them by
    their SHA-256 (for cache keys: exact, and cheap for a model's weights)."""
    dtype = DType.from_numpy(value.dtype)
    ty = TensorType(value.shape, dtype)
    if value.size > DENSE_INLINE_LIMIT:
        if elide == "digest":
            import hashlib
            digest = hashlib.sha256(np.ascontiguousarray(value).view(np.uint8).data).hexdigest()
            return f'dense<"sha256 {digest}"> : {ty}'
        if elide:
            return f'dense<"elided {value.nbytes} bytes"> : {ty}'
        return f'dense<"0x{np.ascontiguousarray(value).tobytes().hex().upper()}"> : {ty}'

    def rec(a: np.ndarray) -> str:
        if a.ndim == 0:
            return format_scalar(a.item() if dtype is not DType.BF16 else float(a), dtype)
        return "[" + ", ".join(rec(x) for x in a) + "]"

    return f"dense<{rec(value)}> : {ty}"


def format_attr(v: Any, elide: bool | str = False) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool) or isinstance(v, np.bool_):
        return "true" if v else "false"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if np.isnan(f):
            return "nan"
        if np.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, DType):
        return str(v)
    if isinstance(v, AffineMap):
        return f"affine_map<{v}>"
    if isinstance(v, np.ndarray):
        return format_dense(v, elide)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr(x, elide) for x in v) + "]"
    raise TypeError(f"cannot print attribute value {v!r} of type {type(v).__name__}")


def format_attrs(attrs: dict[str, Any], elide: bool | str = False) -> str:
    if not attrs:
        return ""
    return "{" + ", ".join(f"{k} = {format_attr(attrs[k], elide)}" for k in sorted(attrs)) + "}"


class Printer:
    def __init__(self, *, debug_info: bool = False, generic: bool = False, elide: bool | str = False):
        self.debug_info = debug_info
        self.generic = generic
        self.elide = elide
        self.lines: list[str] = []
        self.op_lines: dict[Op, int] = {}

    def module(self, m: Module) -> str:
        for i, f in enumerate(m.funcs):
            if i:
                self.lines.append("")
            self.func(f)
        return "\n".join(self.lines) + "\n"

    def func(self, f: Func) -> None:
        namer = Namer()
        args = ", ".join(f"{namer(a)}: {a.type}" for a in f.args)
        results = f.result_types
        res = str(results[0]) if len(results) == 1 else "(" + ", ".join(map(str, results)) + ")"
        attrs = f" attributes {format_attrs(f.attrs, self.elide)}" if f.attrs else ""
        self.lines.append(f"func @{f.name}({args}) -> {res}{attrs} {{")
        self.block_ops(f.body, namer, 1)
        self.lines.append("}")

    def block_ops(self, block: Block, namer: Namer, depth: int) -> None:
        for op in block.ops:
            self.op(op, namer, depth)

    def op(self, op: Op, namer: Namer, depth: int) -> None:
        pad = "  " * depth
        lhs = ", ".join(namer(r) for r in op.results)
        lhs = f"{lhs} = " if lhs else ""
        operands = ", ".join(namer(v) for v in op.operands)
        attrs = format_attrs(op.attrs, self.elide)
        loc = f' loc("{op.loc}")' if self.debug_info and str(op.loc) else ""
        if self.generic:
            head = f'{pad}{lhs}"{op.name}"({operands})' + (f" {attrs}" if attrs else "")
            in_t = ", ".join(str(v.type) for v in op.operands)
            out = [str(r.type) for r in op.results]
            out_t = out[0] if len(out) == 1 else "(" + ", ".join(out) + ")"
            tail = f" : ({in_t}) -> {out_t}{loc}"
        else:
            head = f"{pad}{lhs}{op.name}" + (f" {operands}" if operands else "") + (f" {attrs}" if attrs else "")
            types = op.results if op.results else op.operands
            tail = (" : " + ", ".join(str(v.type) for v in types) if types else "") + loc
        self.op_lines[op] = len(self.lines)
        if not op.regions:
            self.lines.append(head + tail)
            return
        self.lines.append(head + " ({")
        for i, region in enumerate(op.regions):
            if i:
                self.lines.append(pad + "}, {")
            args = ", ".join(f"{namer(a)}: {a.type}" for a in region.args)
            self.lines.append(f"{pad}^bb0({args}):")
            self.block_ops(region, namer, depth + 1)
        self.lines.append(pad + "})" + tail)


def print_module(m: Module, *, debug_info: bool = False, generic: bool = False,
                 elide: bool | str = False) -> str:
    return Printer(debug_info=debug_info, generic=generic, elide=elide).module(m)


def print_func(f: Func, **kw: Any) -> str:
    p = Printer(**kw)
    p.func(f)
    return "\n".join(p.lines) + "\n"
