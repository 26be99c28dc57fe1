"""ONNX Resize (and its ancestor Upsample) -> gathers and weighted sums.

Resizing is separable: each resized axis is interpolated on its own. Since shapes are static,
the source taps and their weights for every output position along an axis are computed here,
in numpy, at compile time (the same arithmetic as the ONNX reference implementation). The IR
then holds, per axis and tap, one gather along the axis with a constant index vector and one
multiply by a constant weight vector: nearest is a single exact gather (any dtype); linear
takes 2 taps, cubic 4, and their antialiased forms as many as the downscaled footprint needs.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from solir.errors import UnsupportedOpError
from solir.frontends.onnx_graph import OnnxTranslator, rule
from solir.frontends.onnx_ops import take
from solir.ir.core import Value

T = OnnxTranslator
Coeffs = Callable[[float, float], np.ndarray]

_TRANSFORMS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
               "asymmetric", "tf_crop_and_resize")
_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


# ---- per-axis taps (numpy, compile time) ----------------------------------------------------------

def _source_coords(mode: str, out_n: int, in_n: int, scale: float,
                   roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The input coordinate of each output position; and, for tf_crop_and_resize, which
    positions fall outside the input (they get the extrapolation value)."""
    y = np.arange(out_n, dtype=np.float64)
    out_w = scale * in_n
    if mode == "align_corners":
        return (np.zeros(out_n) if out_w == 1 else y * (in_n - 1) / (out_w - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "tf_crop_and_resize":
        lo, hi = roi if roi is not None else (0.0, 1.0)
        x = (np.full(out_n, (hi - lo) * (in_n - 1) / 2) if out_w == 1
             else y * (hi - lo) * (in_n - 1) / (out_w - 1)) + lo * (in_n - 1)
        return x, (x < 0) | (x > in_n - 1)
    if mode == "pytorch_half_pixel":
        return (np.full(out_n, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    # half_pixel_symmetric
    offset = in_n / 2 * (1 - out_n / out_w)
    return offset + (y + 0.5) / scale - 0.5, None


def axis_taps(in_n: int, out_n: int, scale: float, coeffs: Coeffs, transform: str,
              roi: tuple[float, float] | None = None, exclude_outside: bool = False
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(indices [out, taps] into [0, in_n), weights [out, taps], outside mask [out] or None)."""
    x, outside = _source_coords(transform, out_n, in_n, scale, roi)
    fl = np.floor(x)
    ratio = np.where(x == fl, 1.0, x - fl)        # prefer the pixel left of x
    w = np.array([coeffs(float(r), scale) for r in ratio], np.float64).reshape(out_n, -1)
    n = w.shape[1]
    pad = int(math.ceil(n / 2))                    # the n nearest taps, ties to the smaller index
    xp = x + pad
    p = np.floor(xp).astype(np.int64)
    frac = xp - p
    if n % 2 == 0:
        start = p + np.where(frac == 0, -(n // 2), -(n // 2) + 1)
    else:
        start = p + np.where(frac <= 0.5, -((n - 1) // 2), -((n - 1) // 2) + 1)
    idx = start[:, None] + np.arange(n)[None, :] - pad
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_n), 0.0, w)
        s = w.sum(axis=1, keepdims=True)
        w = w / np.where(s == 0, 1.0, s)
    return np.clip(idx, 0, in_n - 1), w, outside


def _nearest(mode: str) -> Coeffs:
    def f(ratio: float, scale: float) -> np.ndarray:
        if float(ratio).is_integer():
            return np.array([0.0, 1.0])
        left = {"round_prefer_floor": ratio <= 0.5, "round_prefer_ceil": ratio < 0.5,
                "floor": True, "ceil": False}[mode]
        return np.array([float(left), float(not left)])
    return f


def _linear(antialias: bool) -> Coeffs:
    def f(ratio: float, scale: float) -> np.ndarray:
        if not antialias:
            return np.array([1 - ratio, ratio])
        s = min(scale, 1.0)
        start = int(np.floor(-1 / s) + 1)
        c = np.clip(1 - np.abs((np.arange(start, 2 - start) - ratio) * s), 0, 1)
        return c / c.sum()
    return f


def _cubic(a: float, antialias: bool) -> Coeffs:
    def kernel(x: float) -> float:
        x = abs(x)
        if x <= 1:
            return (a + 2) * x ** 3 - (a + 3) * x ** 2 + 1
        if x < 2:
            return a * x ** 3 - 5 * a * x ** 2 + 8 * a * x - 4 * a
        return 0.0

    def f(ratio: float, scale: float) -> np.ndarray:
        if not antialias:
            return np.array([kernel(ratio + 1), kernel(ratio), kernel(1 - ratio), kernel(2 - ratio)])
        s = min(scale, 1.0)
        start = int(np.floor(-2 / s) + 1)
        c = np.array([kernel(s * (i - ratio)) for i in range(start, 2 - start)])
        return c / c.sum()
    return f


# ---- the rules ------------------------------------------------------------------------------------

def _present(t: T, v: Value | None, what: str) -> np.ndarray | None:
    """An optional input's value; absent or empty counts as not given."""
    if v is None:
        return None
    c = np.asarray(t.need_const(v, what))
    return c if c.size else None


@rule("Resize", "Upsample")
def _resize(t: T, node: Any, ins: list[Value | None]) -> list[Value]:
    x = ins[0]
    shape, r = x.type.shape, x.type.rank
    legacy = node.op_type == "Upsample" or t.version < 11     # opset 10 Resize = Upsample
    mode = t.attr(node, "mode", "nearest")
    if legacy:
        transform, nearest_mode = "asymmetric", "floor"
        scales = t.attr(node, "scales")
        if scales is None:
            scales = _present(t, ins[1] if len(ins) > 1 else None, f"{node.op_type}'s scales")
        sizes, roi, axes = None, None, list(range(r))
    else:
        transform = t.attr(node, "coordinate_transformation_mode", "half_pixel")
        nearest_mode = t.attr(node, "nearest_mode", "round_prefer_floor")
        roi = _present(t, ins[1] if len(ins) > 1 else None, "Resize's roi")
        scales = _present(t, ins[2] if len(ins) > 2 else None, "Resize's scales")
        sizes = _present(t, ins[3] if len(ins) > 3 else None, "Resize's sizes")
        axes = [a % r for a in (t.attr(node, "axes") or range(r))]
    if scales is None and sizes is None:
        raise UnsupportedOpError(f"{node.op_type} needs scales or sizes", loc=t.b.loc)
    if transform not in _TRANSFORMS:
        raise UnsupportedOpError(f"{node.op_type} coordinate_transformation_mode '{transform}'",
                                 loc=t.b.loc, fix="one of " + ", ".join(_TRANSFORMS))
    antialias = bool(t.attr(node, "antialias", 0))
    if mode == "nearest":
        if nearest_mode not in _NEAREST:
            raise UnsupportedOpError(f"Resize nearest_mode '{nearest_mode}'", loc=t.b.loc)
        coeffs = _nearest(nearest_mode)
    elif mode in ("linear", "bilinear", "trilinear"):
        coeffs = _linear(antialias)
    elif mode == "cubic":
        coeffs = _cubic(float(t.attr(node, "cubic_coeff_a", -0.75)), antialias)
    else:
        raise UnsupportedOpError(f"{node.op_type} mode '{mode}'", loc=t.b.loc,
                                 fix="modes: nearest, linear, cubic")
    if mode != "nearest" and not x.type.dtype.is_float:
        raise UnsupportedOpError(f"{node.op_type} mode '{mode}' on {x.type.dtype} data",
                                 loc=t.b.loc, fix="cast to float first")

    # per-axis scale and output size, as the reference computes them
    scale = [1.0] * r
    out = list(shape)
    if sizes is not None:
        for a, n in zip(axes, np.ravel(sizes)):
            out[a] = int(n)
            scale[a] = out[a] / shape[a]
        policy = t.attr(node, "keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            pick = {"not_larger": min, "not_smaller": max}.get(policy)
            if pick is None:
                raise UnsupportedOpError(f"Resize keep_aspect_ratio_policy '{policy}'", loc=t.b.loc)
            s = pick(scale[a] for a in axes)
            for a in axes:
                scale[a], out[a] = s, int(s * shape[a] + 0.5)
    else:
        sc = np.ravel(scales).astype(np.float32)
        if len(sc) != len(axes):
            raise UnsupportedOpError(f"{node.op_type} has {len(sc)} scales for {len(axes)} axes",
                                     loc=t.b.loc)
        for a, s in zip(axes, sc):
            scale[a] = float(s)
            out[a] = int(np.float64(s) * shape[a])
    rois: dict[int, tuple[float, float]] = {}
    if roi is not None and transform == "tf_crop_and_resize":
        flat = np.ravel(roi).astype(np.float64)
        k = len(flat) // 2
        for i, a in enumerate(axes if k == len(axes) else range(r)):
            rois[a] = (float(flat[i]), float(flat[k + i]))
    extrapolation = float(t.attr(node, "extrapolation_value", 0.0))
    exclude = bool(t.attr(node, "exclude_outside", 0))

    y = x
    for a in axes:
        lohi = rois.get(a, (0.0, 1.0))
        if math.isclose(scale[a], 1.0) and out[a] == shape[a] and \
                math.isclose(lohi[0], 0.0) and math.isclose(lohi[1], 1.0):
            continue                              # identity along this axis
        if out[a] == 0:
            raise UnsupportedOpError(f"{node.op_type} to size 0 along axis {a}", loc=t.b.loc)
        idx, w, outside = axis_taps(shape[a], out[a], scale[a], coeffs, transform,
                                    rois.get(a), exclude)
        y = _apply_taps(t, y, a, idx, w, nearest=mode == "nearest")
        if outside is not None and outside.any():
            m = t.op("tensor.broadcast_in_dim", t.constant(outside), shape=y.type.shape,
                     broadcast_dimensions=(a,))
            y = t.op("tensor.select", m, y, t.scalar(extrapolation, y))
    return [y]


def _apply_taps(t: T, x: Value, axis: int, idx: np.ndarray, w: np.ndarray, nearest: bool) -> Value:
    if nearest:                                   # one-hot weights: a single exact gather
        return take(t, x, t.constant(np.take_along_axis(idx, w.argmax(1)[:, None], 1)[:, 0]), axis)
    acc = None
    for k in range(idx.shape[1]):
        if not w[:, k].any():
            continue
        g = take(t, x, t.constant(idx[:, k].astype(np.int64)), axis)
        wk = t.op("tensor.broadcast_in_dim", t.constant(w[:, k].astype(x.type.dtype.numpy)),
                  shape=g.type.shape, broadcast_dimensions=(axis,))
        term = t.op("tensor.mul", g, wk)
        acc = term if acc is None else t.op("tensor.add", acc, term)
    return acc if acc is not None else t.scalar(0, take(t, x, t.constant(idx[:, 0]), axis))
