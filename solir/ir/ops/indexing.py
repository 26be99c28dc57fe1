"""Data-dependent indexing: dynamic_slice, dynamic_update_slice, gather. Their kernels read
through `kernel.read`, whose indices are computed in the body."""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Builder, Op, Value
from solir.ir.ops.kernel import build_generic
from solir.ir.registry import STRUCTURAL, OpDef, register
from solir.ir.types import DType, TensorType, i64


def _const(inner: Builder, value: int) -> Value:
    return inner.op("tensor.constant", [], {"value": np.array(value, np.int64)}).result


def _as_i64(inner: Builder, v: Value) -> Value:
    return v if v.type.dtype == i64 else inner("tensor.convert", v, dtype=i64)


def _clamp(inner: Builder, v: Value, lo: int, hi: int) -> Value:
    return inner("tensor.clamp", _const(inner, lo), v, _const(inner, max(lo, hi)))


def _check_starts(x: TensorType, starts: list[TensorType]) -> None:
    if len(starts) != x.rank:
        raise ValueError(f"need {x.rank} start indices, got {len(starts)}")
    for s in starts:
        if s.rank != 0 or not s.dtype.is_int:
            raise ValueError(f"start indices must be integer scalars, got {s}")


# ---- dynamic_slice -----------------------------------------------------------------------------

