"""Emits Winograd's two transforms (solir/ir/ops/winograd.py has the algebra). Both run one
unit of work per image plane, vectorized along the tiles of a tile row, with the transform
matrices unrolled into adds and constant multiplies (zeros skipped) at emission time.

kernel.winograd_input, per (n, c) plane:
  1. Q[y][r][q] = X[y - PH, q*m + r - PW]: the plane, zero-padded and split into its m column
     phases, so a tile's column j is phase j % m at tile q + j // m. Each row is read with
     masked vector loads of m*L contiguous elements and de-interleaved with shuffles.
  2. per tile row: T[xi][r][q] = sum_i B^T[xi][i] Q[ty*m + i][r][q]        (along columns)
  3.               V[xi nu][c][tile] = sum_j B^T[nu][j] T[xi][j % m][q + j // m]  (along rows)
  Q and T live in the thread's scratch memory (Q is the plane with its padding, T six rows).

kernel.winograd_output, per (n, k) plane and tile row, L tiles at a time: the t^2 vectors of M
are combined by A^T on both sides into m x m vectors, and each output row's m vectors are
interleaved with one shuffle into m*L contiguous elements and stored (masked at the edge).
"""

from __future__ import annotations

from typing import Sequence

import llvmlite.ir as ir

from solir.ir.core import Op
from solir.ir.ops.winograd import MATRICES, planes as winograd_units, tiles_for
from solir.lower.llvm.element import ElementEmitter, scalar_type
from solir.lower.llvm.kernels.generic import CHUNK_FN_TYPE, PTR
from solir.lower.llvm.kernels.matmul import scratch
from solir.lower.llvm.loops import Builder, I64, const64, for_range
from solir.targets import Target

I32 = ir.IntType(32)


class _Emitter:
    def __init__(self, llmod: ir.Module, op: Op, target: Target, name: str):
        self.llmod, self.op, self.name = llmod, op, name
        self.m = int(op.attrs["m"])
        self.t = self.m + 2
        self.BT, _, self.AT = MATRICES[self.m]
        dtype = op.results[0].type.dtype
        self.size = dtype.itemsize
        self.ety = scalar_type(dtype)
        lanes = target.lanes(self.size)
        self.L = lanes if lanes > 1 else 4          # vectors even where the target has none
        self.vty = ir.VectorType(self.ety, self.L)

    def shared(self, geometry: tuple[int, ...]) -> tuple[ir.Function, ir.Function | None]:
        """The op's chunk function, a call to the one for its geometry (a ResNet stage has
        three or four convs of one shape: one copy of the transform each), and that one if
        it still has to be emitted (else None)."""
        tag = "f64" if self.size == 8 else "f32"
        full = f"solir.{self.op.name.split('.')[1]}.{tag}x{self.L}.{'_'.join(map(str, geometry))}"
        impl = self.llmod.globals.get(full)
        fresh = impl is None
        if fresh:
            impl = ir.Function(self.llmod, CHUNK_FN_TYPE, full)
            impl.linkage = "internal"
            impl.attributes.add("noinline")
        fn = ir.Function(self.llmod, CHUNK_FN_TYPE, self.name)
        fn.linkage = "internal"
        b = Builder(fn.append_basic_block("entry"))
        b.call(impl, list(fn.args))
        b.ret_void()
        return fn, impl if fresh else None

    def begin(self, fn: ir.Function) -> tuple[ir.IRBuilder, list[ir.Value], ir.Value, ir.Value]:
        bufs, begin, end = fn.args
        b = Builder(fn.append_basic_block("entry"))
        ptrs = [b.load(b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True), typ=PTR)
                for k in range(2)]
        return b, ptrs, begin, end

    def gep(self, b: ir.IRBuilder, ptr: ir.Value, off: ir.Value | int) -> ir.Value:
        return b.gep(ptr, [const64(off) if isinstance(off, int) else off],
                     source_etype=self.ety, inbounds=True)

    def load(self, b: ir.IRBuilder, ptr: ir.Value, off: ir.Value | int) -> ir.Value:
        return b.load(self.gep(b, ptr, off), typ=self.vty, align=self.size)

    def lincomb(self, b: ir.IRBuilder, e: ElementEmitter, coeffs: Sequence[float],
                vecs: Sequence[ir.Value]) -> ir.Value:
        """sum_j coeffs[j] * vecs[j] with the constants folded in: zeros skipped, +-1 as
        adds and subtracts, the rest as FMAs."""
        acc = None
        for c, v in zip(coeffs, vecs):
            c = float(c)
            if c == 0.0:
                continue
            if acc is None:
                acc = v if c == 1.0 else b.fneg(v) if c == -1.0 else b.fmul(v, self.splat(c))
            elif c == 1.0:
                acc = b.fadd(acc, v)
            elif c == -1.0:
                acc = b.fsub(acc, v)
            else:
                acc = e.intrinsic("fmuladd", [v, self.splat(c), acc])
        return acc if acc is not None else self.splat(0.0)

    def splat(self, c: float) -> ir.Constant:
        return ir.Constant(self.vty, [c] * self.L)

    def lanes_below(self, b: ir.IRBuilder, start: ir.Value, limit: int, width: int) -> ir.Value:
        """i1 x width: start + lane < limit."""
        i64v = ir.VectorType(I64, width)
        e = ElementEmitter(self.llmod, b, width)
        pos = b.add(e.splat(start), ir.Constant(i64v, list(range(width))))
        return b.icmp_signed("<", pos, ir.Constant(i64v, [limit] * width))


