"""kernel.matmul: a batched matrix product computed by the packed, register-blocked
microkernel (BLIS-style; the emitter is solir/lower/llvm/kernels/matmul.py).

    C[b, i, j] = sum_p A[b, i, p] * B[b, p, j]        A: [B, M, K] (or [B, K, M] if trans_a)
                                                       B: [B, K, N] (or [B, N, K] if trans_b)

With `patches` set, B is not a matrix but an NCHW image [B, C, H, W] read as its im2col matrix
[B, C*KH*KW, OH*OW]: the packing of B panels gathers each receptive field from the image
directly, so a convolution's patch matrix (9x the image for a 3x3 conv) is never written to
memory. `patches` = (KH, KW, SH, SW, PH, PW, DH, DW, OH, OW).

With `blocked` = L, A and C are stored by channel blocks of L (the NCHWc layout of
solir/ir/ops/nchwc.py): A is [B, K/L, M, L] holding A[b, i, p] at [b, p / L, i, p % L], and
C is [B, N/L, M, L] likewise; the microkernel reads A in place (an MR-row panel of a block is
MR consecutive lines) and stores each vector of its tile into its channel block.

With an epilogue (operands after a and b, and a region), each element of C goes through the
region before it is stored, while the microkernel's tile is still in registers: the region's
arguments are C's element and each epilogue operand's element, read through
`epilogue_maps` (affine maps from (batch, i, j) into the operand viewed 1-d). This is how a
bias, BatchNorm's scale and shift, or an activation after a product avoid their own pass over
C (the fuse-epilogues pass puts them there).

A size-1 batch of an operand is broadcast (a weight shared by every batch element). Every
float contraction (dot_general with any batch/contracting layout) lowers to it: operands are
viewed as 3-d (no copy when their dims are already grouped, one transpose otherwise), and the
result [B, M, N] is viewed back in dot_general's order. The blocking (mr, nr, kc, mc, nc) is
chosen by the `schedule` pass from the target (mg = row blocks per unit of work); it never
changes results.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from solir.ir.attrs import AffineMap
from solir.ir.core import Builder, Value
from solir.ir.registry import KERNEL, OpDef, register
from solir.ir.types import DType, TensorType

BLOCKING = ("mr", "nr", "kc", "mc", "nc", "mg")


def patch_matrix_shape(image: TensorType, patches: Sequence[int]) -> tuple[int, int, int]:
    """[batch, K = C*KH*KW, N = OH*OW] of an image read through `patches`."""
    if image.rank != 4 or len(patches) != 10:
        raise ValueError("a patches operand is an NCHW image with (KH, KW, SH, SW, PH, PW, DH, DW, "
                         "OH, OW)")
    kh, kw, *_, oh, ow = patches
    return image.shape[0], image.shape[1] * kh * kw, oh * ow


def im2col(x: np.ndarray, patches: Sequence[int]) -> np.ndarray:
    """The patch matrix [B, C*KH*KW, OH*OW] of an NCHW image (zero outside it)."""
    kh, kw, sh, sw, ph, pw, dh, dw, oh, ow = (int(v) for v in patches)
    n, c, h, w = x.shape
    out = np.zeros((n, c, kh, kw, oh, ow), x.dtype)
    for i in range(kh):
        for j in range(kw):
            ys = np.arange(oh) * sh + i * dh - ph
            xs = np.arange(ow) * sw + j * dw - pw
            vy, vx = (ys >= 0) & (ys < h), (xs >= 0) & (xs < w)
            blk = x[:, :, np.clip(ys, 0, h - 1)][:, :, :, np.clip(xs, 0, w - 1)]
            out[:, :, i, j] = blk * (vy[:, None] & vx[None, :])
    return out.reshape(n, c * kh * kw, oh * ow)


def _mnk(types: Sequence[TensorType], attrs: dict[str, Any]) -> tuple[int, int, int, int, int]:
    a, b = types[:2]
    L = int(attrs.get("blocked") or 0)
    if L:
        if a.rank != 4 or a.shape[3] != L or attrs.get("trans_a") or attrs.get("a_packed"):
            raise ValueError(f"a blocked A is [batch, K/{L}, M, {L}], neither packed nor "
                             "transposed")
        a = TensorType((a.shape[0], a.shape[2], a.shape[1] * L), a.dtype)
    if attrs.get("patches"):
        if attrs.get("trans_b") or attrs.get("b_packed"):
            raise ValueError("a patches operand is neither transposed nor packed")
        b = TensorType(patch_matrix_shape(b, attrs["patches"]), b.dtype)
    if attrs.get("a_packed") or attrs.get("b_packed"):
        m, n, k = (int(attrs[x]) for x in ("m", "n", "k"))
        want_a = packed_size(m, k, attrs["mr"], attrs["kc"]) if attrs.get("a_packed") else None
        want_b = packed_size(n, k, attrs["nr"], attrs["kc"]) if attrs.get("b_packed") else None
        for t, want, which in ((a, want_a, "a"), (b, want_b, "b")):
            if want is not None and (t.rank not in (1, 2) or t.shape[-1] != want):
                raise ValueError(f"packed operand {which} is {t}, expected {want} elements "
                                 "(or [batch, that])")
        batch = [t.shape[0] for t, w in ((a, want_a), (b, want_b)) if w is None or t.rank == 2]
        if len(set(batch) - {1}) > 1:
            raise ValueError(f"batch sizes {batch} do not broadcast")
        if L and (a.shape[1] != m or a.shape[2] != k or n % L):
            raise ValueError(f"blocked A {a} does not match m = {m}, k = {k} (n = {n})")
        return max(batch, default=1), m, n, k, 0
    if a.rank != 3 or b.rank != 3:
        raise ValueError("kernel.matmul takes 3-d operands [batch, rows, cols]")
    m, k = (a.shape[2], a.shape[1]) if attrs.get("trans_a") else (a.shape[1], a.shape[2])
    k2, n = (b.shape[2], b.shape[1]) if attrs.get("trans_b") else (b.shape[1], b.shape[2])
    if k != k2:
        raise ValueError(f"contracting sizes differ: {k} and {k2}")
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        raise ValueError(f"batch sizes {a.shape[0]} and {b.shape[0]} do not broadcast")
    return max(a.shape[0], b.shape[0]), m, n, k, 0


# ---- operands packed at compile time (constant weights) ----------------------------------------
# A constant operand is stored in the order the microkernel reads it, for every KC step: A as
# MR-row panels [i/MR][p][MR], B as NR-column panels [j/NR][p][NR], zero-padded. The panel
# holding (i0, p0) (or (j0, p0)) starts at p0 * rows_padded + i0 * kcur. A batched constant
# (Winograd's U) is [batch, packed_size], one packing per batch element.

def packed_size(rows: int, k: int, r: int, kc: int) -> int:
    return -(-rows // r) * r * k


def pack_panels(x: np.ndarray, r: int, kc: int) -> np.ndarray:
    """x: [rows, K] -> panels of r rows, KC step by KC step (see above)."""
    rows, k = x.shape
    pad = -(-rows // r) * r
    xp = np.zeros((pad, k), x.dtype)
    xp[:rows] = x
    parts = []
    for p0 in range(0, k, kc):
        blk = xp[:, p0:p0 + kc]
        parts.append(blk.reshape(pad // r, r, -1).transpose(0, 2, 1).ravel())
    return np.concatenate(parts) if parts else np.zeros(0, x.dtype)


def unpack_panels(packed: np.ndarray, rows: int, k: int, r: int, kc: int) -> np.ndarray:
    pad = -(-rows // r) * r
    out = np.zeros((pad, k), packed.dtype)
    for p0 in range(0, k, kc):
        kcur = min(kc, k - p0)
        blk = packed[p0 * pad:p0 * pad + pad * kcur]
        out[:, p0:p0 + kcur] = blk.reshape(pad // r, kcur, r).transpose(0, 2, 1).reshape(pad, kcur)
    return out[:rows]


def c_shape(op: Any) -> tuple[int, int, int]:
    """A kernel.matmul's C as [batch, M, N], however it is stored (blocked: [B, N/L, M, L])."""
    shape = op.results[0].type.shape
    if op.attrs.get("blocked"):
        return shape[0], shape[2], shape[1] * shape[3]
    return tuple(shape)  # type: ignore[return-value]


