"""Emits one kernel.matmul: the BLIS loop structure around a register-blocked microkernel.

    for each unit (batch b, column block jb, group of MG row blocks)  <- the thread pool's units
      for p0 in 0..K step KC
        pack B[b, p0:p0+KC, j0:j0+NC] into NR-wide panels  Bp[jp][p][0:NR]  (zero-padded)
        for each row block ib of the group
          pack A[b, i0:i0+MC, p0:p0+KC] into MR-tall panels  Ap[ip][p][0:MR]  (zero-padded, L2)
          for jr in 0..NC step NR, ir in 0..MC step MR
          microkernel: MR x NR accumulators in vector registers, one FMA per (row, vector)
          per k step, reading one Bp row (NR/lanes vectors) and MR broadcast Ap elements;
          then C += (p0 > 0) or C = the tile. Edge tiles run the same microkernel into a
          scratch tile and copy its valid part out, so they cost no more than a full one.

Pack buffers live in a per-thread scratch area the runtime allocates once
(`solir_scratch`), so a call allocates nothing after the first. The blocking comes from
the op's attributes (set by the schedule pass from the Target). Results do not depend on the
split into units: every C element is summed over k in the same order.
"""

from __future__ import annotations

from typing import Callable

import llvmlite.ir as ir

from solir.ir.core import Op
from solir.lower.llvm.element import scalar_type
from solir.lower.llvm.kernels.generic import CHUNK_FN_TYPE, PTR
from solir.lower.llvm.loops import I64, const64, for_range
from solir.targets import Target

I1 = ir.IntType(1)
SCRATCH = "solir_scratch"


