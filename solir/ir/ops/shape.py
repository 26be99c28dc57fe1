"""Structural ops: constants, broadcasts, reshapes, transposes, slices, padding, concat, iota.
Each lowers to a kernel.generic whose input map does the data movement, so fusion folds
them into their consumers for free (a broadcast is a zero stride, a transpose a permuted one).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Builder, Op, Value
from solir.ir.ops.kernel import build_generic
from solir.ir.registry import STRUCTURAL, OpDef, register
from solir.ir.types import DType, TensorType, i64


def _identity_body(inner: Builder, args: list[Value]) -> list[Value]:
    return [args[0]]


# ---- constant ---------------------------------------------------------------------------------

def _infer_constant(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    v = attrs["value"]
    return [TensorType(v.shape, DType.from_numpy(v.dtype))]


register(OpDef(name="tensor.constant", operands=(), attrs=("value",), infer=_infer_constant,
               reference=lambda a: a["value"], kind=STRUCTURAL,
               doc="A dense constant; printed inline when small, as hex bytes when large."))


# ---- broadcast_in_dim -------------------------------------------------------------------------

def _infer_broadcast(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, shape, bd = types[0], tuple(attrs["shape"]), tuple(attrs["broadcast_dimensions"])
    if len(bd) != x.rank:
        raise ValueError(f"broadcast_dimensions {list(bd)} must name one output dim per input dim")
    for j, d in enumerate(bd):
        if not 0 <= d < len(shape) or x.shape[j] not in (1, shape[d]):
            raise ValueError(f"input dim {j} (size {x.shape[j]}) cannot broadcast to output dim {d}")
    if list(bd) != sorted(set(bd)):
        raise ValueError(f"broadcast_dimensions {list(bd)} must be strictly increasing")
    return [TensorType(shape, x.dtype)]


def _ref_broadcast(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    shape, bd = tuple(attrs["shape"]), tuple(attrs["broadcast_dimensions"])
    expanded = [1] * len(shape)
    for j, d in enumerate(bd):
        expanded[d] = x.shape[j]
    return np.broadcast_to(x.reshape(expanded), shape).copy()


def _lower_broadcast(op: Op, b: Builder) -> list[Value]:
    x = op.operands[0]
    shape, bd = tuple(op.attrs["shape"]), tuple(op.attrs["broadcast_dimensions"])
    n = len(shape)
    exprs = [AffineExpr.constant(n, 0) if x.type.shape[j] == 1 and shape[d] != 1
             else AffineExpr.dim(n, d) for j, d in enumerate(bd)]
    return build_generic(b, shape, "p" * n, [(x, AffineMap(n, tuple(exprs)))], _identity_body,
                         [x.type.dtype], name="broadcast", loc=op.loc)


register(OpDef(name="tensor.broadcast_in_dim", operands=("x",),
               attrs=("shape", "broadcast_dimensions"), infer=_infer_broadcast,
               reference=_ref_broadcast, lower=_lower_broadcast, kind=STRUCTURAL))


# ---- reshape ---------------------------------------------------------------------------------

def _infer_reshape(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    out = TensorType(tuple(attrs["shape"]), types[0].dtype)
    if out.size != types[0].size:
        raise ValueError(f"cannot reshape {types[0]} ({types[0].size} elements) to {out}")
    return [out]


def reshape_map(in_shape: Sequence[int], out_shape: Sequence[int]) -> AffineMap | None:
    """The affine map from output to input indices, when the reshape only splits dims and
    adds or drops unit dims; None when it merges dims (that needs div/mod: a view instead)."""
    n = len(out_shape)
    outs = [k for k, s in enumerate(out_shape) if s != 1]
    exprs: list[AffineExpr] = []
    pos = 0
    for size in in_shape:
        if size == 1:
            exprs.append(AffineExpr.constant(n, 0))
            continue
        group, prod = [], 1
        while prod < size and pos < len(outs):
            group.append(outs[pos])
            prod *= out_shape[outs[pos]]
            pos += 1
        if prod != size:
            return None
        coeffs, stride = [0] * n, 1
        for k in reversed(group):
            coeffs[k] = stride
            stride *= out_shape[k]
        exprs.append(AffineExpr(tuple(coeffs)))
    return AffineMap(n, tuple(exprs)) if pos == len(outs) else None


def _lower_reshape(op: Op, b: Builder) -> list[Value]:
    x, out = op.operands[0], op.results[0].type
    m = reshape_map(x.type.shape, out.shape)
    if m is None:
        return [b.op("tensor.reshape", [x], dict(op.attrs), name_hint=op.results[0].name).result]
    return build_generic(b, out.shape, "p" * out.rank, [(x, m)], _identity_body, [out.dtype],
                         name="reshape", loc=op.loc)


register(OpDef(name="tensor.reshape", operands=("x",), attrs=("shape",), infer=_infer_reshape,
               reference=lambda a, x: x.reshape(tuple(a["shape"])), lower=_lower_reshape,
               kind=STRUCTURAL,
               doc="Row-major reshape. Splits fuse as affine reads; merges stay as buffer views."))


# ---- transpose, rev, slice -------------------------------------------------------------------

def _infer_transpose(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    perm = tuple(attrs["permutation"])
    if sorted(perm) != list(range(types[0].rank)):
        raise ValueError(f"permutation {list(perm)} is not a permutation of {types[0].rank} dims")
    return [TensorType(tuple(types[0].shape[p] for p in perm), types[0].dtype)]


def _lower_transpose(op: Op, b: Builder) -> list[Value]:
    x, perm = op.operands[0], tuple(op.attrs["permutation"])
    n = len(perm)
    inverse = [perm.index(j) for j in range(n)]
    return build_generic(b, op.results[0].type.shape, "p" * n, [(x, AffineMap.select(n, tuple(inverse)))],
                         _identity_body, [x.type.dtype], name="transpose", loc=op.loc)


register(OpDef(name="tensor.transpose", operands=("x",), attrs=("permutation",),
               infer=_infer_transpose, reference=lambda a, x: np.transpose(x, a["permutation"]),
               lower=_lower_transpose, kind=STRUCTURAL))


def _infer_rev(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if any(not 0 <= d < types[0].rank for d in attrs["dimensions"]):
        raise ValueError(f"dimensions {list(attrs['dimensions'])} out of range")
    return [types[0]]


def _lower_rev(op: Op, b: Builder) -> list[Value]:
    x, dims = op.operands[0], set(op.attrs["dimensions"])
    n, shape = x.type.rank, x.type.shape
    exprs = tuple(AffineExpr.dim(n, k, -1, shape[k] - 1) if k in dims else AffineExpr.dim(n, k)
                  for k in range(n))
    return build_generic(b, shape, "p" * n, [(x, AffineMap(n, exprs))], _identity_body,
                         [x.type.dtype], name="rev", loc=op.loc)


register(OpDef(name="tensor.rev", operands=("x",), attrs=("dimensions",), infer=_infer_rev,
               reference=lambda a, x: np.flip(x, tuple(a["dimensions"])).copy(),
               lower=_lower_rev, kind=STRUCTURAL))


def _infer_slice(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    start, limit = tuple(attrs["start"]), tuple(attrs["limit"])
    strides = tuple(attrs.get("strides") or (1,) * x.rank)
    if not len(start) == len(limit) == len(strides) == x.rank:
        raise ValueError("start, limit and strides need one entry per dim")
    shape = []
    for s, l, st, n in zip(start, limit, strides, x.shape):
        if not (0 <= s <= l <= n) or st < 1:
            raise ValueError(f"slice [{s}:{l}:{st}] is out of bounds for a dim of size {n}")
        shape.append(max(0, -(-(l - s) // st)))
    return [TensorType(tuple(shape), x.dtype)]


def _lower_slice(op: Op, b: Builder) -> list[Value]:
    x = op.operands[0]
    n = x.type.rank
    strides = tuple(op.attrs.get("strides") or (1,) * n)
    exprs = tuple(AffineExpr.dim(n, k, strides[k], op.attrs["start"][k]) for k in range(n))
    return build_generic(b, op.results[0].type.shape, "p" * n, [(x, AffineMap(n, exprs))],
                         _identity_body, [x.type.dtype], name="slice", loc=op.loc)


register(OpDef(name="tensor.slice", operands=("x",), attrs=("start", "limit"),
               optional_attrs={"strides": None}, infer=_infer_slice,
               reference=lambda a, x: x[tuple(slice(s, l, st) for s, l, st in zip(
                   a["start"], a["limit"], a.get("strides") or (1,) * x.ndim))].copy(),
               lower=_lower_slice, kind=STRUCTURAL))


# ---- pad ---------------------------------------------------------------------------------------

def _infer_pad(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, pv = types
    if pv.rank != 0 or pv.dtype != x.dtype:
        raise ValueError(f"the padding value must be a {x.dtype} scalar, got {pv}")
    shape = []
    for n, lo, hi, it in zip(x.shape, attrs["low"], attrs["high"], attrs["interior"]):
        if it < 0:
            raise ValueError("interior padding must be >= 0")
        size = lo + hi + n + max(n - 1, 0) * it
        if size < 0:
            raise ValueError(f"padding ({lo}, {hi}, {it}) removes more than the {n} elements")
        shape.append(size)
    return [TensorType(tuple(shape), x.dtype)]


def _ref_pad(attrs: dict[str, Any], x: np.ndarray, pv: np.ndarray) -> np.ndarray:
    out_shape = _infer_pad([TensorType(x.shape, DType.from_numpy(x.dtype)),
                            TensorType((), DType.from_numpy(x.dtype))], attrs)[0].shape
    grids = np.indices(out_shape, sparse=True) if out_shape else []
    m = _pad_map(x.ndim, attrs)
    from solir.ir.ops.kernel import gather_affine
    if x.size == 0:
        return np.full(out_shape, pv, dtype=x.dtype)
    return np.where(gather_affine(np.ones(x.shape, bool), m, list(grids), False),
                    gather_affine(x, m, list(grids), 0), pv).astype(x.dtype)


def _pad_map(n: int, attrs: dict[str, Any]) -> AffineMap:
    return AffineMap(n, tuple(AffineExpr(AffineExpr.dim(n, k).coeffs, -lo, it + 1)
                              for k, (lo, it) in enumerate(zip(attrs["low"], attrs["interior"]))))


def _lower_pad(op: Op, b: Builder) -> list[Value]:
    x, pv = op.operands
    n = x.type.rank
    m = _pad_map(n, op.attrs)
    shape = op.results[0].type.shape
    pad_const = _constant_scalar(pv)
    if pad_const is not None:
        return build_generic(b, shape, "p" * n, [(x, m)], _identity_body, [x.type.dtype],
                             pads=[pad_const], name="pad", loc=op.loc)
    # A runtime padding value: a mask of ones padded with False says where x lands.
    ones = b.op("tensor.constant", [], {"value": np.ones(x.type.shape, bool)}).result
    scalar_map = AffineMap(n, ())

    def body(inner: Builder, args: list[Value]) -> list[Value]:
        xe, inside, pve = args
        return [inner("tensor.select", inside, pve, xe)]

    return build_generic(b, shape, "p" * n, [(x, m), (ones, m), (pv, scalar_map)], body,
                         [x.type.dtype], pads=[0, False, None], name="pad", loc=op.loc)


def _constant_scalar(v: Value) -> Any:
    op = v.owner
    if getattr(op, "name", None) == "tensor.constant" and op.attrs["value"].ndim == 0:  # type: ignore[union-attr]
        return op.attrs["value"].item()  # type: ignore[union-attr]
    return None


register(OpDef(name="tensor.pad", operands=("x", "padding_value"),
               attrs=("low", "high", "interior"), infer=_infer_pad, reference=_ref_pad,
               lower=_lower_pad, kind=STRUCTURAL,
               doc="lax.pad: low/high may be negative (cropping); interior inserts between elements."))


# ---- concatenate --------------------------------------------------------------------------------

def _infer_concat(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    d = attrs["dimension"]
    first = types[0]
    if not 0 <= d < first.rank:
        raise ValueError(f"dimension {d} out of range for rank {first.rank}")
    for t in types[1:]:
        if t.dtype != first.dtype or t.rank != first.rank or any(
                a != c for k, (a, c) in enumerate(zip(t.shape, first.shape)) if k != d):
            raise ValueError(f"cannot concatenate {t} with {first} along dim {d}")
    shape = list(first.shape)
    shape[d] = sum(t.shape[d] for t in types)
    return [TensorType(tuple(shape), first.dtype)]


def _lower_concat(op: Op, b: Builder) -> list[Value]:
    d, out = op.attrs["dimension"], op.results[0].type
    n = out.rank
    inputs, offsets, off = [], [], 0
    for v in op.operands:
        exprs = tuple(AffineExpr.dim(n, k, 1, -off if k == d else 0) for k in range(n))
        inputs.append((v, AffineMap(n, exprs)))
        offsets.append(off)
        off += v.type.shape[d]
    zero = False if out.dtype.is_bool else 0

    def body(inner: Builder, args: list[Value]) -> list[Value]:
        idx = inner.op("kernel.index", [], {"dim": d}).result
        result = args[-1]
        for arg, start in zip(reversed(args[:-1]), reversed(offsets[1:])):
            bound = inner.op("tensor.constant", [], {"value": np.array(start, np.int64)}).result
            result = inner("tensor.select", inner("tensor.lt", idx, bound), result, arg)
        return [result]

    return build_generic(b, out.shape, "p" * n, inputs, body, [out.dtype],
                         pads=[zero] * len(inputs), name="concatenate", loc=op.loc)


register(OpDef(name="tensor.concatenate", operands=("*inputs",), attrs=("dimension",),
               infer=_infer_concat, reference=lambda a, *xs: np.concatenate(xs, a["dimension"]),
               lower=_lower_concat, kind=STRUCTURAL))


# ---- iota -----------------------------------------------------------------------------------

def _infer_iota(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if not 0 <= attrs["dimension"] < len(attrs["shape"]):
        raise ValueError(f"dimension {attrs['dimension']} out of range")
    return [TensorType(tuple(attrs["shape"]), attrs["dtype"])]


def _ref_iota(attrs: dict[str, Any]) -> np.ndarray:
    shape, d = tuple(attrs["shape"]), attrs["dimension"]
    ar = np.arange(shape[d]).reshape([-1 if k == d else 1 for k in range(len(shape))])
    return np.broadcast_to(ar, shape).astype(attrs["dtype"].numpy)


def _lower_iota(op: Op, b: Builder) -> list[Value]:
    out, d = op.results[0].type, op.attrs["dimension"]

    def body(inner: Builder, args: list[Value]) -> list[Value]:
        idx = inner.op("kernel.index", [], {"dim": d}).result
        return [inner("tensor.convert", idx, dtype=out.dtype) if out.dtype != i64 else idx]

    return build_generic(b, out.shape, "p" * out.rank, [], body, [out.dtype], name="iota",
                         loc=op.loc)


register(OpDef(name="tensor.iota", operands=(), attrs=("shape", "dimension", "dtype"),
               infer=_infer_iota, reference=_ref_iota, lower=_lower_iota, kind=STRUCTURAL))