def _infer(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    batch, m, n, _, _ = _mnk(types, attrs)
    if types[0].dtype != types[1].dtype or not types[0].dtype.is_float:
        raise ValueError("kernel.matmul multiplies two float operands of one dtype")
    L = int(attrs.get("blocked") or 0)
    if L:
        if n % L:
            raise ValueError(f"a blocked C needs N = {n} in whole blocks of {L}")
        return [TensorType((batch, n // L, m, L), types[0].dtype)]
    return [TensorType((batch, m, n), types[0].dtype)]


def _verify(op: Any) -> str | None:
    extra = len(op.operands) - 2
    maps = op.attrs.get("epilogue_maps") or ()
    if not op.regions:
        return "epilogue operands without an epilogue region" if extra else None
    if len(maps) != extra:
        return f"{extra} epilogue operands but {len(maps)} epilogue_maps"
    body = op.regions[0]
    if len(body.args) != 1 + extra:
        return f"the epilogue takes C's element and {extra} operands' elements, not {len(body.args)}"
    for v, m in zip(op.operands[2:], maps):
        if v.type.rank != 1 or m.n_dims != 3 or len(m.exprs) != 1:
            return "an epilogue operand is 1-d, read through a map from (batch, i, j)"
    out = body.ops[-1].operands if body.ops else []
    if len(out) != 1 or out[0].type.dtype != op.operands[0].type.dtype:
        return "the epilogue yields one element of C's dtype"
    return None


def _reference(op: Any, arrays: list[np.ndarray], run_block: Any) -> list[np.ndarray]:
    from solir.ir.ops.kernel import gather_affine
    attrs = {**op.opdef.optional_attrs, **op.attrs}
    c = _product(attrs, arrays[0], arrays[1])          # [batch, M, N]
    shape = c.shape
    if op.regions:
        grids = list(np.indices(c.shape, sparse=True))
        loaded = [c] + [gather_affine(x, m, grids, None)
                        for x, m in zip(arrays[2:], attrs["epilogue_maps"])]
        [c] = run_block(op.regions[0], loaded, {"grids": grids, "inputs": arrays[2:]})
        c = np.broadcast_to(np.asarray(c), shape)
    L = int(attrs.get("blocked") or 0)
    if L:                                              # [batch, N/L, M, L]
        bsz, m, n = c.shape
        c = c.reshape(bsz, m, n // L, L).transpose(0, 2, 1, 3)
    return [np.ascontiguousarray(c).astype(op.results[0].type.dtype.numpy)]


def _product(attrs: dict[str, Any], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if attrs.get("blocked"):                     # [batch, K/L, M, L] -> [batch, M, K]
        bsz, kb, m, L = a.shape
        a = a.transpose(0, 2, 1, 3).reshape(bsz, m, kb * L)
    elif attrs.get("a_packed"):
        a = np.stack([unpack_panels(x, attrs["m"], attrs["k"], attrs["mr"], attrs["kc"])
                      for x in a.reshape(-1, a.shape[-1])])
    elif attrs.get("trans_a"):
        a = a.transpose(0, 2, 1)
    if attrs.get("b_packed"):
        b = np.stack([unpack_panels(x, attrs["n"], attrs["k"], attrs["nr"], attrs["kc"]).T
                      for x in b.reshape(-1, b.shape[-1])])
    elif attrs.get("trans_b"):
        b = b.transpose(0, 2, 1)
    elif attrs.get("patches"):
        b = im2col(b, attrs["patches"])
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(a.dtype)


register(OpDef(
    name="kernel.matmul", operands=("a", "b", "*epilogue"), infer=_infer,
    optional_attrs={"trans_a": False, "trans_b": False, "kernel": "matmul",
                    **{k: None for k in BLOCKING}, "parallel": None,
                    "a_packed": False, "b_packed": False, "m": None, "n": None, "k": None,
                    "patches": None, "epilogue_maps": None, "blocked": None},
    verify=_verify, reference=_reference, kind=KERNEL, has_region=True,
    doc="Batched C = A B by the packed register-blocked microkernel; A is [B,M,K] "
        "([B,K,M] if trans_a), B is [B,K,N] ([B,N,K] if trans_b, or an NCHW image read as "
        "its im2col matrix with patches); a batch of 1 broadcasts. An optional region "
        "(the epilogue) maps each element of C, with the epilogue operands' elements, "
        "before it is stored."))


# ---- from dot_general ------------------------------------------------------------------------------

def _as_3d(b: Builder, v: Value, batch: Sequence[int], first: Sequence[int],
           second: Sequence[int]) -> tuple[Value, bool]:
    """v viewed as [prod(batch), prod(first), prod(second)] (trans=False) or, if its dims are
    stored the other way round, [batch, second, first] (trans=True). A copy only when the
    dims are interleaved."""
    from solir.ir.ops.kernel import build_generic
    size = lambda ds: int(np.prod([v.type.shape[d] for d in ds], dtype=np.int64))  # noqa: E731
    shape = (size(batch), size(first), size(second))
    stored = tuple(range(v.type.rank))
    perm = tuple(batch) + tuple(first) + tuple(second)
    trans = perm != stored and tuple(batch) + tuple(second) + tuple(first) == stored
    if trans:
        shape = (shape[0], shape[2], shape[1])
    elif perm != stored:            # interleaved: one transposing copy
        n = v.type.rank
        [v] = build_generic(b, [v.type.shape[p] for p in perm], "p" * n,
                            [(v, AffineMap.select(n, tuple(perm.index(d) for d in range(n))))],
                            lambda inner, args: [args[0]], [v.type.dtype], name="transpose",
                            loc=b.loc)
    if v.type.shape != shape:
        v = b("tensor.reshape", v, shape=shape)
    return v, trans


def build_matmul(b: Builder, lhs: Value, rhs: Value, lb: Sequence[int], lfree: Sequence[int],
                 lc: Sequence[int], rb: Sequence[int], rfree: Sequence[int], rc: Sequence[int],
                 out_shape: Sequence[int]) -> Value:
    """dot_general -> kernel.matmul, with the result in dot_general's [batch, lfree, rfree]."""
    a, ta = _as_3d(b, lhs, lb, lfree, lc)
    w, tb = _as_3d(b, rhs, rb, rc, rfree)
    c = b.op("kernel.matmul", [a, w], {"trans_a": ta, "trans_b": tb}).result
    return c if c.type.shape == tuple(out_shape) else b("tensor.reshape", c, shape=tuple(out_shape))


def matmul_applies(lhs: TensorType, rhs: TensorType, out: TensorType, n_contract: int) -> bool:
    return (n_contract > 0 and lhs.dtype == rhs.dtype == out.dtype
            and lhs.dtype in (DType.F32, DType.F64) and out.size > 0 and lhs.size > 0)