def matmul_units(op: Op) -> int:
    a = op.attrs
    batch, m, n = op.results[0].type.shape
    return batch * -(-(-(-m // a["mc"])) // a["mg"]) * -(-n // a["nc"])


def emit_matmul(llmod: ir.Module, op: Op, target: Target, name: str) -> ir.Function:
    return _MatmulEmitter(llmod, op, target, name).emit()


def _carried_loop(b: ir.IRBuilder, lo: ir.Value, hi: ir.Value, step: int, init: list[ir.Value],
                  body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]], name: str) -> list[ir.Value]:
    """for (iv = lo; iv + step <= hi; iv += step) vals = body(iv, vals); returns the final vals.
    (Iterates while a whole step fits; callers handle the remainder.)"""
    fn = b.block.function
    pre = b.block
    cond = fn.append_basic_block(f"{name}.cond")
    body_bb = fn.append_basic_block(f"{name}.body")
    end = fn.append_basic_block(f"{name}.end")
    b.branch(cond)
    b.position_at_end(cond)
    iv = b.phi(I64, name=name)
    iv.add_incoming(lo, pre)
    phis = []
    for k, v in enumerate(init):
        p = b.phi(v.type, name=f"{name}.acc{k}")
        p.add_incoming(v, pre)
        phis.append(p)
    b.cbranch(b.icmp_signed("<=", b.add(iv, const64(step)), hi), body_bb, end)
    b.position_at_end(body_bb)
    new = body(iv, list(phis))
    iv.add_incoming(b.add(iv, const64(step)), b.block)
    for p, v in zip(phis, new):
        p.add_incoming(v, b.block)
    b.branch(cond)
    b.position_at_end(end)
    return list(phis)


class _MatmulEmitter:
    def __init__(self, llmod: ir.Module, op: Op, target: Target, name: str):
        self.llmod, self.op, self.target, self.name = llmod, op, target, name
        a = op.attrs
        A, B = op.operands
        self.batch, self.M, self.N = op.results[0].type.shape
        self.ta, self.tb = bool(a.get("trans_a")), bool(a.get("trans_b"))
        self.K = A.type.shape[1] if self.ta else A.type.shape[2]
        self.mr, self.nr, self.kc, self.mc, self.nc, self.mg = (
            int(a[k]) for k in ("mr", "nr", "kc", "mc", "nc", "mg"))
        self.dtype = op.results[0].type.dtype
        self.ety = scalar_type(self.dtype)
        self.size = self.dtype.itemsize
        self.lanes = max(1, min(target.lanes(self.size), self.nr))
        self.nv = self.nr // self.lanes
        self.vty = ir.VectorType(self.ety, self.lanes) if self.lanes > 1 else self.ety
        # element strides: A(b, i, p), B(b, p, j)
        M, N, K = self.M, self.N, self.K
        self.a_bs = 0 if A.type.shape[0] == 1 else M * K
        self.a_is, self.a_ps = (1, M) if self.ta else (K, 1)
        self.b_bs = 0 if B.type.shape[0] == 1 else K * N
        self.b_ps, self.b_js = (1, K) if self.tb else (N, 1)
        self.mcp = -(-self.mc // self.mr) * self.mr       # blocks padded to whole panels
        self.ncp = -(-self.nc // self.nr) * self.nr

    def scratch_elems(self) -> int:
        return self.kc * self.ncp + self.mcp * self.kc + self.mr * self.nr

    # -- helpers -------------------------------------------------------------------------------------
    def _declare(self, name: str, fty: ir.FunctionType) -> ir.Function:
        fn = self.llmod.globals.get(name)
        return fn if fn is not None else ir.Function(self.llmod, fty, name)

    def fma(self) -> ir.Function:
        """llvm.fmuladd: an FMA where the target has one, mul+add where it has not."""
        e = "f64" if self.size == 8 else "f32"
        suffix = f"v{self.lanes}{e}" if self.lanes > 1 else e
        return self._declare(f"llvm.fmuladd.{suffix}", ir.FunctionType(self.vty, [self.vty] * 3))

    def smin(self) -> ir.Function:
        return self._declare("llvm.smin.i64", ir.FunctionType(I64, [I64, I64]))

    def gep(self, b: ir.IRBuilder, ptr: ir.Value, off: ir.Value) -> ir.Value:
        return b.gep(ptr, [off], source_etype=self.ety, inbounds=True)

    def splat(self, b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        if self.lanes == 1:
            return x
        v = b.insert_element(ir.Constant(self.vty, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
        return b.shuffle_vector(v, ir.Constant(self.vty, ir.Undefined),
                                ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [0] * self.lanes))

    # -- the microkernel ---------------------------------------------------------------------------
    def microkernel(self) -> ir.Function:
        """void micro(i64 k, ptr ap, ptr bp, ptr c, i64 ldc, i1 accumulate)"""
        fty = ir.FunctionType(ir.VoidType(), [I64, PTR, PTR, PTR, I64, I1])
        fn = ir.Function(self.llmod, fty, f"{self.name}.micro")
        fn.linkage = "internal"
        k, ap, bp, c, ldc, accumulate = fn.args
        for arg, nm in zip(fn.args, ("k", "ap", "bp", "c", "ldc", "accumulate")):
            arg.name = nm
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        mr, nv, lanes, nr = self.mr, self.nv, self.lanes, self.nr
        zero = ir.Constant(self.vty, [0.0] * lanes) if lanes > 1 else ir.Constant(self.ety, 0.0)
        fma = self.fma()
        valign = self.size * lanes if (nr * self.size) % (self.size * lanes) == 0 else self.size

        def step(p: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            bvs = [b.load(self.gep(b, bp, b.add(b.mul(p, const64(nr)), const64(v * lanes))),
                          typ=self.vty, align=valign) for v in range(nv)]
            out = list(acc)
            for i in range(mr):
                a = b.load(self.gep(b, ap, b.add(b.mul(p, const64(mr)), const64(i))),
                           typ=self.ety, align=self.size)
                av = self.splat(b, a)
                for v in range(nv):
                    out[i * nv + v] = b.call(fma, [av, bvs[v], out[i * nv + v]])
            return out

        unroll = 4

        def unrolled(p: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            for u in range(unroll):
                acc = step(b.add(p, const64(u)), acc)
            return acc
        acc = _carried_loop(b, const64(0), k, unroll, [zero] * (mr * nv), unrolled, "k4")
        # the remainder: k - k % unroll .. k
        rest = b.sub(k, b.srem(k, const64(unroll)))
        acc = _carried_loop(b, rest, k, 1, acc, step, "k1")

        # write back: C (+)= acc
        with b.if_else(accumulate) as (then, otherwise):
            with then:
                self._store_tile(b, c, ldc, acc, add=True)
            with otherwise:
                self._store_tile(b, c, ldc, acc, add=False)
        b.ret_void()
        return fn

    def _store_tile(self, b: ir.IRBuilder, c: ir.Value, ldc: ir.Value, acc: list[ir.Value],
                    add: bool) -> None:
        for i in range(self.mr):
            row = b.mul(const64(i), ldc)
            for v in range(self.nv):
                ptr = self.gep(b, c, b.add(row, const64(v * self.lanes)))
                val = acc[i * self.nv + v]
                if add:
                    old = b.load(ptr, typ=self.vty, align=self.size)
                    val = b.fadd(old, val)
                b.store(val, ptr, align=self.size)

    # -- packing -----------------------------------------------------------------------------------
    def pack_b(self, b: ir.IRBuilder, bsrc: ir.Value, bp: ir.Value, base: ir.Value,
               p0: ir.Value, kcur: ir.Value, j0: ir.Value, ncur: ir.Value) -> None:
        """Bp[jp][p][jj] = B(b, p0+p, j0+jp*nr+jj), zero beyond ncur. A row-major B is read
        row by row (sequential, so the prefetchers keep up) and full panels copy whole
        vectors; a transposed B goes panel by panel with the panel's reads unrolled."""
        nr = self.nr
        if self.b_js != 1 or self.lanes == 1:
            with for_range(b, const64(0), ncur, nr, name="pbj") as jr:
                width = b.call(self.smin(), [b.sub(ncur, jr), const64(nr)])
                self._copy_strided(b, bsrc, self.gep(b, bp, b.mul(jr, kcur)), base, width,
                                   const64(nr), kcur, src_outer=self.b_js, src_inner=self.b_ps,
                                   outer0=b.mul(b.add(j0, jr), const64(self.b_js)),
                                   inner0=b.mul(p0, const64(self.b_ps)), dst_step=nr, name="pbs")
            return
        full_end = b.mul(b.sdiv(ncur, const64(nr)), const64(nr))
        zero = ir.Constant(self.ety, 0.0)
        with for_range(b, const64(0), kcur, 1, name="pbp") as p:
            src = b.add(base, b.add(b.mul(b.add(p0, p), const64(self.b_ps)), j0))
            with for_range(b, const64(0), full_end, nr, name="pbj") as jr:
                dst = b.add(b.mul(jr, kcur), b.mul(p, const64(nr)))
                for v in range(self.nv):
                    x = b.load(self.gep(b, bsrc, b.add(b.add(src, jr), const64(v * self.lanes))),
                               typ=self.vty, align=self.size)
                    b.store(x, self.gep(b, bp, b.add(dst, const64(v * self.lanes))), align=self.size)
            # the last, partial panel
            dst = b.add(b.mul(full_end, kcur), b.mul(p, const64(nr)))
            with for_range(b, const64(0), const64(nr), 1, name="pbe") as jj:
                j = b.add(full_end, jj)
                inside = b.icmp_signed("<", j, ncur)
                with b.if_else(inside) as (then, otherwise):
                    with then:
                        x = b.load(self.gep(b, bsrc, b.add(src, j)), typ=self.ety, align=self.size)
                        b.store(x, self.gep(b, bp, b.add(dst, jj)), align=self.size)
                    with otherwise:
                        with b.if_then(b.icmp_signed("<", full_end, ncur)):
                            b.store(zero, self.gep(b, bp, b.add(dst, jj)), align=self.size)

    def pack_a(self, b: ir.IRBuilder, asrc: ir.Value, apk: ir.Value, base: ir.Value,
               i0: ir.Value, mcur: ir.Value, p0: ir.Value, kcur: ir.Value) -> None:
        """Ap[ip][p][ii] = A(b, i0+ip*mr+ii, p0+p), zero beyond mcur."""
        mr = self.mr
        with for_range(b, const64(0), mcur, mr, name="pai") as ir_:
            panel = self.gep(b, apk, b.mul(ir_, kcur))
            height = b.call(self.smin(), [b.sub(mcur, ir_), const64(mr)])
            self._copy_strided(b, asrc, panel, base, height, const64(mr), kcur,
                               src_outer=self.a_is, src_inner=self.a_ps,
                               outer0=b.mul(b.add(i0, ir_), const64(self.a_is)),
                               inner0=b.mul(p0, const64(self.a_ps)), dst_step=mr, name="pas")

    def _copy_strided(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, base: ir.Value,
                      count: ir.Value, full: ir.Value, kcur: ir.Value, *, src_outer: int,
                      src_inner: int, outer0: ir.Value, inner0: ir.Value, dst_step: int,
                      name: str) -> None:
        """dst[p*dst_step + t] = src[base + outer0 + t*src_outer + inner0 + p*src_inner] for
        t < count, and 0 for count <= t < full (the panel's zero padding). Sources contiguous
        along k are copied row by row; otherwise a whole panel (count == dst_step) copies one
        k-row at a time with its dst_step reads unrolled."""
        start = b.add(base, b.add(outer0, inner0))
        if src_inner == 1:        # reads contiguous along k: one source row at a time
            self._copy_partial(b, src, dst, start, count, full, kcur, src_outer, src_inner,
                               dst_step, name)
            return
        whole = b.icmp_signed("==", count, const64(dst_step))
        with b.if_else(whole) as (then, otherwise):
            with then:
                with for_range(b, const64(0), kcur, 1, name=f"{name}w") as p:
                    row = b.add(start, b.mul(p, const64(src_inner)))
                    out = b.mul(p, const64(dst_step))
                    for t in range(dst_step):
                        x = b.load(self.gep(b, src, b.add(row, const64(t * src_outer))),
                                   typ=self.ety, align=self.size)
                        b.store(x, self.gep(b, dst, b.add(out, const64(t))), align=self.size)
            with otherwise:
                self._copy_partial(b, src, dst, start, count, full, kcur, src_outer, src_inner,
                                   dst_step, name)

    def _copy_partial(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, start: ir.Value,
                      count: ir.Value, full: ir.Value, kcur: ir.Value, src_outer: int,
                      src_inner: int, dst_step: int, name: str) -> None:
        zero = ir.Constant(self.ety, 0.0)
        with for_range(b, const64(0), count, 1, name=f"{name}t") as t:
            row = b.add(start, b.mul(t, const64(src_outer)))
            with for_range(b, const64(0), kcur, 1, name=f"{name}p") as p:
                x = b.load(self.gep(b, src, b.add(row, b.mul(p, const64(src_inner)))),
                           typ=self.ety, align=self.size)
                b.store(x, self.gep(b, dst, b.add(b.mul(p, const64(dst_step)), t)), align=self.size)
        with for_range(b, count, full, 1, name=f"{name}z") as t:
            with for_range(b, const64(0), kcur, 1, name=f"{name}zp") as p:
                b.store(zero, self.gep(b, dst, b.add(b.mul(p, const64(dst_step)), t)), align=self.size)

    # -- the driver --------------------------------------------------------------------------------
    def emit(self) -> ir.Function:
        micro = self.microkernel()
        fn = ir.Function(self.llmod, CHUNK_FN_TYPE, self.name)
        fn.linkage = "internal"
        bufs, begin, end = fn.args
        bufs.name, begin.name, end.name = "bufs", "begin", "end"
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        ptrs = [b.load(b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True), typ=PTR)
                for k in range(3)]
        asrc, bsrc, c = ptrs
        scratch_fn = self.llmod.globals.get(SCRATCH) or ir.Function(
            self.llmod, ir.FunctionType(PTR, [I64]), SCRATCH)
        scratch = b.call(scratch_fn, [const64(self.scratch_elems() * self.size)], name="scratch")
        bp = scratch
        apk = self.gep(b, scratch, const64(self.kc * self.ncp))
        ctile = self.gep(b, scratch, const64(self.kc * self.ncp + self.mcp * self.kc))
        M, N, K, mc, nc, kc = self.M, self.N, self.K, self.mc, self.nc, self.kc
        mb, nb = -(-M // mc), -(-N // nc)
        ng = -(-mb // self.mg)                    # row groups
        with for_range(b, begin, end, 1, name="unit") as u:
            bi = b.sdiv(u, const64(ng * nb))
            rem = b.srem(u, const64(ng * nb))
            ig, jb = b.sdiv(rem, const64(nb)), b.srem(rem, const64(nb))
            j0 = b.mul(jb, const64(nc))
            ncur = b.call(self.smin(), [b.sub(const64(N), j0), const64(nc)], name="ncur")
            ib0 = b.mul(ig, const64(self.mg))
            ib1 = b.call(self.smin(), [b.add(ib0, const64(self.mg)), const64(mb)])
            a_base = b.mul(bi, const64(self.a_bs))
            b_base = b.mul(bi, const64(self.b_bs))
            c_base = b.mul(bi, const64(M * N))
            with for_range(b, const64(0), const64(K), kc, name="pc") as p0:
                kcur = b.call(self.smin(), [b.sub(const64(K), p0), const64(kc)], name="kcur")
                self.pack_b(b, bsrc, bp, b_base, p0, kcur, j0, ncur)
                accumulate = b.icmp_signed(">", p0, const64(0))
                with for_range(b, ib0, ib1, 1, name="ib") as ib:
                    i0 = b.mul(ib, const64(mc))
                    mcur = b.call(self.smin(), [b.sub(const64(M), i0), const64(mc)], name="mcur")
                    self.pack_a(b, asrc, apk, a_base, i0, mcur, p0, kcur)
                    self._block(b, micro, apk, bp, c, ctile, c_base, i0, j0, mcur, ncur, kcur,
                                accumulate)
        b.ret_void()
        return fn

    def _block(self, b: ir.IRBuilder, micro: ir.Function, apk: ir.Value, bp: ir.Value,
               c: ir.Value, ctile: ir.Value, c_base: ir.Value, i0: ir.Value, j0: ir.Value,
               mcur: ir.Value, ncur: ir.Value, kcur: ir.Value, accumulate: ir.Value) -> None:
        """All microkernel tiles of one packed A block against the packed B block."""
        mr, nr, N = self.mr, self.nr, self.N
        with for_range(b, const64(0), ncur, nr, name="jr") as jr:
            wn = b.call(self.smin(), [b.sub(ncur, jr), const64(nr)])
            col = b.add(j0, jr)
            b_panel = self.gep(b, bp, b.mul(jr, kcur))
            with for_range(b, const64(0), mcur, mr, name="ir") as ir_:
                a_panel = self.gep(b, apk, b.mul(ir_, kcur))
                row = b.add(i0, ir_)
                cptr = self.gep(b, c, b.add(c_base, b.add(b.mul(row, const64(N)), col)))
                hm = b.call(self.smin(), [b.sub(mcur, ir_), const64(mr)])
                full = b.and_(b.icmp_signed("==", hm, const64(mr)),
                              b.icmp_signed("==", wn, const64(nr)))
                with b.if_else(full) as (then, otherwise):
                    with then:
                        b.call(micro, [kcur, a_panel, b_panel, cptr, const64(N), accumulate])
                    with otherwise:
                        b.call(micro, [kcur, a_panel, b_panel, ctile, const64(nr),
                                       ir.Constant(I1, 0)])
                        self._copy_edge(b, ctile, cptr, hm, wn, accumulate)

    def _copy_edge(self, b: ir.IRBuilder, tile: ir.Value, cptr: ir.Value, hm: ir.Value,
                   wn: ir.Value, accumulate: ir.Value) -> None:
        with for_range(b, const64(0), hm, 1, name="ei") as i:
            with for_range(b, const64(0), wn, 1, name="ej") as j:
                t = b.load(self.gep(b, tile, b.add(b.mul(i, const64(self.nr)), j)), typ=self.ety)
                dst = self.gep(b, cptr, b.add(b.mul(i, const64(self.N)), j))
                old = b.load(dst, typ=self.ety)
                b.store(b.select(accumulate, b.fadd(old, t), t), dst)
