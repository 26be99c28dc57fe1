"""Winograd convolution F(m x m, 3 x 3) (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016) for 3x3 stride-1 NCHW convolutions, m = 2 or 4 (tile t = m + 2):

    Y[n, k, tile] = A^T ( sum_c U[k, c] * V[c, tile] ) A        (* elementwise over t x t)
    U[k, c] = G g[k, c] G^T           the kernel, transformed once (at compile time if constant)
    V[c, tile] = B^T d[c, tile] B     each t x t input tile d (tiles overlap by 2)

The sum over c is, for each of the t^2 positions (xi, nu), an ordinary matrix product,
M[xi nu] = U[xi nu] (K x C) @ V[xi nu] (C x tiles): one batched kernel.matmul of t^2 products
with C-long reductions instead of one with 9C-long ones. F(4x4) does 36 multiply-adds per
output tile of 16 where direct convolution does 144 (4x fewer), F(2x2) 16 per 4 (2.25x),
paid for by the two transforms, which cost O(t^2) per tile and channel, not per channel pair.

    kernel.winograd_input  {m, pad = (PH, PW), tiles = (TY, TX)}
        image [N, C, H, W] -> V [t^2, C, N*TY*TX]; tile (ty, tx) reads rows ty*m - PH + i and
        columns tx*m - PW + j, i, j < t (zero outside the image)
    kernel.winograd_output {m, size = (OH, OW)}
        M [t^2, K, N*TY*TX] -> Y [N, K, OH, OW] (the tiles' outputs past OH, OW are dropped)

Both are their own loop nests (solir/lower/llvm/kernels/winograd.py); the interpreter runs
the numpy references below. In f32, F(4x4) loses about 2-3 bits against direct convolution
(the transforms' coefficients reach 8 and 1/24); F(2x2) about one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.ir.core import Builder, Op, Value
from solir.ir.registry import KERNEL, OpDef, register
from solir.ir.types import DType, TensorType

# B^T (t x t), G (t x 3), A^T (m x t) for the interpolation points 0, +-1, (+-2,) infinity
MATRICES: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {
    2: (np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64),
        np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)),
    4: (np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                  [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64),
        np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                  [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64),
        np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                  [0, 1, -1, 8, -8, 1]], np.float64)),
}


def tiles_for(out_hw: tuple[int, int], m: int) -> tuple[int, int]:
    return -(-out_hw[0] // m), -(-out_hw[1] // m)


def planes(op: Op) -> int:
    """A transform's units of work, its image planes: N*C for the input, N*K for the output."""
    n, c = (op.operands[0] if op.name == "kernel.winograd_input" else op.results[0]).type.shape[:2]
    return n * c


# ---- numpy references ------------------------------------------------------------------------

def transform_weights(g: np.ndarray, m: int) -> np.ndarray:
    """OIHW 3x3 kernel [K, C, 3, 3] -> U [t^2, K, C]."""
    _, G, _ = MATRICES[m]
    t = m + 2
    k, c = g.shape[:2]
    # one product in the weights' own precision: U[a t + b, kc] = sum_ij G[a,i] G[b,j]
    # g[kc, ij], (G kron G) @ g^T, which BLAS writes straight into U's layout (an einsum
    # and the copy of its transposed result were a tenth of ResNet-18's compile time)
    work = np.float64 if g.dtype == np.float64 else np.float32
    gg = np.kron(G.astype(np.float64), G.astype(np.float64)).astype(work)
    u = gg @ g.reshape(k * c, 9).astype(work, copy=False).T
    return u.reshape(t * t, k, c)


