"""Reductions, arg-reductions, scans and windowed reductions (pooling)."""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Builder, Op, Value
from solir.ir.ops.kernel import build_generic, build_scatter, generic_result_shape
from solir.ir.registry import REDUCTION, OpDef, register
from solir.ir.types import DType, TensorType, i64


def _identity_body(inner: Builder, args: list[Value]) -> list[Value]:
    return [args[0]]


def identity_of(combiner: str, dtype: DType) -> Any:
    """The value a reduction starts from (what padding contributes to a pooling window)."""
    if combiner == "add":
        return False if dtype.is_bool else 0
    if combiner == "mul":
        return 1
    if combiner in ("and", "or"):
        return combiner == "and"
    if dtype.is_float:
        return -np.inf if combiner == "max" else np.inf
    if dtype.is_bool:
        return combiner == "min"
    info = np.iinfo(dtype.numpy)
    return int(info.min if combiner == "max" else info.max)


def _infer_reduce(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, axes = types[0], tuple(attrs["axes"])
    if any(not 0 <= a < x.rank for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"axes {list(axes)} are not distinct dims of a rank-{x.rank} tensor")
    return [TensorType(tuple(n for k, n in enumerate(x.shape) if k not in axes), x.dtype)]


def _reduce_lower(combiner: str):  # noqa: ANN202
    def lower(op: Op, b: Builder) -> list[Value]:
        x, axes = op.operands[0], set(op.attrs["axes"])
        n = x.type.rank
        its = "".join("r" if k in axes else "p" for k in range(n))
        return build_generic(b, x.type.shape, its, [(x, AffineMap.identity(n))], _identity_body,
                             [x.type.dtype], combiner=combiner, name=f"reduce_{combiner}",
                             loc=op.loc)
    return lower


_REDUCE_REFS = {"sum": ("add", lambda x, ax: np.sum(x, ax, dtype=x.dtype)),
                "prod": ("mul", lambda x, ax: np.prod(x, ax, dtype=x.dtype)),
                "max": ("max", np.max), "min": ("min", np.min),
                "and": ("and", np.all), "or": ("or", np.any)}

for _name, (_comb, _fn) in _REDUCE_REFS.items():
    register(OpDef(
        name=f"tensor.reduce_{_name}", operands=("x",), attrs=("axes",), infer=_infer_reduce,
        reference=(lambda fn: lambda a, x: np.asarray(fn(x, tuple(a["axes"]))).astype(x.dtype))(_fn),
        lower=_reduce_lower(_comb), kind=REDUCTION,
        doc=f"Reduce over `axes` with {_comb}." + (
            " NaN propagates; whether +0 or -0 wins a tie depends on the order the schedule "
            "combines in, as in numpy and XLA." if _comb in ("max", "min") else "")))


def _infer_arg(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x, axis = types[0], attrs["axis"]
    if not 0 <= axis < x.rank:
        raise ValueError(f"axis {axis} out of range for {x}")
    if not attrs["index_dtype"].is_int:
        raise ValueError("index_dtype must be an integer type")
    return [TensorType(x.shape[:axis] + x.shape[axis + 1:], attrs["index_dtype"])]


def _arg_lower(kind: str):  # noqa: ANN202
    def lower(op: Op, b: Builder) -> list[Value]:
        x, axis = op.operands[0], op.attrs["axis"]
        n = x.type.rank
        its = "".join("r" if k == axis else "p" for k in range(n))
        return build_generic(b, x.type.shape, its, [(x, AffineMap.identity(n))], _identity_body,
                             [op.attrs["index_dtype"]], combiner=kind, name=kind, loc=op.loc)
    return lower


for _kind, _np_fn in (("argmax", np.argmax), ("argmin", np.argmin)):
    register(OpDef(
        name=f"tensor.{_kind}", operands=("x",), attrs=("axis", "index_dtype"), infer=_infer_arg,
        reference=(lambda fn: lambda a, x: fn(x, axis=a["axis"]).astype(a["index_dtype"].numpy))(_np_fn),
        lower=_arg_lower(_kind), kind=REDUCTION,
        doc="Index of the first extreme element; NaN counts as the extreme."))


def _infer_scan(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    if not 0 <= attrs["axis"] < types[0].rank:
        raise ValueError(f"axis {attrs['axis']} out of range for {types[0]}")
    return [types[0]]


def _scan_lower(combiner: str):  # noqa: ANN202
    def lower(op: Op, b: Builder) -> list[Value]:
        x, axis = op.operands[0], op.attrs["axis"]
        n = x.type.rank
        its = "".join("s" if k == axis else "p" for k in range(n))
        return build_generic(b, x.type.shape, its, [(x, AffineMap.identity(n))], _identity_body,
                             [x.type.dtype], combiner=combiner, name=f"cum{combiner}", loc=op.loc)
    return lower


for _name, _comb, _fn in (("cumsum", "add", np.cumsum), ("cumprod", "mul", np.cumprod),
                          ("cummax", "max", np.maximum.accumulate),
                          ("cummin", "min", np.minimum.accumulate)):
    register(OpDef(
        name=f"tensor.{_name}", operands=("x",), attrs=("axis",), infer=_infer_scan,
        reference=(lambda fn: lambda a, x: np.asarray(fn(x, axis=a["axis"])).astype(x.dtype))(_fn),
        lower=_scan_lower(_comb), kind=REDUCTION, doc="Inclusive scan along `axis`."))


# ---- reduce_window (pooling) ------------------------------------------------------------------

def _window_attrs(rank: int, attrs: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    ones = (1,) * rank
    return (tuple(attrs["window"]), tuple(attrs.get("strides") or ones),
            tuple(tuple(p) for p in (attrs.get("padding") or ((0, 0),) * rank)),
            tuple(attrs.get("base_dilation") or ones), tuple(attrs.get("window_dilation") or ones))


def _infer_window(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    win, strides, pads, based, wind = _window_attrs(x.rank, attrs)
    if attrs["combiner"] not in ("add", "max", "min"):
        raise ValueError(f"combiner {attrs['combiner']!r} must be add, max or min")
    if not len(win) == len(strides) == len(pads) == x.rank:
        raise ValueError(f"window attributes need {x.rank} entries")
    shape = []
    for n, w, s, (lo, hi), bd, wd in zip(x.shape, win, strides, pads, based, wind):
        padded = (n - 1) * bd + 1 + lo + hi
        span = (w - 1) * wd + 1
        shape.append(max(0, (padded - span) // s + 1) if padded >= span else 0)
    return [TensorType(tuple(shape), x.dtype)]


def _window_map(x: TensorType, attrs: dict[str, Any]) -> tuple[list[int], str, AffineMap]:
    win, strides, pads, based, wind = _window_attrs(x.rank, attrs)
    out_shape = _infer_window([x], attrs)[0].shape
    n = x.rank
    dims = list(out_shape) + list(win)
    exprs = []
    for k in range(n):
        coeffs = [0] * (2 * n)
        coeffs[k], coeffs[n + k] = strides[k], wind[k]
        exprs.append(AffineExpr(tuple(coeffs), -pads[k][0], based[k]))
    return dims, "p" * n + "r" * n, AffineMap(2 * n, tuple(exprs))


def _lower_window(op: Op, b: Builder) -> list[Value]:
    x = op.operands[0]
    comb = op.attrs["combiner"]
    dims, its, m = _window_map(x.type, op.attrs)
    return build_generic(b, dims, its, [(x, m)], _identity_body, [x.type.dtype], combiner=comb,
                         pads=[identity_of(comb, x.type.dtype)], name=f"pool_{comb}", loc=op.loc)


def _ref_window(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    from solir.ir.ops.kernel import _combine, gather_affine
    xt = TensorType(x.shape, DType.from_numpy(x.dtype))
    dims, its, m = _window_map(xt, attrs)
    comb = attrs["combiner"]
    grids = list(np.indices(dims, sparse=True))
    vals = gather_affine(x, m, grids, identity_of(comb, xt.dtype))
    return _combine(np.broadcast_to(vals, dims), its, comb).astype(x.dtype).reshape(
        generic_result_shape(dims, its))


register(OpDef(name="tensor.reduce_window", operands=("x",), attrs=("combiner", "window"),
               optional_attrs={"strides": None, "padding": None, "base_dilation": None,
                               "window_dilation": None},
               infer=_infer_window, reference=_ref_window, lower=_lower_window, kind=REDUCTION,
               doc="Pooling: combine each window (add, max or min); padding contributes the "
                   "combiner's identity."))


# ---- select_and_scatter_add (the gradient of max/min pooling) ------------------------------------

def _infer_select_scatter(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    source, x = types
    if attrs["select"] not in ("max", "min"):
        raise ValueError(f"select {attrs['select']!r} must be max or min")
    pooled = _infer_window([x], {**attrs, "combiner": attrs["select"]})[0]
    if source.shape != pooled.shape or source.dtype != x.dtype:
        raise ValueError(f"source {source} must match the pooled shape {pooled}")
    return [x]


def _lower_select_scatter(op: Op, b: Builder) -> list[Value]:
    """Which element of each window was selected (an arg-reduction over the window), then a
    scatter-add of the source at those positions."""
    source, x = op.operands
    sel = op.attrs["select"]
    attrs = {**op.attrs, "combiner": sel}
    dims, its, m = _window_map(x.type, attrs)
    win, strides, pads, _, wind = _window_attrs(x.type.rank, attrs)
    [which] = build_generic(b, dims, its, [(x, m)], _identity_body, [i64], combiner=f"arg{sel}",
                            pads=[identity_of(sel, x.type.dtype)], name=f"select_{sel}", loc=op.loc)
    n = x.type.rank
    [init] = build_generic(b, x.type.shape, "p" * n, [], lambda inner, args: [inner.op(
        "tensor.constant", [], {"value": np.zeros((), x.type.dtype.numpy)}).result],
        [x.type.dtype], name="zeros", loc=op.loc)
    ident = AffineMap.identity(n)

    def body(inner: Builder, args: list[Value]) -> tuple[Value, Value, list[Value]]:
        def c(v: int) -> Value:
            return inner.op("tensor.constant", [], {"value": np.array(v, np.int64)}).result
        value, flat = args[1], args[2]
        index = []
        for d in range(n):
            inner_size = int(np.prod(win[d + 1:], dtype=np.int64))
            w = inner("tensor.rem", inner("tensor.div", flat, c(inner_size)), c(win[d]))
            pos = inner.op("kernel.index", [], {"dim": d}).result
            index.append(inner("tensor.add", inner("tensor.mul", pos, c(strides[d])),
                               inner("tensor.sub", inner("tensor.mul", w, c(wind[d])), c(pads[d][0]))))
        valid = inner.op("tensor.constant", [], {"value": np.array(True)}).result
        return value, valid, index

    return [build_scatter(b, init, source.type.shape, [(source, ident), (which, ident)], body,
                          "add", name=f"scatter_select_{sel}", loc=op.loc)]


def _ref_select_scatter(attrs: dict[str, Any], source: np.ndarray, x: np.ndarray) -> np.ndarray:
    win, strides, pads, _, wind = _window_attrs(x.ndim, attrs)
    better = np.greater if attrs["select"] == "max" else np.less
    out = np.zeros_like(x)
    for o in np.ndindex(*source.shape):
        best, at = None, None
        for w in np.ndindex(*win):        # the first best element of the window wins
            i = tuple(oo * s + ww * wd - p[0] for oo, s, ww, wd, p in zip(o, strides, w, wind, pads))
            if all(0 <= ii < n for ii, n in zip(i, x.shape)) and (best is None or better(x[i], best)):
                best, at = x[i], i
        if at is not None:
            out[at] += source[o]
    return out


register(OpDef(name="tensor.select_and_scatter_add", operands=("source", "x"),
               attrs=("select", "window"),
               optional_attrs={"strides": None, "padding": None, "window_dilation": None},
               infer=_infer_select_scatter, reference=_ref_select_scatter,
               lower=_lower_select_scatter, kind=REDUCTION,
               doc="The gradient of max (or min) pooling: add each source element at the position "
                   "its window selected in x (the first maximum)."))