def _infer_dynamic_slice(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, starts = types[0], types[1:]
    _check_starts(x, starts)
    sizes = tuple(attrs["sizes"])
    if len(sizes) != x.rank or any(not 0 <= s <= n for s, n in zip(sizes, x.shape)):
        raise ValueError(f"sizes {list(sizes)} do not fit {x}")
    return [TensorType(sizes, x.dtype)]


def _ref_dynamic_slice(attrs: dict[str, Any], x: np.ndarray, *starts: np.ndarray) -> np.ndarray:
    sizes = attrs["sizes"]
    st = [int(np.clip(s, 0, n - z)) for s, n, z in zip(starts, x.shape, sizes)]
    return x[tuple(slice(s, s + z) for s, z in zip(st, sizes))].copy()


def _lower_dynamic_slice(op: Op, b: Builder) -> list[Value]:
    x, starts = op.operands[0], op.operands[1:]
    sizes, n = tuple(op.attrs["sizes"]), x.type.rank

    def body(inner: Builder, args: list[Value]) -> list[Value]:
        idx = []
        for k, s in enumerate(args[1:]):
            start = _clamp(inner, _as_i64(inner, s), 0, x.type.shape[k] - sizes[k])
            pos = inner.op("kernel.index", [], {"dim": k}).result
            idx.append(inner("tensor.add", start, pos))
        return [inner.op("kernel.read", idx, {"input": 0, "dtype": x.type.dtype}).result]

    inputs = [(x, None)] + [(s, AffineMap(n, ())) for s in starts]
    return build_generic(b, sizes, "p" * n, inputs, body, [x.type.dtype], name="dynamic_slice",
                         loc=op.loc)


register(OpDef(name="tensor.dynamic_slice", operands=("x", "*starts"), attrs=("sizes",),
               infer=_infer_dynamic_slice, reference=_ref_dynamic_slice,
               lower=_lower_dynamic_slice, kind=STRUCTURAL,
               doc="Slice of static `sizes` at runtime starts, clamped to stay in bounds."))


# ---- dynamic_update_slice ----------------------------------------------------------------------

def _infer_dus(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, upd, starts = types[0], types[1], types[2:]
    _check_starts(x, starts)
    if upd.dtype != x.dtype or upd.rank != x.rank or any(u > n for u, n in zip(upd.shape, x.shape)):
        raise ValueError(f"update {upd} does not fit in {x}")
    return [x]


def _ref_dus(attrs: dict[str, Any], x: np.ndarray, upd: np.ndarray, *starts: np.ndarray) -> np.ndarray:
    out = x.copy()
    st = [int(np.clip(s, 0, n - u)) for s, n, u in zip(starts, x.shape, upd.shape)]
    out[tuple(slice(s, s + u) for s, u in zip(st, upd.shape))] = upd
    return out


def _lower_dus(op: Op, b: Builder) -> list[Value]:
    x, upd, starts = op.operands[0], op.operands[1], op.operands[2:]
    n = x.type.rank

    def body(inner: Builder, args: list[Value]) -> list[Value]:
        xe, rel, inside = args[0], [], None
        for k, s in enumerate(args[2:]):
            start = _clamp(inner, _as_i64(inner, s), 0, x.type.shape[k] - upd.type.shape[k])
            r = inner("tensor.sub", inner.op("kernel.index", [], {"dim": k}).result, start)
            ok = inner("tensor.and", inner("tensor.ge", r, _const(inner, 0)),
                       inner("tensor.lt", r, _const(inner, upd.type.shape[k])))
            inside = ok if inside is None else inner("tensor.and", inside, ok)
            rel.append(r)
        value = inner.op("kernel.read", rel, {"input": 1, "dtype": x.type.dtype}).result
        return [inner("tensor.select", inside, xe, value) if inside is not None else value]

    inputs = [(x, AffineMap.identity(n)), (upd, None)] + [(s, AffineMap(n, ())) for s in starts]
    return build_generic(b, x.type.shape, "p" * n, inputs, body, [x.type.dtype],
                         name="dynamic_update_slice", loc=op.loc)


register(OpDef(name="tensor.dynamic_update_slice", operands=("x", "update", "*starts"),
               infer=_infer_dus, reference=_ref_dus, lower=_lower_dus, kind=STRUCTURAL,
               doc="x with `update` written at runtime starts (clamped so it fits)."))


# ---- gather --------------------------------------------------------------------------------------

_GATHER_KEYS = ("offset_dims", "collapsed_slice_dims", "start_index_map", "operand_batching_dims",
                "start_indices_batching_dims", "slice_sizes")


def _gather_dims(attrs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(attrs.get(k) or ()) for k in _GATHER_KEYS}


def _infer_gather(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, idx = types
    g = _gather_dims(attrs)
    if not idx.dtype.is_int:
        raise ValueError(f"indices must be integers, got {idx.dtype}")
    if idx.rank == 0 or idx.shape[-1] != len(g["start_index_map"]):
        raise ValueError(f"the last dim of indices {idx} must have one entry per start_index_map "
                         f"dim ({len(g['start_index_map'])})")
    if len(g["slice_sizes"]) != x.rank:
        raise ValueError(f"slice_sizes needs {x.rank} entries")
    if attrs.get("mode", "clip") not in ("clip", "fill"):
        raise ValueError("mode must be 'clip' or 'fill'")
    kept = [k for k in range(x.rank) if k not in g["collapsed_slice_dims"] + g["operand_batching_dims"]]
    batch = list(idx.shape[:-1])
    rank = len(batch) + len(kept)
    if len(g["offset_dims"]) != len(kept):
        raise ValueError(f"offset_dims {list(g['offset_dims'])} must list {len(kept)} dims")
    shape, bi, oi = [], 0, 0
    for pos in range(rank):
        if pos in g["offset_dims"]:
            shape.append(g["slice_sizes"][kept[oi]])
            oi += 1
        else:
            shape.append(batch[bi])
            bi += 1
    return [TensorType(tuple(shape), x.dtype)]


def _lower_gather(op: Op, b: Builder) -> list[Value]:
    x, idx = op.operands
    g = _gather_dims(op.attrs)
    out = op.results[0].type
    n = out.rank
    kept = [k for k in range(x.type.rank)
            if k not in g["collapsed_slice_dims"] + g["operand_batching_dims"]]
    batch_pos = [p for p in range(n) if p not in g["offset_dims"]]   # output dims of idx dims
    offset_of = dict(zip(kept, g["offset_dims"]))
    # one input per start index component: idx[batch..., k]
    inputs: list[tuple[Value, AffineMap | None]] = [(x, None)]
    for k in range(len(g["start_index_map"])):
        exprs = tuple(AffineExpr.dim(n, p) for p in batch_pos) + (AffineExpr.constant(n, k),)
        inputs.append((idx, AffineMap(n, exprs)))
    fill = op.attrs.get("mode", "clip") == "fill"

    def body(inner: Builder, args: list[Value]) -> list[Value]:
        comps = args[1:]
        valid = None
        index = []
        for d in range(x.type.rank):
            size, limit = g["slice_sizes"][d], x.type.shape[d] - g["slice_sizes"][d]
            if d in g["start_index_map"]:
                start = _as_i64(inner, comps[g["start_index_map"].index(d)])
                if fill:
                    ok = inner("tensor.and", inner("tensor.ge", start, _const(inner, 0)),
                               inner("tensor.le", start, _const(inner, limit)))
                    valid = ok if valid is None else inner("tensor.and", valid, ok)
                start = _clamp(inner, start, 0, limit)
            elif d in g["operand_batching_dims"]:
                m = g["operand_batching_dims"].index(d)
                idx_dim = g["start_indices_batching_dims"][m]
                start = inner.op("kernel.index", [], {"dim": batch_pos[idx_dim]}).result
            else:
                start = _const(inner, 0)
            if d in offset_of and size > 1:
                pos = inner.op("kernel.index", [], {"dim": offset_of[d]}).result
                start = inner("tensor.add", start, pos)
            index.append(start)
        value = inner.op("kernel.read", index, {"input": 0, "dtype": x.type.dtype}).result
        if valid is None:
            return [value]
        fv = op.attrs.get("fill_value")
        fv = (np.nan if x.type.dtype.is_float else 0) if fv is None else fv
        fill_c = inner.op("tensor.constant", [], {"value": np.array(fv, x.type.dtype.numpy)}).result
        return [inner("tensor.select", valid, fill_c, value)]

    return build_generic(b, out.shape, "p" * n, inputs, body, [out.dtype], name="gather",
                         loc=op.loc)


def _ref_gather(attrs: dict[str, Any], x: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Straight from the XLA gather definition, one output element at a time (tests only)."""
    g = _gather_dims(attrs)
    xt = TensorType(x.shape, DType.from_numpy(x.dtype))
    it = TensorType(idx.shape, DType.from_numpy(idx.dtype))
    out_shape = _infer_gather([xt, it], attrs)[0].shape
    kept = [k for k in range(x.ndim) if k not in g["collapsed_slice_dims"] + g["operand_batching_dims"]]
    batch_pos = [p for p in range(len(out_shape)) if p not in g["offset_dims"]]
    fill = attrs.get("mode", "clip") == "fill"
    fv = attrs.get("fill_value")
    fv = (np.nan if x.dtype.kind == "f" else 0) if fv is None else fv
    out = np.empty(out_shape, x.dtype)
    for pos in np.ndindex(*out_shape):
        bidx = tuple(pos[p] for p in batch_pos)
        comps = idx[bidx] if idx.ndim > 1 else idx
        full, ok = [], True
        for d in range(x.ndim):
            limit = x.shape[d] - g["slice_sizes"][d]
            if d in g["start_index_map"]:
                s = int(comps[g["start_index_map"].index(d)])
                ok &= 0 <= s <= limit
                s = min(max(s, 0), max(limit, 0))
            elif d in g["operand_batching_dims"]:
                s = bidx[g["start_indices_batching_dims"][g["operand_batching_dims"].index(d)]]
            else:
                s = 0
            if d in kept:
                s += pos[g["offset_dims"][kept.index(d)]]
            full.append(s)
        out[pos] = x[tuple(full)] if (ok or not fill) else fv
    return out


register(OpDef(name="tensor.gather", operands=("x", "indices"), attrs=("slice_sizes",),
               optional_attrs={"offset_dims": (), "collapsed_slice_dims": (),
                               "start_index_map": (), "operand_batching_dims": (),
                               "start_indices_batching_dims": (), "mode": "clip",
                               "fill_value": None},
               infer=_infer_gather, reference=_ref_gather, lower=_lower_gather, kind=STRUCTURAL,
               doc="XLA gather with the index vector in the last dim of `indices`. mode 'clip' "
                   "clamps starts; 'fill' yields fill_value for slices that do not fit."))


# ---- scatter -------------------------------------------------------------------------------------

_SCATTER_KEYS = ("update_window_dims", "inserted_window_dims", "scatter_dims_to_operand_dims",
                 "operand_batching_dims", "scatter_indices_batching_dims")


def _scatter_dims(attrs: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(attrs.get(k) or ()) for k in _SCATTER_KEYS}


def _scatter_layout(x: TensorType, idx: TensorType, upd: TensorType,
                    attrs: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """(update dims that pick an index vector, operand window dims, each window dim's size)."""
    s = _scatter_dims(attrs)
    scatter_dims = [d for d in range(upd.rank) if d not in s["update_window_dims"]]
    window = [d for d in range(x.rank)
              if d not in s["inserted_window_dims"] + s["operand_batching_dims"]]
    return scatter_dims, window, [upd.shape[d] for d in s["update_window_dims"]]


def _infer_scatter(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, idx, upd = types
    s = _scatter_dims(attrs)
    if not idx.dtype.is_int:
        raise ValueError(f"indices must be integers, got {idx.dtype}")
    if upd.dtype != x.dtype:
        raise ValueError(f"updates {upd} must have the operand's dtype {x.dtype}")
    if idx.rank == 0 or idx.shape[-1] != len(s["scatter_dims_to_operand_dims"]):
        raise ValueError(f"the last dim of indices {idx} must have one entry per "
                         f"scatter_dims_to_operand_dims dim ({len(s['scatter_dims_to_operand_dims'])})")
    scatter_dims, window, sizes = _scatter_layout(x, idx, upd, attrs)
    if len(window) != len(s["update_window_dims"]):
        raise ValueError(f"update_window_dims {list(s['update_window_dims'])} must list one dim "
                         f"per operand window dim ({len(window)})")
    if [upd.shape[d] for d in scatter_dims] != list(idx.shape[:-1]):
        raise ValueError(f"updates {upd} do not match the batch dims of indices {idx}")
    for d, n in zip(window, sizes):
        if n > x.shape[d]:
            raise ValueError(f"update window of {n} does not fit operand dim {d} of {x}")
    if attrs.get("combiner", "add") not in ("set", "add", "mul", "max", "min"):
        raise ValueError("combiner must be set, add, mul, max or min")
    if attrs.get("mode", "drop") not in ("clip", "drop"):
        raise ValueError("mode must be 'clip' or 'drop'")
    return [x]


def _scatter_start(x: TensorType, s: dict[str, tuple[int, ...]], window: list[int],
                   sizes: list[int], d: int) -> tuple[int, int]:
    """(position in the index vector, largest valid start) of operand dim d."""
    size = sizes[window.index(d)] if d in window else 1
    return s["scatter_dims_to_operand_dims"].index(d), x.shape[d] - size


def _lower_scatter(op: Op, b: Builder) -> list[Value]:
    from solir.ir.ops.kernel import build_scatter
    x, idx, upd = op.operands
    s = _scatter_dims(op.attrs)
    scatter_dims, window, sizes = _scatter_layout(x.type, idx.type, upd.type, op.attrs)
    n = upd.type.rank
    inputs: list[tuple[Value, AffineMap | None]] = [(upd, AffineMap.identity(n))]
    for k in range(len(s["scatter_dims_to_operand_dims"])):
        exprs = tuple(AffineExpr.dim(n, p) for p in scatter_dims) + (AffineExpr.constant(n, k),)
        inputs.append((idx, AffineMap(n, exprs)))
    clip = op.attrs.get("mode", "drop") == "clip"

    def body(inner: Builder, args: list[Value]) -> tuple[Value, Value, list[Value]]:
        value, comps = args[1], args[2:]
        valid = inner.op("tensor.constant", [], {"value": np.array(True)}).result
        index = []
        for d in range(x.type.rank):
            if d in s["scatter_dims_to_operand_dims"]:
                k, limit = _scatter_start(x.type, s, window, sizes, d)
                start = _as_i64(inner, comps[k])
                if clip:
                    start = _clamp(inner, start, 0, limit)
                else:
                    ok = inner("tensor.and", inner("tensor.ge", start, _const(inner, 0)),
                               inner("tensor.le", start, _const(inner, limit)))
                    valid = inner("tensor.and", valid, ok)
            elif d in s["operand_batching_dims"]:
                j = s["scatter_indices_batching_dims"][s["operand_batching_dims"].index(d)]
                start = inner.op("kernel.index", [], {"dim": scatter_dims[j]}).result
            else:
                start = _const(inner, 0)
            if d in window:
                pos = inner.op("kernel.index", [], {"dim": s["update_window_dims"][window.index(d)]})
                start = inner("tensor.add", start, pos.result)
            index.append(start)
        return value, valid, index

    return [build_scatter(b, x, upd.type.shape, inputs, body, op.attrs.get("combiner", "add"),
                          name=f"scatter_{op.attrs.get('combiner', 'add')}", loc=op.loc)]


def _ref_scatter(attrs: dict[str, Any], x: np.ndarray, idx: np.ndarray, upd: np.ndarray) -> np.ndarray:
    """Straight from the XLA scatter definition, one update element at a time (tests only)."""
    s = _scatter_dims(attrs)
    xt, it, ut = (TensorType(a.shape, DType.from_numpy(a.dtype)) for a in (x, idx, upd))
    scatter_dims, window, sizes = _scatter_layout(xt, it, ut, attrs)
    clip = attrs.get("mode", "drop") == "clip"
    comb = attrs.get("combiner", "add")
    out = x.copy()
    for u in np.ndindex(*upd.shape):
        g = tuple(u[d] for d in scatter_dims)
        vec = idx[g]
        full, ok = [], True
        for d in range(x.ndim):
            if d in s["scatter_dims_to_operand_dims"]:
                k, limit = _scatter_start(xt, s, window, sizes, d)
                st = int(vec[k])
                if clip:
                    st = min(max(st, 0), limit)
                ok &= 0 <= st <= limit
            elif d in s["operand_batching_dims"]:
                st = g[s["scatter_indices_batching_dims"][s["operand_batching_dims"].index(d)]]
            else:
                st = 0
            if d in window:
                st += u[s["update_window_dims"][window.index(d)]]
            full.append(st)
        if not ok:
            continue
        t = tuple(full)
        v = upd[u]
        out[t] = {"set": lambda a, b: b, "add": lambda a, b: a + b, "mul": lambda a, b: a * b,
                  "max": max, "min": min}[comb](out[t], v)
    return out


register(OpDef(name="tensor.scatter", operands=("x", "indices", "updates"),
               optional_attrs={**{k: () for k in _SCATTER_KEYS}, "combiner": "add", "mode": "drop"},
               infer=_infer_scatter, reference=_ref_scatter, lower=_lower_scatter, kind=STRUCTURAL,
               doc="XLA scatter with the index vector in the last dim of `indices`: combine each "
                   "update window into x (set, add, mul, max, min). mode 'drop' skips windows "
                   "that do not fit; 'clip' clamps their starts."))
