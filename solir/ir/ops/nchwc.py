"""Convolutions over the blocked NCHWc layout: an NCHW tensor [N, C, H, W] stored as
[N, C/L, H, W, L], L channels per block (L = the target's vector lanes, 16 floats on avx512).

    tensor.conv_nchwc   x5 [N, C/L, H, W, L], w [O, C/groups, KH, KW] (OIHW)
                        -> [N, O/L, OH, OW, L]; the conv's strides, padding and dilation

Channels are the vector dimension, so an image's size never leaves a partial vector (a 14x14
plane is 196 positions: 12 vectors and 4 left over in NCHW), and a block of MR output
positions of one channel block is MR consecutive cache lines. Three algorithms:

    pointwise   1x1, stride 1, no padding, ungrouped: kernel.matmul with `blocked` = L, the
                positions as the product's rows and the output channels as its columns:
                A = x5 read in place (an MR-row panel of a channel block is MR whole
                lines), B = the weights (prepacked at compile time), C stored straight into
                the output's channel blocks, with the BN / activation epilogue on the tile
                in registers. Where NCHW put the image's positions along the vectors
                (B packed on every call, a narrow last column panel at 14x14 and 7x7), here
                the weights are the packed operand.
    depthwise   one filter per channel (groups = C = O): one loop nest over [N, C/L, OH, OW,
                L], a multiply-add per tap on whole vectors of L channels (zero outside the
                image), the channel-block the vector.
    direct      a chain's first conv, on fewer than L input channels (a network's stem: an
                RGB image): x stays NCHW [N, C, H, W], ungrouped, any window and stride, at
                most DIRECT_TAPS = C KH KW taps. One loop nest over [N, O/L, OH, OW, L]: a
                tap is an input element broadcast times a vector of L output channels'
                weights, the taps unrolled; the BN / activation after it joins the nest.
                It replaces patches + product + a layout change over the whole output.

The select-algorithms pass chooses `nchwc` for a conv; the nchwc-layout pass
(solir/lower/layout.py) then rewrites it into this op between layout changes, moves the
changes through elementwise ops (BatchNorm, ReLU, residual adds) and cancels the pairs that
meet between two such convs, so a chain of them runs in NCHWc from its first conv to its last.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Builder, Op, Value
from solir.ir.registry import CONTRACTION, OpDef, register
from solir.ir.types import DType, TensorType

NCHW = (0, 1, 2, 3)
DIRECT_TAPS = 64      # C KH KW of a direct conv: the taps are unrolled in its loop body
DIRECT_CHAIN = 7      # taps per partial sum (FMA chain) in a direct conv's body


def to_nchwc(x: np.ndarray, L: int) -> np.ndarray:
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // L, L, h, w).transpose(0, 1, 3, 4, 2))


def from_nchwc(x5: np.ndarray) -> np.ndarray:
    n, cb, h, w, L = x5.shape
    return np.ascontiguousarray(x5.transpose(0, 1, 4, 2, 3).reshape(n, cb * L, h, w))


def nchwc_kind(op: Op, lanes: int) -> tuple[str | None, str]:
    """('pointwise' | 'depthwise' | 'direct', '') if conv `op` (tensor.conv) can run over
    NCHWc blocks of `lanes` channels, else (None, why not)."""
    from solir.ir.ops.contract import conv_params
    lhs, rhs = op.operands
    out = op.results[0].type
    if out.dtype not in (DType.F32, DType.F64) or not lhs.type.dtype == rhs.type.dtype == out.dtype:
        return None, f"needs f32/f64 operands of one dtype, has {lhs.type.dtype}, {rhs.type.dtype}"
    p = conv_params(lhs.type, rhs.type, op.attrs)
    if p["ns"] != 2 or any(tuple(p[k]) != NCHW for k in ("lhs_spec", "rhs_spec", "out_spec")):
        return None, "needs a 2-d NCHW conv with an OIHW kernel"
    if lanes < 2 or p["o"] % lanes:
        return None, f"needs output channels in whole blocks of {lanes} (has {p['o']})"
    if p["lhs_dilation"] != (1, 1) or out.size == 0:
        return None, "needs no input dilation and a non-empty output"
    return _kind(p, lanes)


def _kind(p: dict[str, Any], lanes: int) -> tuple[str | None, str]:
    """The algorithm for a conv's params (conv_params): pointwise, depthwise, direct, or why
    none."""
    if p["c"] % lanes:
        taps = p["c"] * p["window"][0] * p["window"][1]
        if p["groups"] == 1 and p["c"] < lanes and taps <= DIRECT_TAPS:
            return "direct", ""
        return None, (f"needs input channels in whole blocks of {lanes} (has {p['c']}), or "
                      f"fewer than {lanes} in an ungrouped conv of at most {DIRECT_TAPS} taps "
                      f"(C KH KW: {taps})")
    if p["groups"] == 1:
        if (p["window"] == (1, 1) and p["strides"] == (1, 1)
                and p["padding"] == ((0, 0), (0, 0))):
            return "pointwise", ""
        return None, "an ungrouped conv needs a 1x1 window, stride 1 and no padding"
    if p["groups"] == p["c"] == p["o"]:
        return "depthwise", ""
    return None, f"a grouped conv needs one filter per channel (groups {p['groups']})"


def conv_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """tensor.conv's attributes that tensor.conv_nchwc keeps."""
    return {k: attrs[k] for k in ("strides", "padding", "rhs_dilation", "feature_group_count")
            if attrs.get(k) is not None}


