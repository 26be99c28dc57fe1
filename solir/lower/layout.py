"""nchwc-layout: convs that select-algorithms gave `nchwc` run over the blocked NCHWc layout
(solir/ir/ops/nchwc.py), with the layout changes inserted around them and cancelled between.

Each such conv becomes

    x5 = to_nchwc(x)            reshape [N, C/L, L, H, W], transpose -> [N, C/L, H, W, L]
    y5 = tensor.conv_nchwc(x5, w)
    y  = from_nchwc(y5)         transpose -> [N, O/L, L, OH, OW], reshape -> [N, O, OH, OW]

and an elementwise op whose operands are blocked values, per-channel or scalar broadcasts
(a BatchNorm's scale and shift, ReLU's zero, Clip's bounds) or other tensors of its shape
runs on the blocked values instead, its result blocked too (the broadcasts reshaped to
[C/L, L] and broadcast along dims 1 and 4; other tensors changed to NCHWc). A value needed
in NCHWc that is already there is used as it is: the layout changes between two convs of a
chain (and the elementwise ops between them) meet and cancel, so a MobileNet runs in NCHWc
from its first pointwise conv to its last; what is left are the changes at the chain's ends,
and dead-code elimination drops the unused ones.
"""

from __future__ import annotations

import numpy as np

from solir.ir.core import Block, Builder, Module, Op, Value
from solir.ir.registry import ELEMENTWISE, get_op
from solir.ir.ops.nchwc import conv_attrs, nchwc_kind, to_nchwc
from solir.lower.pipeline import PassContext, pass_
from solir.lower.rewrite import dce


def block_size(itemsize: int) -> int:
    """Channels per block: one 64-byte cache line (16 floats, 8 doubles)."""
    return max(1, 64 // itemsize)


@pass_("nchwc-layout")
def nchwc_layout(module: Module, ctx: PassContext) -> Module:
    for f in module.funcs:
        if any(op.name == "tensor.conv" and op.attrs.get("algorithm") == "nchwc"
               for op in f.body.ops):
            _convert(f.body)
    return module


def _convert(body: Block) -> None:
    blocked: dict[Value, Value] = {}        # NCHW value -> the same values in NCHWc
    subst: dict[Value, Value] = {}          # results replaced by their NCHW reconstruction
    new_ops: list[Op] = []

    def emit(loc, make) -> Value:  # noqa: ANN001
        blk = Block()
        v = make(Builder(blk, loc))
        new_ops.extend(blk.ops)
        return v

    def to5(v: Value, L: int, loc) -> Value:  # noqa: ANN001
        if v in blocked:
            return blocked[v]
        if getattr(v.owner, "name", "") == "tensor.constant":
            # reordered now (a BN scale broadcast over a small image, made dense by
            # fold-constants), not by a transpose on every call
            value = to_nchwc(np.asarray(v.owner.attrs["value"]), L)  # type: ignore[union-attr]
            blocked[v] = emit(loc, lambda b: b.op("tensor.constant", [], {"value": value},
                                                  name_hint=v.name).result)
        else:
            n, c, h, w = v.type.shape
            blocked[v] = emit(loc, lambda b: b("tensor.transpose", b("tensor.reshape", v,
                              shape=(n, c // L, L, h, w)), permutation=(0, 1, 3, 4, 2)))
        return blocked[v]

    def from5(v5: Value, like: Value, loc) -> Value:  # noqa: ANN001
        v = emit(loc, lambda b: b("tensor.reshape", b("tensor.transpose", v5,
                                                      permutation=(0, 1, 4, 2, 3)),
                                  shape=like.type.shape, name_hint=like.name))
        blocked[v] = v5
        return v

    for op in body.ops:
        op.operands = [subst.get(v, v) for v in op.operands]
        if op.name == "tensor.conv" and op.attrs.get("algorithm") == "nchwc":
            x, w = op.operands
            L = block_size(x.type.dtype.itemsize)
            # (a direct conv's input, fewer than L channels, stays NCHW)
            x5 = x if nchwc_kind(op, L)[0] == "direct" else to5(x, L, op.loc)
            y5 = emit(op.loc, lambda b: b.op("tensor.conv_nchwc", [x5, w],
                                             {**conv_attrs(op.attrs), "block": L}).result)
            subst[op.results[0]] = from5(y5, op.results[0], op.loc)
            continue
        kinds = _blocked_operands(op, blocked)
        if kinds is None:
            new_ops.append(op)
            continue
        L = next(blocked[v] for v in op.operands if v in blocked).type.shape[-1]

        def operand5(v: Value, per_channel: bool | None) -> Value:
            if v in blocked or per_channel is None:
                return to5(v, L, op.loc)            # (already there, or changed whole)
            return emit(op.loc, lambda b: _broadcast5(b, v, per_channel, L))
        ins = [operand5(v, k) for v, k in zip(op.operands, kinds)]
        y5 = emit(op.loc, lambda b: b.op(op.name, ins, dict(op.attrs)).result)
        subst[op.results[0]] = from5(y5, op.results[0], op.loc)
    body.ops = new_ops
    dce(body)


def _blocked_operands(op: Op, blocked: dict[Value, Value]) -> list[bool | None] | None:
    """For an elementwise op on [N, C, H, W] with an operand in NCHWc: per operand, None if
    it is (or will be) changed to NCHWc as a whole, else whether it is the broadcast of a
    per-channel vector (True: [C], [1, C, 1, 1], ...) or of a scalar (False). None if the op
    stays."""
    if (get_op(op.name).kind != ELEMENTWISE or len(op.results) != 1 or op.regions
            or not any(v in blocked for v in op.operands)):
        return None
    shape = op.results[0].type.shape
    if len(shape) != 4 or any(v.type.shape != shape for v in op.operands):
        return None
    out: list[bool | None] = []
    for v in op.operands:
        src = v.owner if isinstance(v.owner, Op) else None
        kind = None
        if v not in blocked and src is not None and src.name == "tensor.broadcast_in_dim":
            x, dims = src.operands[0].type, tuple(src.attrs["broadcast_dimensions"])
            if x.size == 1:
                kind = False
            elif all(x.shape[s] == 1 for s, r in enumerate(dims) if r != 1) and x.size == shape[1]:
                kind = True             # only the channels vary: a per-channel vector
        out.append(kind)
    return out


def _broadcast5(b: Builder, v: Value, per_channel: bool, L: int) -> Value:
    """A [N, C, H, W] broadcast of a per-channel vector or of a scalar, as the same
    broadcast in NCHWc."""
    src = v.owner.operands[0]  # type: ignore[union-attr]
    n, c, h, w = v.type.shape
    shape5 = (n, c // L, h, w, L)
    if not per_channel:
        scalar = src if src.type.rank == 0 else b("tensor.reshape", src, shape=())
        return b("tensor.broadcast_in_dim", scalar, shape=shape5, broadcast_dimensions=())
    return b("tensor.broadcast_in_dim", b("tensor.reshape", src, shape=(c // L, L)),
             shape=shape5, broadcast_dimensions=(1, 4))


__all__ = ["block_size", "nchwc_layout"]