def _input_ref(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    m = int(attrs["m"])
    (ph, pw), (ty, tx) = attrs["pad"], attrs["tiles"]
    BT, _, _ = MATRICES[m]
    t = m + 2
    n, c, h, w = x.shape
    hp, wp = ty * m + 2, tx * m + 2
    xp = np.zeros((n, c, hp, wp), np.float64)
    # padded row y holds image row y - ph (and likewise for columns)
    y0, y1 = max(0, ph), min(hp, ph + h)
    x0, x1 = max(0, pw), min(wp, pw + w)
    if y1 > y0 and x1 > x0:
        xp[:, :, y0:y1, x0:x1] = x[:, :, y0 - ph:y1 - ph, x0 - pw:x1 - pw]
    s = xp.strides
    d = np.lib.stride_tricks.as_strided(xp, (n, c, ty, tx, t, t),
                                        (s[0], s[1], s[2] * m, s[3] * m, s[2], s[3]))
    v = np.einsum("ai,nctxij,bj->abcntx", BT, d, BT)
    return v.reshape(t * t, c, n * ty * tx).astype(x.dtype)


def _output_ref(attrs: dict[str, Any], mm: np.ndarray) -> np.ndarray:
    m = int(attrs["m"])
    oh, ow = attrs["size"]
    n = int(attrs["batch"])
    _, _, AT = MATRICES[m]
    t = m + 2
    ty, tx = tiles_for((oh, ow), m)
    k = mm.shape[1]
    z = mm.astype(np.float64).reshape(t, t, k, n, ty, tx)
    y = np.einsum("ai,ijknyx,bj->nkyaxb", AT, z, AT).reshape(n, k, ty * m, tx * m)
    return np.ascontiguousarray(y[:, :, :oh, :ow]).astype(mm.dtype)


def _infer_input(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    [x] = types
    m = int(attrs["m"])
    if m not in MATRICES:
        raise ValueError(f"Winograd tile m = {m}; solir has F(2x2,3x3) and F(4x4,3x3)")
    if x.rank != 4 or not x.dtype.is_float:
        raise ValueError(f"kernel.winograd_input takes a float NCHW image, got {x}")
    ty, tx = (int(v) for v in attrs["tiles"])
    if ty < 1 or tx < 1:
        raise ValueError(f"tiles {attrs['tiles']} must be positive")
    t = m + 2
    return [TensorType((t * t, x.shape[1], x.shape[0] * ty * tx), x.dtype)]


def _infer_output(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    [mm] = types
    m = int(attrs["m"])
    if m not in MATRICES:
        raise ValueError(f"Winograd tile m = {m}; solir has F(2x2,3x3) and F(4x4,3x3)")
    oh, ow = (int(v) for v in attrs["size"])
    n = int(attrs["batch"])
    ty, tx = tiles_for((oh, ow), m)
    t = m + 2
    if mm.rank != 3 or mm.shape[0] != t * t or mm.shape[2] != n * ty * tx:
        raise ValueError(f"kernel.winograd_output of {n} images of {oh}x{ow} in {m}x{m} tiles "
                         f"takes [{t * t}, K, {n * ty * tx}], got {mm}")
    return [TensorType((n, mm.shape[1], oh, ow), mm.dtype)]


register(OpDef(
    name="kernel.winograd_input", operands=("image",), attrs=("m", "pad", "tiles"),
    optional_attrs={"kernel": "winograd_in", "parallel": None}, infer=_infer_input, reference=_input_ref,
    kind=KERNEL,
    doc="Winograd input transform: NCHW image -> V[t*t, C, N*TY*TX] = B^T d B per t x t tile."))

register(OpDef(
    name="kernel.winograd_output", operands=("m_",), attrs=("m", "size", "batch"),
    optional_attrs={"kernel": "winograd_out", "parallel": None}, infer=_infer_output, reference=_output_ref,
    kind=KERNEL,
    doc="Winograd output transform: M[t*t, K, N*TY*TX] -> NCHW Y = A^T M A per tile."))


# ---- tensor.conv -> winograd ---------------------------------------------------------------------

def winograd_applies(p: dict[str, Any], lhs: TensorType, rhs: TensorType, out: TensorType) -> str | None:
    """Why F(m x m, 3 x 3) cannot compute this conv (None: it can). `p` is conv_params."""
    if p["ns"] != 2 or p["window"] != (3, 3):
        return f"needs a 3x3 window, the kernel is {'x'.join(map(str, p['window']))}"
    if p["strides"] != (1, 1) or p["rhs_dilation"] != (1, 1) or p["lhs_dilation"] != (1, 1):
        return "needs stride 1 and no dilation"
    if list(p["lhs_spec"]) != [0, 1, 2, 3] or list(p["rhs_spec"]) != [0, 1, 2, 3] or \
            list(p["out_spec"]) != [0, 1, 2, 3]:
        return "needs NCHW input and output and an OIHW kernel"
    if p["groups"] != 1:
        return "a grouped conv (feature_group_count > 1)"
    if out.dtype not in (DType.F32, DType.F64) or not lhs.dtype == rhs.dtype == out.dtype:
        return f"needs f32/f64 operands of one dtype, the op is {out.dtype}"
    if out.size == 0:
        return "an empty output"
    return None


def build_winograd_conv(op: Op, b: Builder, m: int, weights: np.ndarray | None) -> Value:
    """The conv as input transform, batched kernel.matmul over the t^2 positions, output
    transform. `weights` is the kernel's value when it is a constant (then U is computed
    here, and the schedule pass packs it); otherwise U is computed by a kernel.generic."""
    from solir.ir.attrs import AffineMap
    from solir.ir.ops.contract import conv_params
    from solir.ir.ops.kernel import build_generic
    lhs, rhs = op.operands
    out = op.results[0].type
    p = conv_params(lhs.type, rhs.type, op.attrs)
    n, _, oh, ow = out.shape
    k_out, c_in = rhs.type.shape[:2]
    t = m + 2
    tiles = tiles_for((oh, ow), m)
    v = b.op("kernel.winograd_input", [lhs], {
        "m": m, "pad": (p["padding"][0][0], p["padding"][1][0]), "tiles": tiles,
        "kernel": "winograd_in"}).result
    if weights is not None:
        u = b.op("tensor.constant", [], {"value": transform_weights(weights, m).astype(
            out.dtype.numpy)}, name_hint=f"{rhs.name or 'w'}_winograd").result
    else:
        _, G, _ = MATRICES[m]
        gc = b.op("tensor.constant", [], {"value": G.astype(out.dtype.numpy)}).result
        sel = lambda *ds: AffineMap.select(6, ds)     # noqa: E731  dims (xi, nu, k, c, i, j)
        [u] = build_generic(b, [t, t, k_out, c_in, 3, 3], "pppprr",
                            [(gc, sel(0, 4)), (rhs, sel(2, 3, 4, 5)), (gc, sel(1, 5))],
                            lambda inner, a: [inner("tensor.mul", inner("tensor.mul", a[0], a[1]),
                                                    a[2])],
                            [out.dtype], combiner="add", name="winograd_weights", loc=op.loc)
        u = b("tensor.reshape", u, shape=(t * t, k_out, c_in))
    # M = U V with the output channels as rows, even at 16 or 49 tiles (7x7 and 14x14
    # outputs): the product transposed (C^T = V^T U^T, channels as the microkernel's
    # vectors) and transposed back was slower on ResNet-18 once edge column panels ran
    # their own narrow microkernels (session 21; benchmarks/README.md)
    mm = b.op("kernel.matmul", [u, v], {}).result
    return b.op("kernel.winograd_output", [mm], {"m": m, "size": (oh, ow), "batch": n,
                                                  "kernel": "winograd_out"},
                name_hint=op.results[0].name).result
