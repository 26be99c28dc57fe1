"""Kernel-level ops. `kernel.generic` is the one loop nest every tensor op lowers to: an
iteration domain (`dims`, each `p`arallel, `r`eduction or `s`can), one affine map per input
saying which element is read at each point, a scalar body, and a combiner for reductions.
Fusion composes maps and splices bodies; schedule and vectorize annotate loop order, the
vector axis and the parallel axis; the LLVM emitter turns it into loops.

    %y = kernel.generic %x, %b {dims = [4, 8], iterators = "pp",
           maps = [affine_map<(d0, d1) -> (d0, d1)>, affine_map<(d0, d1) -> (d1)>]} ({
    ^bb0(%xe: tensor<f32>, %be: tensor<f32>):
      %s = tensor.add %xe, %be : tensor<f32>
      kernel.yield %s : tensor<f32>
    }) : tensor<4x8xf32>
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from solir.errors import VerifyError
from solir.ir.attrs import AffineMap
from solir.ir.core import Block, Builder, Loc, Op, Value
from solir.ir.registry import KERNEL, OpDef, register
from solir.ir.types import DType, TensorType, i64, scalar

COMBINERS = ("add", "mul", "max", "min", "and", "or", "argmax", "argmin")
SCATTER_COMBINERS = ("set", "add", "mul", "max", "min")
LOOP_NESTS = ("kernel.generic", "kernel.scatter", "kernel.matmul", "kernel.winograd_input",
              "kernel.winograd_output")   # kernel ops that own an output buffer


def generic_result_shape(dims: Sequence[int], iterators: str) -> tuple[int, ...]:
    return tuple(d for d, it in zip(dims, iterators) if it != "r")


def _verify_generic(op: Op) -> str | None:
    a = op.attrs
    dims, its, maps = a["dims"], a["iterators"], a["maps"]
    if len(dims) != len(its) or set(its) - set("prs"):
        return f"iterators {its!r} must give one of p/r/s for each of {len(dims)} dims"
    if len(maps) != len(op.operands):
        return f"{len(maps)} maps for {len(op.operands)} inputs"
    pads = a.get("pads") or (None,) * len(maps)
    if len(pads) != len(maps):
        return f"{len(pads)} pads for {len(maps)} inputs"
    for i, (m, v) in enumerate(zip(maps, op.operands)):
        if m is None:
            continue
        if m.n_dims != len(dims) or len(m.exprs) != v.type.rank:
            return f"map {i} is {m} but input {i} is {v.type} in a {len(dims)}-d domain"
        if m.divides and pads[i] is None:
            return f"map {i} divides, so input {i} needs a pad value for inexact points"
    comb = a.get("combiner")
    if ("r" in its or "s" in its) != (comb is not None):
        return "a combiner is required exactly when there are reduction or scan dims"
    if comb is not None and comb not in COMBINERS:
        return f"unknown combiner {comb!r}; expected one of {', '.join(COMBINERS)}"
    shape = generic_result_shape(dims, its)
    body = op.regions[0] if op.regions else None
    if body is None or not body.ops or body.ops[-1].name != "kernel.yield":
        return "the body must end with kernel.yield"
    if len(body.args) != len(op.operands):
        return f"the body has {len(body.args)} arguments for {len(op.operands)} inputs"
    for arg, v in zip(body.args, op.operands):
        if arg.type != scalar(v.type.dtype):
            return f"body argument {arg.type} does not match input element type {v.type.dtype}"
    yields = body.ops[-1].operands
    if len(yields) != len(op.results):
        return f"the body yields {len(yields)} values for {len(op.results)} results"
    for y, r in zip(yields, op.results):
        if r.type.shape != shape:
            return f"result {r.type} should have shape {list(shape)} (the non-reduction dims)"
        want = y.type.dtype if comb not in ("argmax", "argmin") else r.type.dtype
        if r.type.dtype != want or y.type.rank != 0:
            return f"result {r.type} does not match the yielded {y.type}"
    return None


def _interpret_generic(op: Op, arrays: list[np.ndarray],
                       run_block: Callable[[Block, list[Any], dict], list[Any]]) -> list[np.ndarray]:
    a = op.attrs
    dims, its = tuple(a["dims"]), a["iterators"]
    grids = list(np.indices(dims, sparse=True)) if dims else []
    pads = a.get("pads") or (None,) * len(arrays)
    loaded = []
    for arr, m, pad in zip(arrays, a["maps"], pads):
        if m is None:
            loaded.append(arr)
            continue
        loaded.append(gather_affine(arr, m, grids, pad))
    ctx = {"grids": grids, "inputs": arrays}
    outs = run_block(op.regions[0], loaded, ctx)
    full = [np.broadcast_to(np.asarray(o), dims) if dims else np.asarray(o) for o in outs]
    comb = a.get("combiner")
    results = []
    for r, val in zip(op.results, full):
        results.append(_combine(val, its, comb).astype(r.type.dtype.numpy, copy=False))
    return results


def gather_affine(arr: np.ndarray, m: AffineMap, grids: list[np.ndarray], pad: Any) -> np.ndarray:
    idx, valid = [], None
    for e, size in zip(m.exprs, arr.shape):
        i, exact = e.evaluate(grids)
        ok = (i >= 0) & (i < size)
        if exact is not None:
            ok = ok & exact
        if pad is not None:
            valid = ok if valid is None else valid & ok
            i = np.clip(i, 0, size - 1)
        idx.append(i)
    vals = arr[tuple(idx)] if idx else arr
    if valid is not None:
        vals = np.where(valid, vals, np.asarray(pad, dtype=arr.dtype))
    return vals


def _combine(val: np.ndarray, its: str, comb: str | None) -> np.ndarray:
    if comb is None:
        return val
    if "s" in its:
        axis = its.index("s")
        fn = {"add": np.cumsum, "mul": np.cumprod, "max": np.maximum.accumulate,
              "min": np.minimum.accumulate}[comb]
        return fn(val, axis=axis, dtype=val.dtype) if comb in ("add", "mul") else fn(val, axis=axis)
    axes = tuple(k for k, it in enumerate(its) if it == "r")
    if comb in ("argmax", "argmin"):
        moved = np.moveaxis(val, axes, range(-len(axes), 0))
        flat = moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))
        return (np.argmax if comb == "argmax" else np.argmin)(flat, axis=-1)
    fn = {"add": np.sum, "mul": np.prod, "max": np.max, "min": np.min,
          "and": np.all, "or": np.any}[comb]
    with np.errstate(all="ignore"):
        return np.asarray(fn(val, axis=axes, dtype=val.dtype) if comb in ("add", "mul")
                          else fn(val, axis=axes))


register(OpDef(
    name="kernel.generic", operands=("*inputs",), infer=None,  # type: ignore[arg-type]
    attrs=("dims", "iterators", "maps"),
    optional_attrs={"combiner": None, "pads": None, "kernel": "", "order": None,
                    "vector": None, "parallel": None},
    verify=_verify_generic, reference=_interpret_generic, kind=KERNEL, has_region=True,
    doc="A loop nest: affine reads of its inputs, a scalar body, optional reduction."))

register(OpDef(
    name="kernel.yield", operands=("*values",), infer=lambda ts, a: [],
    doc="Ends a kernel body with the values stored (or combined) at each point."))

register(OpDef(
    name="kernel.index", operands=(), attrs=("dim",),
    infer=lambda ts, a: [scalar(i64)],
    doc="The loop index of dimension `dim` at the current point, as i64."))


def _infer_read(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    for t in types:
        if t.rank != 0 or not t.dtype.is_int:
            raise ValueError("kernel.read indices must be rank-0 integers")
    return [scalar(attrs["dtype"])]


register(OpDef(
    name="kernel.read", operands=("*indices",), attrs=("input", "dtype"),
    optional_attrs={"mode": "clip", "fill": None},
    infer=_infer_read,
    doc="Read input `input` of the enclosing generic at computed indices (gather, "
        "dynamic_slice). mode 'clip' clamps each index; 'fill' yields `fill` out of bounds."))


# ---- kernel.scatter: a loop nest whose stores go to computed indices --------------------------

def _verify_scatter(op: Op) -> str | None:
    a = op.attrs
    dims, maps = a["dims"], a["maps"]
    if not op.operands:
        return "needs the initial tensor as its first input"
    init = op.operands[0].type
    if len(maps) != len(op.operands) or maps[0] is not None:
        return "needs one map per input, and none (`None`) for the initial tensor"
    for i, (m, v) in enumerate(zip(maps[1:], op.operands[1:]), 1):
        if m is not None and (m.n_dims != len(dims) or len(m.exprs) != v.type.rank or m.divides):
            return f"map {i} is {m} but input {i} is {v.type} in a {len(dims)}-d domain"
    if a["combiner"] not in SCATTER_COMBINERS:
        return f"unknown combiner {a['combiner']!r}; expected one of {', '.join(SCATTER_COMBINERS)}"
    body = op.regions[0] if op.regions else None
    if body is None or not body.ops or body.ops[-1].name != "kernel.yield":
        return "the body must end with kernel.yield"
    ys = body.ops[-1].operands
    if len(ys) != 2 + init.rank:
        return f"the body must yield (value, valid, {init.rank} indices), got {len(ys)} values"
    if ys[0].type != scalar(init.dtype) or ys[1].type != scalar(DType.I1):
        return f"the body yields {ys[0].type}, {ys[1].type}; expected {scalar(init.dtype)}, i1"
    if any(y.type != scalar(i64) for y in ys[2:]):
        return "scatter indices must be i64 scalars"
    if len(op.results) != 1 or op.results[0].type != init:
        return f"the result must have the initial tensor's type {init}"
    return None


def _interpret_scatter(op: Op, arrays: list[np.ndarray],
                       run_block: Callable[[Block, list[Any], dict], list[Any]]) -> list[np.ndarray]:
    a = op.attrs
    dims = tuple(a["dims"])
    grids = list(np.indices(dims, sparse=True)) if dims else []
    loaded = [arr if m is None else gather_affine(arr, m, grids, None)
              for arr, m in zip(arrays, a["maps"])]
    value, valid, *idx = (np.broadcast_to(np.asarray(v), dims).ravel()
                          for v in run_block(op.regions[0], loaded, {"grids": grids, "inputs": arrays}))
    out = arrays[0].copy()
    ok = valid.astype(bool)
    for i, n in zip(idx, out.shape):
        ok &= (i >= 0) & (i < n)
    where = tuple(i[ok] for i in idx)
    value = value[ok].astype(out.dtype)
    comb = a["combiner"]
    if comb == "set":
        for k in range(len(value)):      # in iteration order: the last write wins
            out[tuple(w[k] for w in where)] = value[k]
    else:
        {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}[comb].at(
            out, where, value)
    return [out]


register(OpDef(
    name="kernel.scatter", operands=("init", "*inputs"), infer=None,  # type: ignore[arg-type]
    attrs=("dims", "maps", "combiner"), optional_attrs={"kernel": ""},
    verify=_verify_scatter, reference=_interpret_scatter, kind=KERNEL, has_region=True,
    doc="Copy `init`, then at each point of `dims` combine the yielded value into the element "
        "at the yielded indices (skipped when `valid` is false or an index is out of bounds). "
        "Runs serially in row-major order, so 'set' keeps the last write."))


def build_scatter(b: Builder, init: Value, dims: Sequence[int],
                  inputs: Sequence[tuple[Value, AffineMap | None]],
                  body: Callable[[Builder, list[Value]], tuple[Value, Value, list[Value]]],
                  combiner: str, *, name: str = "", loc: Loc | None = None) -> Value:
    """Build a kernel.scatter; `body(inner, args)` returns (value, valid, indices), where args
    has one element per input (the first, for `init`, is not loaded)."""
    block = Block()
    all_inputs = [(init, None)] + list(inputs)
    args = [block.add_arg(scalar(v.type.dtype), f"{v.name}_e" if v.name else "")
            for v, _ in all_inputs]
    inner = Builder(block, loc or b.loc)
    value, valid, idx = body(inner, args)
    idx = [i if i.type.dtype == i64 else inner("tensor.convert", i, dtype=i64) for i in idx]
    inner.op("kernel.yield", [value, valid, *idx], result_types=[])
    attrs: dict[str, Any] = {"dims": tuple(dims), "maps": tuple(m for _, m in all_inputs),
                             "combiner": combiner}
    if name:
        attrs["kernel"] = name
    op = b.op("kernel.scatter", [v for v, _ in all_inputs], attrs, result_types=[init.type],
              regions=[block], loc=loc)
    if _verify_scatter(op) is not None:  # a lowering bug, not a user error
        raise VerifyError(f"built an invalid kernel.scatter: {_verify_scatter(op)}", loc=op.loc)
    return op.result


# ---- the helper every `lower` entry uses to build a generic --------------------------------

def build_generic(b: Builder, dims: Sequence[int], iterators: str,
                  inputs: Sequence[tuple[Value, AffineMap | None]],
                  body: Callable[[Builder, list[Value]], list[Value]],
                  result_dtypes: Sequence[DType], *, combiner: str | None = None,
                  pads: Sequence[Any] | None = None, name: str = "",
                  loc: Loc | None = None) -> list[Value]:
    block = Block()
    args = [block.add_arg(scalar(v.type.dtype), f"{v.name}_e" if v.name else "")
            for v, _ in inputs]
    inner = Builder(block, loc or b.loc)
    outs = body(inner, args)
    inner.op("kernel.yield", outs, result_types=[])
    attrs: dict[str, Any] = {"dims": tuple(dims), "iterators": iterators,
                             "maps": tuple(m for _, m in inputs)}
    if combiner is not None:
        attrs["combiner"] = combiner
    if pads is not None and any(p is not None for p in pads):
        attrs["pads"] = tuple(pads)
    if name:
        attrs["kernel"] = name
    shape = generic_result_shape(dims, iterators)
    op = b.op("kernel.generic", [v for v, _ in inputs], attrs,
              result_types=[TensorType(shape, dt) for dt in result_dtypes],
              regions=[block], loc=loc)
    if _verify_generic(op) is not None:  # a lowering bug, not a user error
        raise VerifyError(f"built an invalid kernel.generic: {_verify_generic(op)}", loc=op.loc)
    return op.results
