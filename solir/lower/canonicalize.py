"""canonicalize: drop ops that do nothing, merge chains, share equal ops, remove dead ones."""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.ir.core import Builder, Module, Op, Value
from solir.lower.pipeline import PassContext, pass_
from solir.lower.rewrite import dce, rewrite_block


def _simplify(op: Op, b: Builder) -> list[Value] | None:
    a = op.attrs
    x = op.operands[0] if op.operands else None
    out = op.results[0].type if op.results else None
    if x is None or out is None:
        return None
    name = op.name
    if name in ("tensor.convert", "tensor.reshape", "tensor.broadcast_in_dim") and x.type == out:
        if name != "tensor.broadcast_in_dim" or list(a["broadcast_dimensions"]) == list(range(out.rank)):
            return [x]
    if name == "tensor.transpose" and list(a["permutation"]) == list(range(out.rank)):
        return [x]
    if name in ("tensor.rev",) and not a["dimensions"]:
        return [x]
    if name.startswith("tensor.reduce_") and name != "tensor.reduce_window" and not a["axes"]:
        return [x]
    if name == "tensor.slice" and x.type == out:
        return [x]
    if name == "tensor.concatenate" and len(op.operands) == 1:
        return [x]
    if name == "tensor.pad" and not any(a["low"]) and not any(a["high"]) and not any(a["interior"]):
        return [x]      # (same shape is not enough: low=1, high=-1 shifts)
    if name == "tensor.reshape" and getattr(x.owner, "name", "") == "tensor.reshape":
        return [b.op("tensor.reshape", [x.owner.operands[0]], dict(a)).result]  # type: ignore[union-attr]
    return None


def _cse_key(op: Op) -> Any:
    if op.regions or not op.opdef.pure or op.name == "return" or not op.results:
        return None
    attrs = []
    for k in sorted(op.attrs):
        v = op.attrs[k]
        if isinstance(v, np.ndarray):
            if v.size > 64:
                return None
            v = (v.dtype.str, v.shape, v.tobytes())
        attrs.append((k, repr(v)))
    return (op.name, tuple(id(v) for v in op.operands), tuple(attrs),
            tuple(r.type for r in op.results))


def cse(module: Module) -> None:
    for f in module.funcs:
        seen: dict[Any, Op] = {}
        mapping: dict[Value, Value] = {}
        kept = []
        for op in f.body.ops:
            op.operands = [mapping.get(v, v) for v in op.operands]
            key = _cse_key(op)
            if key is not None and key in seen:
                mapping.update(zip(op.results, seen[key].results))
                continue
            if key is not None:
                seen[key] = op
            kept.append(op)
        f.body.ops = kept


@pass_("canonicalize")
def canonicalize(module: Module, ctx: PassContext) -> Module:
    """Remove no-op converts/reshapes/transposes, merge reshape chains, CSE, DCE."""
    for f in module.funcs:
        rewrite_block(f.body, _simplify)
    cse(module)
    for f in module.funcs:
        dce(f.body)
    return module