def _params(x5: TensorType, w: TensorType, attrs: dict[str, Any]) -> dict[str, Any]:
    """conv_params of the NCHW conv; x5 is [N, C/L, H, W, L], or NCHW for a direct conv."""
    from solir.ir.ops.contract import conv_params
    if x5.rank == 4:
        nchw = x5
    else:
        n, cb, h, wd, L = x5.shape
        if L != attrs["block"]:
            raise ValueError(f"the input's last dim {L} is not the block {attrs['block']}")
        nchw = TensorType((n, cb * L, h, wd), x5.dtype)
    return conv_params(nchw, w, {**attrs, "lhs_spec": NCHW, "rhs_spec": NCHW, "out_spec": NCHW})


def _infer(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    x5, w = types
    if x5.rank not in (4, 5) or w.rank != 4:
        raise ValueError("takes [N, C/L, H, W, L] (or NCHW: a direct conv) and an OIHW kernel")
    if x5.rank == 4 and x5.shape[1] % attrs["block"] == 0:
        raise ValueError(f"an NCHW input has {x5.shape[1]} channels, whole blocks of "
                         f"{attrs['block']}: it is read in NCHWc")
    p = _params(x5, w, attrs)
    n, o, oh, ow = p["out_shape"]
    L = attrs["block"]
    if o % L:
        raise ValueError(f"{o} output channels are not whole blocks of {L}")
    return [TensorType((n, o // L, oh, ow, L), x5.dtype)]


def _reference(attrs: dict[str, Any], x5: np.ndarray, w: np.ndarray) -> np.ndarray:
    from solir.ir.ops.contract import _ref_conv
    y = _ref_conv({**attrs, "lhs_spec": NCHW, "rhs_spec": NCHW, "out_spec": NCHW},
                  x5 if x5.ndim == 4 else from_nchwc(x5), w)
    return to_nchwc(y, attrs["block"])


def _window(p: dict[str, Any], nd: int) -> list[tuple[int, int, AffineExpr, AffineExpr]]:
    """(ky, kx, row, column) per tap, in tap order: the input row sy oh + dy ky - pt and
    column sx ow + dx kx - pl it reads for output position (oh, ow) = dims 2 and 3 of nd."""
    (kh, kw), (sy, sx), (dy, dx) = p["window"], p["strides"], p["rhs_dilation"]
    (pt, _), (pl, _) = p["padding"]
    return [(ky, kx, AffineExpr(tuple(sy if k == 2 else 0 for k in range(nd)), ky * dy - pt),
             AffineExpr(tuple(sx if k == 3 else 0 for k in range(nd)), kx * dx - pl))
            for ky in range(kh) for kx in range(kw)]


def _lower(op: Op, b: Builder) -> list[Value]:
    x5, w = op.operands
    out = op.results[0].type
    L = op.attrs["block"]
    p = _params(x5.type, w.type, op.attrs)
    if p["groups"] == 1 and x5.type.rank == 5:      # pointwise
        n, cb, h, wd, _ = x5.type.shape
        a = b("tensor.reshape", x5, shape=(n, cb, h * wd, L))
        wv = b("tensor.reshape", w, shape=(1, p["o"], p["c"]))
        c = b.op("kernel.matmul", [a, wv], {"trans_b": True, "blocked": L}).result
        return [b.op("tensor.reshape", [c], {"shape": out.shape},
                     name_hint=op.results[0].name).result]
    return [_stencil(op, b, p)]


def _stencil(op: Op, b: Builder, p: dict[str, Any]) -> Value:
    """A depthwise or direct conv as one loop nest over [n, ob, oh, ow, l] whose body sums
    its taps, each an input times a vector of L output channels' weights w5[ob, ci, ky, kx,
    l] (ci < C for a direct conv, 0 for a depthwise one):
      depthwise  x5[n, ob, sy oh + dy ky - pt, sx ow + dx kx - pl, l], one chain of FMAs;
      direct     x[n, ci, sy oh + dy ky - pt, ...], one element broadcast to every lane;
                 the C KH KW taps in partial sums of DIRECT_CHAIN (independent chains)."""
    from solir.ir.ops.depthwise import taps
    from solir.ir.ops.kernel import build_generic
    x, w = op.operands
    out = op.results[0].type
    L = op.attrs["block"]
    n, ob, oh, ow, _ = out.shape
    direct = x.type.rank == 4
    cin = w.type.shape[1]                    # 1 for a depthwise conv
    kh, kw = p["window"]
    nd = 5
    d = [AffineExpr.dim(nd, k) for k in range(nd)]
    at = lambda v: AffineExpr.constant(nd, v)  # noqa: E731
    if getattr(w.owner, "name", "") == "tensor.constant":   # [O/L, C, KH, KW, L]
        w5 = np.ascontiguousarray(np.asarray(w.owner.attrs["value"]).reshape(ob, L, cin, kh, kw)
                                  .transpose(0, 2, 3, 4, 1))
        wt = b.op("tensor.constant", [], {"value": w5}).result
        wmap = lambda ci, ky, kx: AffineMap(nd, (d[1], at(ci), at(ky), at(kx), d[4]))  # noqa: E731
    else:                       # read in place: w[ob L + l, ci, ky, kx]
        wt = w
        chan = AffineExpr(tuple(L if k == 1 else 1 if k == 4 else 0 for k in range(nd)), 0)
        wmap = lambda ci, ky, kx: AffineMap(nd, (chan, at(ci), at(ky), at(kx)))  # noqa: E731
    inputs: list[tuple[Value, AffineMap]] = []
    for ci in range(cin):
        for ky, kx, yy, xx in _window(p, nd):
            xmap = (d[0], at(ci), yy, xx) if direct else (d[0], d[1], yy, xx, d[4])
            inputs.append((x, AffineMap(nd, xmap)))
            inputs.append((wt, wmap(ci, ky, kx)))
    ntaps = len(inputs) // 2
    chains = -(-ntaps // DIRECT_CHAIN) if direct else 1
    [y] = build_generic(b, [n, ob, oh, ow, L], "ppppp", inputs,
                        lambda inner, a: taps(inner, a, chains), [out.dtype],
                        pads=[0, None] * ntaps, name="direct_nchwc" if direct else "dw_nchwc",
                        loc=op.loc)
    return y


def _verify(op: Op) -> str | None:
    kind, why = _kind(_params(op.operands[0].type, op.operands[1].type, op.attrs),
                      op.attrs["block"])
    if op.operands[0].type.rank == 4 and kind != "direct":
        return f"an NCHW input needs a direct conv ({why or kind})"
    if op.operands[0].type.rank == 5 and kind == "direct":
        return "a direct conv reads its input in NCHW"
    return None if kind else why


register(OpDef(name="tensor.conv_nchwc", operands=("x", "w"), attrs=("block",),
               optional_attrs={"strides": None, "padding": None, "rhs_dilation": None,
                               "feature_group_count": 1},
               infer=_infer, reference=_reference, lower=_lower, verify=_verify,
               kind=CONTRACTION,
               doc="A conv over NCHWc blocks: x [N, C/L, H, W, L], an OIHW kernel -> "
                   "[N, O/L, OH, OW, L]; pointwise (1x1), depthwise (one filter per "
                   "channel), or direct (x NCHW with fewer than L channels). See "
                   "solir/ir/ops/nchwc.py."))


__all__ = ["from_nchwc", "nchwc_kind", "to_nchwc"]