def _join(b: ir.IRBuilder, vs: list[ir.Value]) -> ir.Value:
    """Vectors of equal width (a power-of-two count) as one vector, in order."""
    while len(vs) > 1:
        n = vs[0].type.count
        both = ir.Constant(ir.VectorType(I32, 2 * n), list(range(2 * n)))
        vs = [b.shuffle_vector(vs[i], vs[i + 1], both) for i in range(0, len(vs), 2)]
    return vs[0]


def emit_winograd_input(llmod: ir.Module, op: Op, target: Target, name: str) -> ir.Function:
    w = _Emitter(llmod, op, target, name)
    m, t, L, BT = w.m, w.t, w.L, w.BT
    n_img, c_in, h, wd = op.operands[0].type.shape
    ph, pw = (int(v) for v in op.attrs["pad"])
    ty_n, tx_n = (int(v) for v in op.attrs["tiles"])
    hp = ty_n * m + 2                                   # padded rows the tiles read
    txv = -(-tx_n // L) * L                             # tiles per row, in whole vectors
    qw = txv + L                                        # a phase row (tile q + 1 is read)
    cols = n_img * ty_n * tx_n                          # V's columns: (n, ty, tx)
    wide = ir.VectorType(w.ety, m * L)
    chunk, impl = w.shared((m, n_img, c_in, h, wd, ph, pw, ty_n, tx_n))
    if impl is None:
        return chunk

    b, (x, v), begin, end = w.begin(impl)
    e = ElementEmitter(llmod, b, L)
    q_elems = hp * m * qw
    qbuf = scratch(llmod, b, (q_elems + t * m * qw) * w.size)
    tbuf = w.gep(b, qbuf, q_elems)
    phase = [ir.Constant(ir.VectorType(I32, L), [r + m * i for i in range(L)]) for r in range(m)]
    with for_range(b, begin, end, 1, name="plane") as u:
        plane = w.gep(b, x, b.mul(u, const64(h * wd)))
        nn, c = b.sdiv(u, const64(c_in)), b.srem(u, const64(c_in))
        # 1. the padded plane, split into column phases
        with for_range(b, const64(0), const64(hp), 1, name="qy") as yy:
            iy = b.sub(yy, const64(ph))
            row_ok = b.and_(b.icmp_signed(">=", iy, const64(0)), b.icmp_signed("<", iy, const64(h)))
            row = w.gep(b, plane, b.mul(b.select(row_ok, iy, const64(0)), const64(wd)))
            with for_range(b, const64(0), const64(qw), L, name="qq") as q:
                x0 = b.sub(b.mul(q, const64(m)), const64(pw))      # first column of this chunk
                # lanes outside the image are masked off: never read, whatever x0 is. Loaded
                # as m vectors of L lanes, each with its own mask computed as L lanes: LLVM 22
                # miscompiled on AVX2 both the single m*L-lane masked load (garbage in F(4x4)
                # of a 3x5 image with 2 columns of padding) and L-lane loads whose masks were
                # shuffled out of one m*L-lane i1 mask (F(2x2), outputs 7-8 wide and >= 9
                # high: the last tile column read uninitialized memory). Both found by
                # tests/test_schedules.py; right on SSE, at O0 and in the interpreter.
                ptr0 = b.gep(row, [x0], source_etype=w.ety)
                i32l = ir.VectorType(I32, L)
                pieces = []
                for pc in range(m):
                    xl = b.add(e.splat(b.trunc(b.add(x0, const64(pc * L)), I32)),
                               ir.Constant(i32l, list(range(L))))
                    sub = b.and_(b.and_(b.icmp_signed(">=", xl, ir.Constant(i32l, [0] * L)),
                                        b.icmp_signed("<", xl, ir.Constant(i32l, [wd] * L))),
                                 e.splat(row_ok))
                    pieces.append(e.masked_load(w.vty, b.gep(ptr0, [const64(pc * L)],
                                                             source_etype=w.ety),
                                                w.size, sub, w.splat(0.0)))
                span = _join(b, pieces)
                base = b.mul(yy, const64(m * qw))
                for r in range(m):
                    vec = b.shuffle_vector(span, ir.Constant(wide, ir.Undefined), phase[r])
                    b.store(vec, w.gep(b, qbuf, b.add(base, b.add(const64(r * qw), q))),
                            align=w.size)
        with for_range(b, const64(0), const64(ty_n), 1, name="ty") as ty:
            # 2. along columns: T[xi][r][q]
            with for_range(b, const64(0), const64(qw), L, name="tq") as q:
                for r in range(m):
                    rows = [w.load(b, qbuf, b.add(b.mul(b.add(b.mul(ty, const64(m)), const64(i)),
                                                        const64(m * qw)), b.add(const64(r * qw), q)))
                            for i in range(t)]
                    for xi in range(t):
                        b.store(w.lincomb(b, e, BT[xi], rows),
                                w.gep(b, tbuf, b.add(const64((xi * m + r) * qw), q)), align=w.size)
            # 3. along rows: V[xi nu][c][n, ty, q]
            col0 = b.add(b.mul(nn, const64(ty_n * tx_n)), b.mul(ty, const64(tx_n)))
            with for_range(b, const64(0), const64(txv), L, name="vq") as q:
                keep = w.lanes_below(b, q, tx_n, L)
                for xi in range(t):
                    es = [w.load(b, tbuf, b.add(const64((xi * m + j % m) * qw + j // m), q))
                          for j in range(t)]
                    for nu in range(t):
                        off = b.add(b.mul(b.add(const64((xi * t + nu) * c_in), c), const64(cols)),
                                    b.add(col0, q))
                        e.masked_store(w.lincomb(b, e, BT[nu], es), w.gep(b, v, off), w.size, keep)
    b.ret_void()
    return chunk


def emit_winograd_output(llmod: ir.Module, op: Op, target: Target, name: str) -> ir.Function:
    w = _Emitter(llmod, op, target, name)
    m, t, L, AT = w.m, w.t, w.L, w.AT
    n_img, k_out, oh, ow = op.results[0].type.shape
    ty_n, tx_n = tiles_for((oh, ow), m)
    cols = n_img * ty_n * tx_n
    txv = -(-tx_n // L) * L
    wide = ir.VectorType(w.ety, m * L)
    chunk, impl = w.shared((m, n_img, k_out, oh, ow))
    if impl is None:
        return chunk
    # lane i of the interleaved row is y[b][tile] with (tile, b) = divmod(i, m); the m vectors
    # are first joined into one of m*L lanes (vector b at lanes b*L..)
    interleave = ir.Constant(ir.VectorType(I32, m * L), [(i % m) * L + i // m for i in range(m * L)])

    b, (mm, y), begin, end = w.begin(impl)
    e = ElementEmitter(llmod, b, L)
    zero = w.splat(0.0)
    with for_range(b, begin, end, 1, name="plane") as u:
        nn, k = b.sdiv(u, const64(k_out)), b.srem(u, const64(k_out))
        out_plane = w.gep(b, y, b.mul(u, const64(oh * ow)))
        with for_range(b, const64(0), const64(ty_n), 1, name="ty") as ty:
            col0 = b.add(b.mul(nn, const64(ty_n * tx_n)), b.mul(ty, const64(tx_n)))
            with for_range(b, const64(0), const64(txv), L, name="oq") as q:
                keep = w.lanes_below(b, q, tx_n, L)
                src = b.add(b.add(b.mul(k, const64(cols)), col0), q)
                mv = [[e.masked_load(w.vty, w.gep(b, mm, b.add(src, const64((xi * t + nu) * k_out * cols))),
                                     w.size, keep, zero) for nu in range(t)] for xi in range(t)]
                s = [[w.lincomb(b, e, AT[a], [mv[xi][nu] for xi in range(t)]) for nu in range(t)]
                     for a in range(m)]
                x0 = b.mul(q, const64(m))
                store_cols = w.lanes_below(b, x0, ow, m * L)
                for a in range(m):
                    oy = b.add(b.mul(ty, const64(m)), const64(a))
                    with b.if_then(b.icmp_signed("<", oy, const64(oh))):
                        ys = [w.lincomb(b, e, AT[bb], s[a]) for bb in range(m)]
                        row = b.shuffle_vector(_join(b, ys), ir.Constant(wide, ir.Undefined), interleave)
                        ptr = w.gep(b, out_plane, b.add(b.mul(oy, const64(ow)), x0))
                        e.masked_store(row, ptr, w.size, store_cols)
    b.ret_void()
    return chunk


__all__ = ["emit_winograd_input", "emit_winograd_output", "winograd_units"]
