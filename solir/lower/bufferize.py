"""bufferize: give every tensor value a buffer. Kernel results are fresh buffers (SSA values
are never written twice), merging reshapes become `kernel.view` aliases, constants live in the
object file, and results that would alias an argument, a constant or another result get a copy
kernel so each function output is a distinct buffer the caller owns."""

from __future__ import annotations

from typing import Any

from solir.ir.attrs import AffineMap
from solir.ir.core import Builder, Module, Op, Value
from solir.ir.ops.kernel import LOOP_NESTS, build_generic
from solir.ir.registry import STRUCTURAL, OpDef, register
from solir.lower.pipeline import PassContext, pass_


def _infer_view(types: list[Any], attrs: dict[str, Any]) -> list[Any]:
    out = types[0].with_shape(tuple(attrs["shape"]))
    if out.size != types[0].size:
        raise ValueError(f"a view of {types[0]} cannot have shape {list(attrs['shape'])}")
    return [out]


register(OpDef(name="kernel.view", operands=("x",), attrs=("shape",), infer=_infer_view,
               reference=lambda a, x: x.reshape(tuple(a["shape"])), kind=STRUCTURAL,
               doc="The same buffer seen with another row-major shape (no copy)."))


def storage_root(v: Value) -> Value:
    while getattr(v.owner, "name", "") == "kernel.view":
        v = v.owner.operands[0]  # type: ignore[union-attr]
    return v


@pass_("bufferize")
def bufferize(module: Module, ctx: PassContext) -> Module:
    for f in module.funcs:
        new_ops = []
        for op in f.body.ops:
            if op.name == "tensor.reshape":
                b = Builder(f.body, op.loc)
                view = b.op("kernel.view", op.operands, {"shape": op.results[0].type.shape},
                            name_hint=op.results[0].name)
                f.body.ops.pop()
                _replace(f.body.ops, op.results[0], view.result)
                new_ops.append(view)
            else:
                new_ops.append(op)
        f.body.ops = new_ops
        ret = f.body.ops[-1]
        claimed: set[Value] = set()
        args = set(f.args)
        new_results = []
        for v in ret.operands:
            root = storage_root(v)
            owner = getattr(root.owner, "name", "")
            if root in args or owner not in LOOP_NESTS or root in claimed:
                v = _copy(f.body, ret, v)
                root = v
            claimed.add(root)
            new_results.append(v)
        ret.operands = new_results
    return module


def _replace(ops: list[Op], old: Value, new: Value) -> None:
    for op in ops:
        op.operands = [new if v is old else v for v in op.operands]


def _copy(block: Any, before: Op, v: Value) -> Value:
    b = Builder(block, before.loc)
    n = v.type.rank
    [out] = build_generic(b, v.type.shape, "p" * n, [(v, AffineMap.identity(n))],
                          lambda inner, args: [args[0]], [v.type.dtype], name="copy")
    op = block.ops.pop()
    block.ops.insert(block.ops.index(before), op)
    return out
