"""Depthwise convolution (one filter per channel: feature_group_count = C = O) as a 1-d stencil
over each channel's zero-padded plane, so the vectors run along whole planes instead of rows.

A 14x14 or 7x7 plane has rows shorter than a vector, which the conv's own loop nest (`loops`)
computes a short row at a time, with a bounds check per tap. Here, per channel, with strides
SY, SX split into phases (py, px) (one phase at stride 1) and QY x QX taps per phase:

    pad      Xp[c, py, px, y, x] = X[c, SY*y + py - PT, SX*x + px - PL]   (0 outside)
             each phase plane HQ x WQ, WQ = OW + (QX - 1)*EX, HQ = OH + (QY - 1)*EY + 1
    stencil  Z[c, i] = sum_{ky, kx} Xp[c, ky % SY, kx % SX, :, :].flat[i + (ky // SY)*EY*WQ
                                                         + (kx // SX)*EX] * w[c, ky, kx]
                                                                                  i < OH*WQ
    crop     Y[c, r, col] = Z[c, r*WQ + col]                                      col < OW

Output row r, column col is flat index i = r*WQ + col of its phase planes, so every tap is
an affine read along i with unit step: the stencil is one vectorizable loop over the plane,
and only the WQ - OW columns past each row's end (2 of 16 for a 3x3 stride-1 conv on a 14x14
plane) are computed and dropped. At stride 1 a tap's step EY, EX is the kernel's dilation;
strided (no dilation), phase (py, px) holds the kernel's rows py, py + SY, ... and columns
px, px + SX, ..., and each of the kernel's taps is one read of its phase (9 for a 3x3 at
stride 2: the stencil's body is one multiply-add per tap, no reduction loop). The three
loop nests share their channel loop, so group-rows runs them a channel at a time with the
padded planes in L1; the crop is where a bias, BN or activation fuses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Builder, Op, Value
from solir.ir.ops.kernel import build_generic
from solir.ir.types import DType


def depthwise_applies(op: Op) -> str | None:
    """Why the depthwise kernel cannot compute this conv (None: it can)."""
    from solir.ir.ops.contract import conv_params
    lhs, rhs = op.operands
    out = op.results[0].type
    p = conv_params(lhs.type, rhs.type, op.attrs)
    if out.dtype not in (DType.F32, DType.F64) or not lhs.type.dtype == rhs.type.dtype == out.dtype:
        return f"needs f32/f64 operands of one dtype, has {lhs.type.dtype}, {rhs.type.dtype}"
    if p["ns"] != 2 or any(list(p[k]) != [0, 1, 2, 3] for k in ("lhs_spec", "rhs_spec", "out_spec")):
        return "needs a 2-d NCHW conv with an OIHW kernel"
    if not (p["groups"] == p["c"] == p["o"]):
        return (f"needs one filter per channel (groups = channels = outputs), has groups "
                f"{p['groups']}, {p['c']} channels, {p['o']} outputs")
    if p["lhs_dilation"] != (1, 1):
        return "needs no input dilation"
    if any(s > 1 and d > 1 for s, d in zip(p["strides"], p["rhs_dilation"])):
        return "needs stride 1 where the kernel is dilated"
    if out.size == 0:
        return "the output is empty"
    return None


def depthwise_geometry(p: dict[str, Any]) -> dict[str, int]:
    """Phases, phase planes (HQ rows of WQ) and taps per phase (QY x QX) of a conv's params.
    Stride 1 keeps the dilation in the taps (one phase, tap qy at qy*DY rows); a stride s > 1
    (without dilation) splits the padded image into s x s phases, tap qy of phase py being
    kernel row s*qy + py."""
    (kh, kw), (sy, sx), (dy, dx) = p["window"], p["strides"], p["rhs_dilation"]
    (pt, _), (pl, _) = p["padding"]
    oh, ow = p["out_shape"][2:]
    qy, qx = -(-kh // sy), -(-kw // sx)
    ey, ex = (dy if sy == 1 else 1), (dx if sx == 1 else 1)   # a tap's step inside a phase
    wq = ow + (qx - 1) * ex
    hq = oh + (qy - 1) * ey + 1          # + a row that the dropped columns' taps run into
    return {"kh": kh, "kw": kw, "sy": sy, "sx": sx, "ey": ey, "ex": ex, "pt": pt, "pl": pl,
            "oh": oh, "ow": ow, "qy": qy, "qx": qx, "wq": wq, "hq": hq}


def taps(inner: Builder, a: list[Value], chains: int = 1) -> list[Value]:
    """A stencil's body: the sum of its taps' products (input, weight, input, weight, ...),
    in tap order; with `chains` > 1, tap t goes to partial sum t mod chains, and the partial
    sums are added pairwise at the end: independent multiply-add chains, so that a long
    stencil is not one chain of dependent FMAs (its latency) per output vector."""
    accs: list[Value] = []
    for t in range(0, len(a), 2):
        prod = inner("tensor.mul", a[t], a[t + 1])
        g = (t // 2) % chains
        if g < len(accs):
            accs[g] = inner("tensor.add", accs[g], prod)
        else:
            accs.append(prod)
    while len(accs) > 1:
        accs = [inner("tensor.add", accs[i], accs[i + 1]) if i + 1 < len(accs) else accs[i]
                for i in range(0, len(accs), 2)]
    return accs


def build_depthwise_conv(op: Op, b: Builder, weights: np.ndarray | None) -> Value:
    """The three loop nests for `op`; `weights` is the kernel when it is a constant."""
    from solir.ir.ops.contract import conv_params
    lhs, rhs = op.operands
    out = op.results[0].type
    p = conv_params(lhs.type, rhs.type, op.attrs)
    g = depthwise_geometry(p)
    n, c = p["n"], p["c"]
    sy, sx, hq, wq, oh, ow = g["sy"], g["sx"], g["hq"], g["wq"], g["oh"], g["ow"]
    dt = out.dtype
    # Batch 1 drops the batch dim so that the channel is each loop nest's first (the rows
    # group-rows runs a channel at a time); the batch, when there is one, leads instead.
    lead = [c] if n == 1 else [n, c]
    nl = len(lead)
    x = b("tensor.reshape", lhs, shape=(c, *lhs.type.shape[2:])) if n == 1 else lhs

    def expr(nd: int, terms: dict[int, int], const: int = 0) -> AffineExpr:
        coeffs = [0] * nd
        for k, v in terms.items():
            coeffs[k] += v
        return AffineExpr(tuple(coeffs), const)

    def leading(nd: int) -> tuple[AffineExpr, ...]:
        return tuple(AffineExpr.dim(nd, k) for k in range(nl))

    # the weights as [c, kh, kw]
    kh, kw = g["kh"], g["kw"]
    if weights is not None:
        w = b.op("tensor.constant", [], {"value": np.ascontiguousarray(weights[:, 0])}).result
    else:
        w = b("tensor.reshape", rhs, shape=(c, kh, kw))

    # pad: [lead, py, px, y, x] <- x[lead, sy*y + py - pt, sx*x + px - pl]
    nd = nl + 4
    py, px, y, xx = range(nl, nl + 4)
    pad_map = AffineMap(nd, leading(nd) + (expr(nd, {y: sy, py: 1}, -g["pt"]),
                                           expr(nd, {xx: sx, px: 1}, -g["pl"])))
    [xp] = build_generic(b, [*lead, sy, sx, hq, wq], "p" * nd, [(x, pad_map)],
                         lambda inner, a: [a[0]], [dt], pads=[0], name="dw_pad", loc=op.loc)
    plane = hq * wq
    flat = b("tensor.reshape", xp, shape=(*lead, sy * sx * plane))

    # stencil: dims (lead, i), output (r, col) at i = r*WQ + col; one read of the planes and
    # one of the weights per tap of the kernel, tap (ky, kx) at its phase's plane
    # (ky % sy, kx % sx), ky // sy rows and kx // sx columns in
    nd = nl + 1
    inputs: list[tuple[Value, AffineMap]] = []
    for ky in range(kh):
        for kx in range(kw):
            at = ((ky % sy) * sx + kx % sx) * plane + (ky // sy) * g["ey"] * wq + (kx // sx) * g["ex"]
            inputs.append((flat, AffineMap(nd, leading(nd) + (expr(nd, {nl: 1}, at),))))
            inputs.append((w, AffineMap(nd, (AffineExpr.dim(nd, nl - 1), AffineExpr.constant(nd, ky),
                                             AffineExpr.constant(nd, kx)))))

    [z] = build_generic(b, [*lead, oh * wq], "p" * nd, inputs, taps, [dt],
                        name="dw_stencil", loc=op.loc)
    zr = b("tensor.reshape", z, shape=(*lead, oh, wq))

    # crop: [lead, oh, ow] <- z[lead, r, col]
    [yv] = build_generic(b, [*lead, oh, ow], "p" * (nl + 2), [(zr, AffineMap.identity(nl + 2))],
                         lambda inner, a: [a[0]], [dt], name="dw_crop", loc=op.loc)
    return b("tensor.reshape", yv, shape=out.shape) if n == 1 else yv


__all__ = ["build_depthwise_conv", "depthwise_applies", "depthwise_geometry"]
