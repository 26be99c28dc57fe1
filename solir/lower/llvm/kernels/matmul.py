"""Emits one kernel.matmul: the BLIS loop structure around a register-blocked microkernel.

    for each unit (batch b, column block jb, group of MG row blocks)  <- the thread pool's units
      for p0 in 0..K step KC
        pack B[b, p0:p0+KC, j0:j0+NC] into NR-wide panels  Bp[jp][p][0:NR]  (zero-padded)
        for each row block ib of the group
          pack A[b, i0:i0+MC, p0:p0+KC] into MR-tall panels  Ap[ip][p][0:MR]  (zero-padded, L2;
            a small row-major A that fits half of L2 is read in place instead: direct_a)
          for jr in 0..NC step NR, ir in 0..MC step MR
          microkernel: MR x NR accumulators in vector registers, one FMA per (row, vector)
          per k step, reading one Bp row (NR/lanes vectors) and MR broadcast Ap elements;
          then C += (p0 > 0) or C = the tile. Edge tiles run the narrowest microkernel
          covering their columns (whole vectors) into a scratch tile and copy its valid part
          out, so they cost no more than a full one; full-width tiles of the last rows run a
          microkernel of their height straight into C; a last column panel narrower than MR
          (49 columns leave 1 of 16) is computed with its vectors along M (column_strip).
          With an epilogue (bias, BN, activation: solir/lower/epilogue.py) the last K block
          stores epilogue(C + tile), element by element from the registers; the epilogue's
          operands are read at the tile's rows and columns. Such a matmul gets its own
          full-tile microkernel and block function (named after it); earlier K blocks and
          edge tiles run the shared microkernels, edge tiles through the scratch tile with
          the epilogue applied as it is copied out.

Pack buffers live in a per-thread scratch area the runtime allocates once
(`solir_scratch`), so a call allocates nothing after the first. The blocking comes from
the op's attributes (set by the schedule pass from the Target). Results do not depend on the
split into units: every C element is summed over k in the same order.
"""

from __future__ import annotations

import functools
from typing import Callable

import llvmlite.ir as ir
import numpy as np

from solir.ir.core import Op
from solir.ir.ops.matmul import c_shape
from solir.ir.types import TensorType
from solir.lower.llvm.element import ElementEmitter, scalar_type
from solir.lower.llvm.kernels.generic import CHUNK_FN_TYPE, PTR
from solir.lower.llvm.loops import Builder, I64, carried_loop, const64, for_range
from solir.lower.llvm.shuffle import interleave, transpose
from solir.lower.schedule import rows_outer
from solir.targets import Target

I1 = ir.IntType(1)
SCRATCH = "solir_scratch"


# A whole panel block of MR <= lanes rows is stored as MR whole vectors, interleaved with
# two-source permutes (vpermt2ps), where there are at least this many lanes; narrower
# vectors transpose a padded square and store overlapping vectors (the AVX2 way: its
# permutes cross 128-bit halves at a cost). On AVX-512 that was 44 shuffles and 16 stores,
# overlapping and line-splitting, per 16 x 6 block, against about 30 shuffles and 6 stores.
INTERLEAVE_LANES = 16
PACK_B_AHEAD = 4     # rows of B prefetched ahead while packing it (_pack_b_rows)
PREFETCH_A = 2048    # bytes of a prepacked A panel the microkernel prefetches ahead
PREFETCH_B = 2       # lines of B's next block a full tile prefetches per 4 k steps


def scratch(llmod: ir.Module, b: ir.IRBuilder, nbytes: int) -> ir.Value:
    """The calling thread's scratch memory from the runtime (solir_scratch), `nbytes` long."""
    fn = llmod.globals.get(SCRATCH) or ir.Function(llmod, ir.FunctionType(PTR, [I64]), SCRATCH)
    return b.call(fn, [const64(nbytes)], name="scratch")


def matmul_units(op: Op) -> int:
    a = op.attrs
    batch, m, n = c_shape(op)
    return batch * -(-(-(-m // a["mc"])) // a["mg"]) * -(-n // a["nc"])


def emit_matmul(llmod: ir.Module, op: Op, target: Target, name: str) -> ir.Function:
    return _MatmulEmitter(llmod, op, target, name).emit()


def matmul_plan(op: Op, target: Target) -> str:
    """How the emitter will compute `op`, in one line (`solir show --stage loops`): the
    register tile, where A comes from, and how the last rows and columns are done."""
    return _MatmulEmitter(ir.Module(), op, target, "plan").plan()


class _MatmulEmitter:
    def __init__(self, llmod: ir.Module, op: Op, target: Target, name: str):
        self.llmod, self.op, self.target, self.name = llmod, op, target, name
        a = op.attrs
        A, B = op.operands[:2]
        self.epi = op.regions[0] if op.regions else None
        # epilogue operand k's element for C(b, i, j): ptr_k + cb b + cm i + cn j + c0
        self.epi_coeffs = [(e.coeffs[0], e.coeffs[1], e.coeffs[2], e.const)
                           for e in (m.exprs[0] for m in (a.get("epilogue_maps") or ()))]
        # blocked (NCHWc, solir/ir/ops/nchwc.py): A is [B, K/L, M, L] and C [B, N/L, M, L],
        # L = `blocked` channels per block: A(i, p) at (p/L) M L + i L + p%L, C(i, j) likewise
        self.blk = int(a.get("blocked") or 0)
        self.batch, self.M, self.N = c_shape(op)
        self.blk_stride = self.M * self.blk         # from one channel block to the next
        self.ta, self.tb = bool(a.get("trans_a")), bool(a.get("trans_b"))
        self.a_packed, self.b_packed = bool(a.get("a_packed")), bool(a.get("b_packed"))
        self.patches = tuple(int(v) for v in a["patches"]) if a.get("patches") else None
        if self.a_packed or self.b_packed:
            self.K = int(a["k"])
        elif self.blk:
            self.K = A.type.shape[1] * A.type.shape[3]
        else:
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
        def batch_stride(t: TensorType, packed: bool, size: int) -> int:
            """0 for an operand shared by the batch; packed ones are [packed] or [batch, packed]."""
            if packed:
                return t.shape[1] if t.rank == 2 and t.shape[0] > 1 else 0
            return 0 if t.shape[0] == 1 else size
        self.a_bs = batch_stride(A.type, self.a_packed, M * K)
        self.a_is, self.a_ps = (1, M) if self.ta else (K, 1)
        self.b_bs = batch_stride(B.type, self.b_packed, K * N)
        if self.patches:                  # B is the image [batch, C, H, W]
            self.image = tuple(B.type.shape[1:])
            self.b_bs = 0 if B.type.shape[0] == 1 else int(np.prod(self.image))
        self.b_ps, self.b_js = (1, K) if self.tb else (N, 1)
        # shared helpers are solir.mm.*; a matmul with an epilogue runs a tile function and a
        # full-tile microkernel with the epilogue compiled in, shared by every matmul of the
        # module with the same epilogue (its ops, which operands are read along the columns),
        # blocking and dtype: a ResNet's twenty convolutions have three. An operand's row
        # stride is an argument.
        what = name.split(".", 2)[-1]          # the fused ops, as in the kernel's name
        self.mcp = -(-self.mc // self.mr) * self.mr       # blocks padded to whole panels
        self.ncp = -(-self.nc // self.nr) * self.nr
        # the heights of this product's last row tiles (M and MC are known): a full-width one
        # runs a microkernel of that height straight into C (a 64-row product's last tile has
        # 4 rows: no scratch tile, no element-by-element copy through the epilogue). The
        # functions that choose among them (block, tile) are named after them; the
        # microkernels they call are shared by every product of the blocking (or epilogue).
        self.heights = tuple(sorted({min(M - i0, self.mc) % self.mr
                                     for i0 in range(0, M, self.mc)} - {0}))
        # ... and its last column panel's width, when column_strip computes it (the block and
        # tile functions that call it are named after it too)
        self.last_cols = N % self.nr
        self.strip_w = self.last_cols if self.lanes > 1 and 0 < self.last_cols < self.mr else 0
        # the order of a block's tiles (schedule.rows_outer): the microkernels prefetch the
        # next tile's C, and the functions running the tiles are named after it too
        self.rows_outer = rows_outer(target, self.size, self.nr, self.kc)
        self.o_tag = ".ro" if self.rows_outer else ""
        # ... and, rows outer, each A panel is packed (in L1) just before its row of tiles,
        # which prefetch the next one's rows: packing a whole A block up front waited on
        # memory (rows a power-of-two stride apart, 16 lines each), with nothing to overlap
        self.jit_a = self.rows_outer and not self.a_packed and not self.direct_a()
        self.a_tag = ".ja" if self.jit_a else ""
        # ... and a prepacked A comes from memory or L3 (weights, read once per call; where N
        # is a few tiles wide, a panel is read by one or two tiles only, nothing to hide the
        # misses behind): the microkernel prefetches it ahead along k (".pa"). For every
        # prepacked A: only where a panel meets at most two tiles was slower for ResNet-18
        # (session 23); the same for a prepacked B read by one row of tiles (a classifier's
        # weights, M = 1) made no difference.
        self.prefetch_a = self.a_packed
        # ... and a prepacked B whose rows all fit one row block (a 7x7 or 14x14 pointwise
        # conv's weights, 49-196 rows): each block's first row of tiles would read it from L3
        # at demand, faster than L3 delivers it, with no other work to overlap. The full tiles
        # prefetch the next block into L2 instead, PREFETCH_B lines per 4 k steps each, in the
        # order they run, until the block is asked for (".pb"). Every rows-outer full-tile
        # microkernel takes the pointer and a count of lines (0: none), so that the products
        # with and without share one (two sets cost MobileNet-v1 more compile). Not
        # where the tiles would not cover the next block (M < 4 MR: a pure stream).
        self.pf_b = False
        if self.b_packed and self.rows_outer and M <= self.mc and (K > self.kc or N > self.nc):
            ncb = min(self.nc, N)
            tiles = (M // self.mr) * (ncb // self.nr)
            self.pf_b = tiles * self.kc * PREFETCH_B // 4 >= self.kc * ncb * self.size // 64
        # A read in place: by rows (.da), or by channel blocks (.db: a 6-row panel of a block
        # is 6 consecutive lines); C by channel blocks: `ldc` is then the stride of C's
        # vector columns (M L) and rows are L apart
        self.d_tag = ".db" if self.blk else ".da"
        self.tile_ldc = self.mr * self.blk if self.blk else self.nr    # the scratch tile's
        self.h_tag = ("".join(f".h{h}" for h in self.heights)
                      + (f".c{self.strip_w}" if self.strip_w else "") + self.o_tag
                      + (".pa" if self.prefetch_a else "")
                      + (".pb" if self.pf_b else ""))
        self.prefix = f"solir.mm.{what}.{self._epilogue_tag()}." if self.epi else "solir.mm."

    def _epilogue_tag(self) -> str:
        import hashlib
        from solir.ir.printer import Namer, Printer
        assert self.epi is not None
        p, namer = Printer(), Namer()
        for k, a in enumerate(self.epi.args):   # named by position, not by the source's names
            namer.names[a] = f"a{k}"
        p.block_ops(self.epi, namer, 0)
        key = "\n".join(p.lines) + repr((tuple(cn for _, _, cn, _ in self.epi_coeffs),
                                          self.K > self.kc, self.mr, self.nr, str(self.dtype)))
        return hashlib.sha1(key.encode()).hexdigest()[:10]

    def plan(self) -> str:
        direct = self.direct_a()
        source = ("A prepacked at compile time, prefetched ahead along k" if self.a_packed
                  else "A read in place" if direct
                  else "A packed a panel at a time, before its row of tiles" if self.jit_a
                  else "A packed per block")
        parts = [f"{self.mr}x{self.nr} register tiles", source]
        if self.rows_outer:
            parts.append("each A panel against the whole B block (rows outer)")
        if self.pf_b:
            parts.append("B's next block prefetched into L2 by this block's tiles")
        if self.heights:
            parts.append("last rows: " + ", ".join(f"{h}-row" for h in self.heights) + " microkernel")
        w = self.last_cols
        if w:
            how = ("vectors along M" if self.strip_w and not direct
                   else f"{-(-w // self.lanes)}-vector microkernel")
            parts.append(f"last {w} column{'s' if w > 1 else ''}: {how}")
        return "; ".join(parts)

    def direct_a(self) -> bool:
        """Read A in place instead of packing it: when its rows are contiguous along k and all
        of A stays in half of L2 (a small product, where packing A is a visible share of the
        time). Large A is packed: its rows, a power-of-two stride apart, would fight over
        the same cache sets."""
        if self.blk:
            return True
        return (not self.a_packed and not self.ta and self.lanes > 1
                and self.M * self.K * self.size <= self.target.l2_kib * 1024 // 2)

    def a_buffer_elems(self) -> int:
        """A's packing buffer in the scratch: a whole MC x KC block, or one MR x KC panel
        where the block packs a panel at a time (jit_a)."""
        return (self.mr if self.jit_a else self.mcp) * self.kc

    def scratch_elems(self) -> int:
        return self.kc * self.ncp + self.a_buffer_elems() + self.mr * self.nr

    # -- helpers -------------------------------------------------------------------------------------
    def smin(self, b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
        return ElementEmitter(self.llmod, b, 1).intrinsic("smin", [x, y])

    def gep(self, b: ir.IRBuilder, ptr: ir.Value, off: ir.Value) -> ir.Value:
        return b.gep(ptr, [off], source_etype=self.ety, inbounds=True)

    def c_off(self, b: ir.IRBuilder, ldc: ir.Value, i: ir.Value, j: ir.Value | int) -> ir.Value:
        """The offset of C(i, j) from a tile's C pointer: i ldc + j, or by channel blocks
        i L + (j / L) ldc + j % L (`ldc` then the vector columns' stride)."""
        if not self.blk:
            return b.add(b.mul(i, ldc), j if isinstance(j, ir.Value) else const64(j))
        L = self.blk
        if isinstance(j, int):
            return b.add(b.add(b.mul(i, const64(L)), b.mul(const64(j // L), ldc)), const64(j % L))
        return b.add(b.add(b.mul(i, const64(L)), b.mul(b.sdiv(j, const64(L)), ldc)),
                     b.srem(j, const64(L)))

    # -- the microkernel ---------------------------------------------------------------------------
    def microkernel(self, direct: bool = False, vectors: int | None = None,
                    height: int | None = None, epilogue: bool = False) -> ir.Function:
        """void micro(i64 k, ptr ap, ptr bp, ptr c, i64 ldc, i1 accumulate), A from its packed
        panel; direct: micro.da(..., i64 lda, i64 rows), A read in place, row i at
        ap + min(i, rows - 1) lda (rows past the edge repeat the last one; their results
        land in the edge tile's scratch and are dropped). `vectors` < nv: a narrower tile of
        the first `vectors` vectors of each NR-wide B panel row, for the last columns.
        `height` < mr: only the first `height` rows of the MR-row panel, for the last rows
        (a 49-row product's last tile has one). `epilogue`: the last K block's full tile,
        micro.epi(..., ptr operand_0, ...) storing epilogue(C + tile) (C + only when K is
        split into blocks), each operand pointer at the tile's first row and column, then
        each operand's row stride."""
        # rows outer, the full tile prefetches its share of B's next block: `pf_lines` lines
        # from `pf` (self.pf_b)
        takes_pf = self._takes_prefetch(vectors, height)
        extra = ([I64, I64] if direct else []) + ([PTR, I64] if takes_pf else [])
        epi = [PTR] * len(self.epi_coeffs) + [I64] * len(self.epi_coeffs) if epilogue else []
        fty = ir.FunctionType(ir.VoidType(), [I64, PTR, PTR, PTR, I64, I1] + extra + epi)
        tag = "f64" if self.size == 8 else "f32"
        nv = self.nv if vectors is None else vectors
        width = f"{nv * self.lanes}of{self.nr}" if nv != self.nv else f"{self.nr}"
        mr = self.mr if height is None else height
        tall = f"{mr}of{self.mr}" if mr != self.mr else f"{mr}"
        prefix = self.prefix if epilogue else "solir.mm."
        pa = ".pa" if self.prefetch_a and not direct else ""
        name = f"{prefix}micro{tall}x{width}{self.d_tag if direct else ''}{pa}{self.o_tag}.{tag}x{self.lanes}"
        if name in self.llmod.globals:          # one per blocking and dtype in a module
            return self.llmod.globals[name]
        fn = ir.Function(self.llmod, fty, name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        k, ap, bp, c, ldc, accumulate = fn.args[:6]
        for arg, nm in zip(fn.args, ("k", "ap", "bp", "c", "ldc", "accumulate")
                           + (("lda", "rows") if direct else ()) + (("pf", "pf_lines") if takes_pf else ())):
            arg.name = nm
        pf, pf_lines = fn.args[8 if direct else 6:][:2] if takes_pf else (None, None)
        b = Builder(fn.append_basic_block("entry"))
        if direct:
            lda, rows = fn.args[6:8]
            last = b.sub(rows, const64(1))
            row = [self.smin(b, const64(i), last) for i in range(mr)]
            # rows lda apart; by channel blocks, row i's offset i L inside each block (the
            # blocks lda apart)
            a_rows = ([b.mul(r, const64(self.blk)) for r in row] if self.blk
                      else [self.gep(b, ap, b.mul(r, lda)) for r in row])
        lanes, nr = self.lanes, self.nr
        zero = ir.Constant(self.vty, [0.0] * lanes) if lanes > 1 else ir.Constant(self.ety, 0.0)
        e = ElementEmitter(self.llmod, b, lanes)     # llvm.fmuladd: an FMA where there is one
        valign = self.size * lanes if (nr * self.size) % (self.size * lanes) == 0 else self.size
        # C's tiles are read (accumulate) and written only after the k loop: ask for the lines
        # of the block's next tile (down, or right where the rows are outer) now, so they
        # arrive while this tile's and that one's FMAs run instead of stalling the
        # write-back. This tile's own would come too late where K is short (a 32-deep
        # pointwise conv writes a new line every 32 FMAs). Past the block's edge they are
        # the next block's, or nothing's (a prefetch never faults).
        for i in range(mr):
            for off in range(0, nv * lanes, max(1, 64 // self.size)):
                at = (self.c_off(b, ldc, const64(i), nr + off) if self.rows_outer
                      else self.c_off(b, ldc, const64(i + self.mr), off))
                e.prefetch(b.gep(c, [at], source_etype=self.ety), write=True)

        def step(p: ir.Value, acc: list[ir.Value], a_block: ir.Value | None = None,
                 u: int = 0) -> list[ir.Value]:
            bvs = [b.load(self.gep(b, bp, b.add(b.mul(p, const64(nr)), const64(v * lanes))),
                          typ=self.vty, align=valign) for v in range(nv)]
            out = list(acc)
            for i in range(mr):
                addr = (self.gep(b, a_block, b.add(a_rows[i], const64(u))) if a_block is not None
                        else self.gep(b, a_rows[i], p) if direct else
                        self.gep(b, ap, b.add(b.mul(p, const64(self.mr)), const64(i))))
                a = b.load(addr, typ=self.ety, align=self.size)
                av = e.splat(a)
                for v in range(nv):
                    out[i * nv + v] = e.intrinsic("fmuladd", [av, bvs[v], out[i * nv + v]])
            return out

        unroll = 4

        # a prepacked A streams in (self.prefetch_a): ask for its panel's lines PREFETCH_A
        # bytes ahead, one per line that an unrolled step reads
        ahead = -(-PREFETCH_A // (self.mr * self.size)) if self.prefetch_a and not direct else 0

        def prefetch_b(p: ir.Value, steps: int) -> None:
            """B's next block's lines p PREFETCH_B / 4 .., PREFETCH_B per 4 k steps, for the
            `steps` steps from k = p, at their head (spread between the steps, it was slower),
            while any of the pf_lines are left (a branch, not a microkernel without them)."""
            if pf is not None:
                first = b.sdiv(b.mul(p, const64(PREFETCH_B)), const64(4))
                with b.if_then(b.icmp_signed("<", first, pf_lines)):
                    for t in range(PREFETCH_B * steps // 4):
                        e.prefetch(b.gep(pf, [b.mul(b.add(first, const64(t)), const64(64))],
                                         source_etype=ir.IntType(8)), locality=2)

        def unrolled(p: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            if ahead:
                at = b.mul(b.add(p, const64(ahead)), const64(self.mr))
                for off in range(0, unroll * self.mr * self.size, 64):
                    e.prefetch(self.gep(b, ap, b.add(at, const64(off // self.size))))
            prefetch_b(p, unroll)
            for u in range(unroll):
                acc = step(b.add(p, const64(u)), acc)
            return acc

        def channel_block(q: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            a_block = self.gep(b, ap, b.mul(q, lda))      # k steps q L .. q L + L - 1
            prefetch_b(b.mul(q, const64(self.blk)), self.blk)
            for u in range(self.blk):
                acc = step(b.add(b.mul(q, const64(self.blk)), const64(u)), acc, a_block, u)
            return acc
        if direct and self.blk:      # k is a whole number of channel blocks
            acc = carried_loop(b, const64(0), b.sdiv(k, const64(self.blk)), 1,
                               [zero] * (mr * nv), channel_block, "kb")
        else:
            acc = carried_loop(b, const64(0), k, unroll, [zero] * (mr * nv), unrolled, "k4")
            # the remainder: k - k % unroll .. k
            rest = b.sub(k, b.srem(k, const64(unroll)))
            acc = carried_loop(b, rest, k, 1, acc, step, "k1")

        # write back: C (+)= acc; the last K block's through the epilogue
        if epilogue:
            n = len(self.epi_coeffs)
            ptrs, rows = list(fn.args[len(fn.args) - 2 * n:]), list(fn.args[len(fn.args) - n:])
            self._store_tile(b, c, ldc, acc, nv, add=self.K > self.kc, epi=(ptrs[:n], rows))
        else:
            with b.if_else(accumulate) as (then, otherwise):
                with then:
                    self._store_tile(b, c, ldc, acc, nv, add=True)
                with otherwise:
                    self._store_tile(b, c, ldc, acc, nv, add=False)
        b.ret_void()
        return fn

    def _store_tile(self, b: ir.IRBuilder, c: ir.Value, ldc: ir.Value, acc: list[ir.Value],
                    nv: int, add: bool,
                    epi: tuple[list[ir.Value], list[ir.Value]] | None = None) -> None:
        e = ElementEmitter(self.llmod, b, self.lanes)
        for i in range(len(acc) // nv):
            for v in range(nv):
                ptr = self.gep(b, c, self.c_off(b, ldc, const64(i), v * self.lanes))
                val = acc[i * nv + v]
                if add:
                    old = b.load(ptr, typ=self.vty, align=self.size)
                    val = b.fadd(old, val)
                if epi is not None:
                    val = self.epilogue(e, val, epi, const64(i), const64(v * self.lanes))
                b.store(val, ptr, align=self.size)

    def epilogue(self, e: ElementEmitter, val: ir.Value,
                 epi: tuple[list[ir.Value], list[ir.Value]], i: ir.Value, j: ir.Value) -> ir.Value:
        """The epilogue region on C's element(s) at row i, column j (of the tile whose
        operand pointers and row strides are `epi`): `e.lanes` consecutive columns at once."""
        b = e.b
        assert self.epi is not None
        args = [val]
        for ptr, cm, (_, _, cn, _) in zip(*epi, self.epi_coeffs):
            off = b.add(b.mul(i, cm), b.mul(j, const64(cn)))
            addr = self.gep(b, ptr, off)
            if cn and e.lanes > 1:
                args.append(b.load(addr, typ=ir.VectorType(self.ety, e.lanes), align=self.size))
            else:
                args.append(e.splat(b.load(addr, typ=self.ety, align=self.size)))
        env = dict(zip(self.epi.args, args))
        for bop in self.epi.ops[:-1]:
            if bop.name == "tensor.constant":
                value = bop.attrs["value"]
                env[bop.results[0]] = e.const(bop.results[0].type.dtype, value.item())
            else:
                env[bop.results[0]] = bop.opdef.emit(e, bop, [env[x] for x in bop.operands])
        return env[self.epi.ops[-1].operands[0]]

    # -- a narrow last column panel ------------------------------------------------------------------
    def column_strip(self, direct: bool) -> ir.Function | None:
        """cols(k, ap, bp, tile): the product's last column panel, when it has fewer columns
        w than the tile has rows (a 7x7 image's 49 columns leave 1 of 16, 196 leave 4), with
        its vectors along M instead: per k step, a vector of the A panel's MR rows times each
        column's B element. The one-vector microkernel spent MR vector FMAs per k step on
        it, w/lanes of their lanes used (1/8 for w = 1); this spends w, MR/lanes used, in
        up to four chains of partial sums along k (one chain would wait on each FMA's
        latency). Rows go to the scratch tile (MR x NR, row stride NR), copied out as any
        edge tile's. None where it does not apply: A read in place (its rows are not
        contiguous along M), scalar code, a last panel that is full or at least MR wide."""
        w = self.strip_w
        if direct or not w:
            return None
        mr, nr, lanes = self.mr, self.nr, self.lanes
        tag = "f64" if self.size == 8 else "f32"
        name = f"solir.mm.cols{mr}x{w}of{nr}.{tag}x{lanes}"
        if name in self.llmod.globals:
            return self.llmod.globals[name]
        fn = ir.Function(self.llmod, ir.FunctionType(ir.VoidType(), [I64, PTR, PTR, PTR]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        k, ap, bp, tile = fn.args
        for arg, nm in zip(fn.args, ("k", "ap", "bp", "tile")):
            arg.name = nm
        b = Builder(fn.append_basic_block("entry"))
        e = ElementEmitter(self.llmod, b, lanes)
        nvec = -(-mr // lanes)                      # vectors per MR rows
        tail = mr - (nvec - 1) * lanes              # rows in the last one
        zero = ir.Constant(self.vty, [0.0] * lanes)
        # the last vector's lanes past MR belong to the next k steps, or at the last
        # `masked` steps would be past the packed panel's end (16 lanes over 6 rows reach
        # two steps on: a prepacked A's last panel ends its array, and a page may end
        # there): those steps' loads are masked (a masked load every step cost as much as
        # the FMAs)
        mask = (ir.Constant(ir.VectorType(ir.IntType(1), lanes), [1] * tail + [0] * (lanes - tail))
                if tail < lanes else None)
        masked = -(-nvec * lanes // mr) - 1
        per = w * nvec
        chains = max(1, min(4, 8 // per))

        def step(p: ir.Value, acc: list[ir.Value], last: bool = False) -> list[ir.Value]:
            avs = []
            for v in range(nvec):
                addr = self.gep(b, ap, b.add(b.mul(p, const64(mr)), const64(v * lanes)))
                avs.append(e.masked_load(self.vty, addr, self.size, mask, zero)
                           if last and v == nvec - 1 and mask is not None
                           else b.load(addr, typ=self.vty, align=self.size))
            out = list(acc)
            for j in range(w):
                bj = e.splat(b.load(self.gep(b, bp, b.add(b.mul(p, const64(nr)), const64(j))),
                                    typ=self.ety, align=self.size))
                for v in range(nvec):
                    out[j * nvec + v] = e.intrinsic("fmuladd", [avs[v], bj, out[j * nvec + v]])
            return out

        def chained(p: ir.Value, acc: list[ir.Value]) -> list[ir.Value]:
            return [x for u in range(chains)
                    for x in step(b.add(p, const64(u)), acc[u * per:(u + 1) * per])]
        # steps 0 .. k-1-masked, then the last ones (all of them when k is that short)
        k1 = ElementEmitter(self.llmod, b, 1).intrinsic("smax", [b.sub(k, const64(masked)),
                                                               const64(0)])
        acc = carried_loop(b, const64(0), k1, chains, [zero] * (chains * per), chained, "k")
        rest = b.sub(k1, b.srem(k1, const64(chains)))
        first = carried_loop(b, rest, k1, 1, acc[:per], step, "k1")
        first = carried_loop(b, k1, k, 1, first, lambda p, a: step(p, a, last=True), "klast")
        sums = [functools.reduce(b.fadd, [first[x]] + [acc[u * per + x] for u in range(1, chains)])
                for x in range(per)]
        for j in range(w):
            for r in range(mr):
                val = b.extract_element(sums[j * nvec + r // lanes], ir.Constant(ir.IntType(32), r % lanes))
                b.store(val, self.gep(b, tile, const64(r * nr + j)), align=self.size)
        b.ret_void()
        return fn

    # -- shared helper functions ------------------------------------------------------------------
    # Packing and the tile loop take their strides and sizes as arguments, so one copy of each
    # serves every matmul in a module with the same blocking and dtype (a ResNet has dozens):
    # compile time grows with the number of distinct blockings, not of matmuls. They are
    # `noinline` for the same reason.
    def _helper(self, name: str, args: list[tuple[str, ir.Type]],
                body: Callable[[ir.IRBuilder, list[ir.Value]], None]) -> ir.Function:
        tag = "f64" if self.size == 8 else "f32"
        full = f"solir.mm.{name}.{tag}x{self.lanes}"
        fn = self.llmod.globals.get(full)
        if fn is not None:
            return fn
        fn = ir.Function(self.llmod, ir.FunctionType(ir.VoidType(), [t for _, t in args]), full)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        for a, (nm, _) in zip(fn.args, args):
            a.name = nm
        b = Builder(fn.append_basic_block("entry"))
        body(b, list(fn.args))
        b.ret_void()
        return fn

    def pack_b_fn(self) -> ir.Function:
        """packb(src = &B(b, p0, j0), dst, kcur, ncur, s_k, s_j): Bp[jp][p][jj] = src[p s_k +
        (jp nr + jj) s_j], zero beyond ncur. A row-major B (s_j = 1) is read row by row
        (sequential, so the prefetchers keep up) copying whole vectors; otherwise panel by
        panel."""
        nr = self.nr

        def body(b: ir.IRBuilder, a: list[ir.Value]) -> None:
            src, dst, kcur, ncur, s_k, s_j = a
            def panels() -> None:
                with for_range(b, const64(0), ncur, nr, name="pbj") as jr:
                    width = self.smin(b, b.sub(ncur, jr), const64(nr))
                    self._copy_strided(b, self.gep(b, src, b.mul(jr, s_j)),
                                       self.gep(b, dst, b.mul(jr, kcur)), width, const64(nr),
                                       kcur, s_j, s_k, nr, "pbs")
            if self.lanes == 1:
                panels()
                return
            with b.if_else(b.icmp_signed("==", s_j, const64(1))) as (then, otherwise):
                with then:
                    self._pack_b_rows(b, src, dst, kcur, ncur, s_k)
                with otherwise:
                    panels()
        return self._helper(f"packb{nr}", [("src", PTR), ("dst", PTR), ("kcur", I64),
                                            ("ncur", I64), ("s_k", I64), ("s_j", I64)], body)

    def _pack_b_rows(self, b: ir.IRBuilder, src: ir.Value, bp: ir.Value, kcur: ir.Value,
                     ncur: ir.Value, s_k: ir.Value) -> None:
        nr = self.nr
        full_end = b.mul(b.sdiv(ncur, const64(nr)), const64(nr))
        zero = ir.Constant(self.vty, [0.0] * self.lanes)
        i64v = ir.VectorType(I64, self.lanes)
        e = ElementEmitter(self.llmod, b, self.lanes)
        with for_range(b, const64(0), kcur, 1, name="pbp") as p:
            row = b.mul(p, s_k)
            # B's rows come from L3 (weights passed as arguments, read once per call), and
            # the stores to NC / NR panels in turn keep the prefetchers from seeing the
            # stream: ask for each line PACK_B_AHEAD rows early (a hint: past the end of B
            # it fetches nothing and cannot fault)
            later = b.mul(b.add(p, const64(PACK_B_AHEAD)), s_k)
            with for_range(b, const64(0), full_end, nr, name="pbj") as jr:
                dst = b.add(b.mul(jr, kcur), b.mul(p, const64(nr)))
                e.prefetch(self.gep(b, src, b.add(later, jr)))
                for v in range(self.nv):
                    x = b.load(self.gep(b, src, b.add(b.add(row, jr), const64(v * self.lanes))),
                               typ=self.vty, align=self.size)
                    b.store(x, self.gep(b, bp, b.add(dst, const64(v * self.lanes))), align=self.size)
            # the last, partial panel: masked loads (lanes beyond ncur are zero and never
            # read), so no element loop (whose unrolled, unswitched copies made LLVM's loop
            # strength reduction a third of a ResNet's code generation time)
            with b.if_then(b.icmp_signed("<", full_end, ncur)):
                dst = b.add(b.mul(full_end, kcur), b.mul(p, const64(nr)))
                left = e.splat(b.sub(ncur, full_end))
                for v in range(self.nv):
                    lane = ir.Constant(i64v, [v * self.lanes + t for t in range(self.lanes)])
                    x = e.masked_load(self.vty, self.gep(b, src, b.add(b.add(row, full_end),
                                                                    const64(v * self.lanes))),
                                      self.size, b.icmp_signed("<", lane, left), zero)
                    b.store(x, self.gep(b, bp, b.add(dst, const64(v * self.lanes))), align=self.size)

    def pack_patches_fn(self) -> ir.Function:
        """packpatches(src = the image of this batch element, dst, p0, kcur, j0, ncur): B panels
        of the im2col matrix, gathered from the image. Row r = p0 + p of the matrix is
        (c, kh, kw); column j is the output position (oh, ow) = divmod(j, OW), which reads
        X[c, oh*SH + kh*DH - PH, ow*SW + kw*DW - PW] (zero outside). For each vector of `lanes`
        columns, the lanes that fall in one output row read contiguous image elements (SW = 1),
        so a vector is one masked load per output row it spans; masked-off lanes (padding,
        other rows, beyond ncur) are zero and never touch memory. With SW = 2 (strided convs:
        a ResNet's stem and its downsampling layers) a row's lanes read every other element:
        two masked loads of the even ones, then a shuffle (_strided_lanes). One function per
        conv geometry: its sizes are constants, so the divisions are multiplications."""
        kh_, kw_, sh, sw, ph, pw, dh, dw, oh_, ow_ = self.patches
        c_, h_, w_ = self.image
        nr = self.nr
        lanes = self.lanes if self.lanes > 1 else nr     # vectors even where the target has none
        geo = "_".join(map(str, (c_, h_, w_) + self.patches))

        def body(b: ir.IRBuilder, a: list[ir.Value]) -> None:
            src, dst, p0, kcur, j0, ncur = a
            i64v = ir.VectorType(I64, lanes)
            vty = ir.VectorType(self.ety, lanes)
            e = ElementEmitter(self.llmod, b, lanes)
            iota = ir.Constant(i64v, list(range(lanes)))
            splat = lambda x: e.splat(x)                         # noqa: E731
            vconst = lambda x: ir.Constant(i64v, [x] * lanes)    # noqa: E731
            zero = ir.Constant(vty, [0.0] * lanes)
            khw = kh_ * kw_
            rows_per_vec = 1 + -(-(lanes - 1) // ow_)            # output rows one vector can span
            npad = b.mul(b.sdiv(b.add(ncur, const64(nr - 1)), const64(nr)), const64(nr))
            limit = splat(b.add(j0, ncur))
            p1 = b.add(p0, kcur)
            with for_range(b, const64(0), npad, lanes, name="ppj") as jv:
                s0 = b.add(j0, jv)
                oh0, ow0 = b.sdiv(s0, const64(ow_)), b.srem(s0, const64(ow_))
                in_block = b.icmp_signed("<", b.add(splat(s0), iota), limit)
                panel, within = b.sdiv(jv, const64(nr)), b.srem(jv, const64(nr))
                out0 = b.add(b.mul(panel, b.mul(kcur, const64(nr))), within)
                # the masks and offsets depend on the window position (kh, kw), not on the
                # channel: computed once here, used for every channel below
                with for_range(b, const64(0), const64(khw), 1, name="ppw") as w:
                    dy = b.sub(b.mul(b.sdiv(w, const64(kw_)), const64(dh)), const64(ph))
                    dx = b.sub(b.mul(b.srem(w, const64(kw_)), const64(dw)), const64(pw))
                    masks, offs = [], []
                    for rr in range(rows_per_vec):
                        iy = b.add(b.mul(b.add(oh0, const64(rr)), const64(sh)), dy)
                        row_ok = b.and_(b.icmp_signed(">=", iy, const64(0)),
                                        b.icmp_signed("<", iy, const64(h_)))
                        ow_lane = b.sub(b.add(splat(ow0), iota), vconst(rr * ow_))
                        ix = b.add(splat(dx), b.mul(ow_lane, vconst(sw)))
                        m = b.and_(b.icmp_signed(">=", ow_lane, vconst(0)),
                                   b.icmp_signed("<", ow_lane, vconst(ow_)))
                        m = b.and_(m, b.and_(b.icmp_signed(">=", ix, vconst(0)),
                                             b.icmp_signed("<", ix, vconst(w_))))
                        masks.append(b.and_(b.and_(m, in_block), e.splat(row_ok)))
                        # lane 0's offset in the plane; lanes outside the row are masked off
                        lane0 = b.mul(b.sub(ow0, const64(rr * ow_)), const64(sw))
                        offs.append(b.add(b.mul(b.select(row_ok, iy, const64(0)), const64(w_)),
                                          b.add(lane0, dx)))
                    # channels whose row r = c*khw + w lies in [p0, p1)
                    c_lo = b.sdiv(b.add(b.sub(p0, w), const64(khw - 1)), const64(khw))
                    c_hi = b.sdiv(b.add(b.sub(p1, w), const64(khw - 1)), const64(khw))
                    with for_range(b, c_lo, c_hi, 1, name="ppc") as c:
                        plane = b.mul(c, const64(h_ * w_))
                        acc = zero
                        for m, off in zip(masks, offs):
                            ptr = b.gep(src, [b.add(plane, off)], source_etype=self.ety)
                            if sw == 1:
                                acc = e.masked_load(vty, ptr, self.size, m, acc)
                            else:
                                acc = b.select(m, self._strided_lanes(e, ptr, m, vty), acc)
                        p = b.sub(b.add(b.mul(c, const64(khw)), w), p0)
                        out = b.add(out0, b.mul(p, const64(nr)))
                        b.store(acc, self.gep(b, dst, out), align=self.size)
        return self._helper(f"packpatches{nr}.{geo}", [
            ("src", PTR), ("dst", PTR), ("p0", I64), ("kcur", I64), ("j0", I64), ("ncur", I64)],
            body)

    def _strided_lanes(self, e: ElementEmitter, ptr: ir.Value, m: ir.Value,
                       vty: ir.VectorType) -> ir.Value:
        """Lane t = ptr[2 t] where m[t] (SW = 2): the two vectors the lanes span, each a
        masked load of its even elements only (odd ones, and lanes off m, never touch
        memory), then the even elements of the pair."""
        b, lanes = e.b, vty.count
        i32 = ir.IntType(32)
        off = ir.Constant(ir.VectorType(ir.IntType(1), lanes), [0] * lanes)
        zero = ir.Constant(vty, [0.0] * lanes)
        halves = []
        for h in range(2):
            idx = [(h * lanes + t) // 2 if t % 2 == 0 else lanes for t in range(lanes)]
            mh = b.shuffle_vector(m, off, ir.Constant(ir.VectorType(i32, lanes), idx))
            at = b.gep(ptr, [const64(h * lanes)], source_etype=self.ety)
            halves.append(e.masked_load(vty, at, self.size, mh, zero))
        evens = ir.Constant(ir.VectorType(i32, lanes), list(range(0, 2 * lanes, 2)))
        return b.shuffle_vector(halves[0], halves[1], evens)

    def pack_a_fn(self) -> ir.Function:
        """packa(src = &A(b, i0, p0), dst, mcur, kcur, s_i, s_k): Ap[ip][p][ii] =
        src[(ip mr + ii) s_i + p s_k], zero beyond mcur."""
        mr = self.mr

        def body(b: ir.IRBuilder, a: list[ir.Value]) -> None:
            src, dst, mcur, kcur, s_i, s_k = a
            with for_range(b, const64(0), mcur, mr, name="pai") as ir_:
                height = self.smin(b, b.sub(mcur, ir_), const64(mr))
                self._copy_strided(b, self.gep(b, src, b.mul(ir_, s_i)), self.gep(b, dst, b.mul(ir_, kcur)),
                                   height, const64(mr), kcur, s_i, s_k, mr, "pas")
        return self._helper(f"packa{mr}", [("src", PTR), ("dst", PTR), ("mcur", I64),
                                           ("kcur", I64), ("s_i", I64), ("s_k", I64)], body)

    def _copy_strided(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, count: ir.Value,
                      full: ir.Value, kcur: ir.Value, s_outer: ir.Value, s_inner: ir.Value,
                      dst_step: int, name: str) -> None:
        """dst[p*dst_step + t] = src[t*s_outer + p*s_inner] for t < count, and 0 for
        count <= t < full (the panel's zero padding). A whole panel (count == dst_step) of
        rows contiguous along k is transposed in registers, `lanes` k-steps at a time; a whole
        panel strided along k copies one k-row at a time with its dst_step reads unrolled;
        anything else goes element by element."""
        if self.lanes == 1:
            self._copy_scalar(b, src, dst, count, full, kcur, s_outer, s_inner, dst_step, name)
            return
        contiguous_k = b.icmp_signed("==", s_inner, const64(1))
        is_whole = b.icmp_signed("==", count, const64(dst_step))
        with b.if_else(b.and_(is_whole, contiguous_k)) as (then, otherwise):
            with then:
                self._transpose_panel(b, src, dst, kcur, s_outer, dst_step, name)
            with otherwise:
                self._copy_scalar(b, src, dst, count, full, kcur, s_outer, s_inner, dst_step, name)

    def _copy_scalar(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, count: ir.Value,
                     full: ir.Value, kcur: ir.Value, s_outer: ir.Value, s_inner: ir.Value,
                     dst_step: int, name: str) -> None:
        whole = b.icmp_signed("==", count, const64(dst_step))
        with b.if_else(whole) as (then, otherwise):
            with then:
                if self.lanes > 1:          # a transposed A: each k-row of the panel is contiguous
                    unit = b.icmp_signed("==", s_outer, const64(1))
                    with b.if_else(unit) as (contiguous, strided):
                        with contiguous:
                            self._copy_rows_unit(b, src, dst, kcur, s_inner, dst_step, name)
                        with strided:
                            self._copy_each(b, src, dst, kcur, s_outer, s_inner, dst_step, name)
                else:
                    self._copy_each(b, src, dst, kcur, s_outer, s_inner, dst_step, name)
            with otherwise:
                zero = ir.Constant(self.ety, 0.0)
                with for_range(b, const64(0), count, 1, name=f"{name}t", unroll=False) as t:
                    self._copy_row(b, src, dst, t, const64(0), kcur, s_outer, s_inner, dst_step,
                                   f"{name}p")
                with for_range(b, count, full, 1, name=f"{name}z", unroll=False) as t:
                    with for_range(b, const64(0), kcur, 1, name=f"{name}zp", vectorize=False,
                                   unroll=False) as p:
                        b.store(zero, self.gep(b, dst, b.add(b.mul(p, const64(dst_step)), t)),
                                align=self.size)

    def _copy_each(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, kcur: ir.Value,
                   s_outer: ir.Value, s_inner: ir.Value, dst_step: int, name: str) -> None:
        """dst[p*dst_step + t] = src[t*s_outer + p*s_inner], element by element: a layout no
        product here packs in practice (strided both ways), kept as two small loops."""
        with for_range(b, const64(0), kcur, 1, name=f"{name}w", unroll=False) as p:
            row = b.mul(p, s_inner)
            out = b.mul(p, const64(dst_step))
            with for_range(b, const64(0), const64(dst_step), 1, name=f"{name}wt",
                           vectorize=False, unroll=False) as t:
                x = b.load(self.gep(b, src, b.add(row, b.mul(t, s_outer))),
                           typ=self.ety, align=self.size)
                b.store(x, self.gep(b, dst, b.add(out, t)), align=self.size)

    def _copy_rows_unit(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, kcur: ir.Value,
                        s_inner: ir.Value, dst_step: int, name: str) -> None:
        """dst[p*dst_step + t] = src[t + p*s_inner]: dst_step contiguous elements per k-step,
        copied as vectors (the last one masked)."""
        e = ElementEmitter(self.llmod, b, self.lanes)
        zero = ir.Constant(self.vty, [0.0] * self.lanes)

        def step(p: ir.Value, last: bool) -> None:
            """One k-row; a partial chunk is stored whole (the next k-row's stores overwrite
            its spare lanes), masked only in the last k-row."""
            row, out = b.mul(p, s_inner), b.mul(p, const64(dst_step))
            for c0 in range(0, dst_step, self.lanes):
                n = min(self.lanes, dst_step - c0)
                sp = self.gep(b, src, b.add(row, const64(c0)))
                dp = self.gep(b, dst, b.add(out, const64(c0)))
                if n == self.lanes:
                    b.store(b.load(sp, typ=self.vty, align=self.size), dp, align=self.size)
                    continue
                mask = ir.Constant(ir.VectorType(ir.IntType(1), self.lanes),
                                   [1] * n + [0] * (self.lanes - n))
                x = e.masked_load(self.vty, sp, self.size, mask, zero)
                if last:
                    e.masked_store(x, dp, self.size, n)
                else:
                    b.store(x, dp, align=self.size)
        last = b.sub(kcur, const64(1))
        with for_range(b, const64(0), last, 1, name=f"{name}u") as p:
            step(p, False)
        with b.if_then(b.icmp_signed(">=", last, const64(0))):
            step(last, True)

    def _copy_row(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, t: ir.Value, p0: ir.Value,
                  p1: ir.Value, s_outer: ir.Value, s_inner: ir.Value, dst_step: int,
                  name: str) -> None:
        """dst[p*dst_step + t] = src[t*s_outer + p*s_inner] for p0 <= p < p1, as scalars (the
        loop vectorizer would make scatters of the strided stores)."""
        row = b.mul(t, s_outer)
        with for_range(b, p0, p1, 1, name=name, vectorize=False, unroll=False) as p:
            x = b.load(self.gep(b, src, b.add(row, b.mul(p, s_inner))), typ=self.ety, align=self.size)
            b.store(x, self.gep(b, dst, b.add(b.mul(p, const64(dst_step)), t)), align=self.size)

    def _transpose_panel(self, b: ir.IRBuilder, src: ir.Value, dst: ir.Value, kcur: ir.Value,
                         s_outer: ir.Value, rows: int, name: str) -> None:
        """dst[p*rows + t] = src[t*s_outer + p] for t < rows, p < kcur: each block of `lanes`
        rows by `lanes` k-steps is loaded as vectors, transposed with shuffles, and stored as
        vectors (masked where the block has fewer rows); with INTERLEAVE_LANES or more lanes
        and rows <= lanes, the rows are interleaved into `rows` whole vectors instead
        (interleave). The last kcur % lanes steps go element by element."""
        lanes = self.lanes
        e = ElementEmitter(self.llmod, b, lanes)
        zero = ir.Constant(self.vty, [0.0] * lanes)
        kv = b.mul(b.sdiv(kcur, const64(lanes)), const64(lanes))
        def interleaved(p: ir.Value) -> None:
            vecs = [b.load(self.gep(b, src, b.add(b.mul(const64(t), s_outer), p)),
                           typ=self.vty, align=self.size) for t in range(rows)]
            for j, v in enumerate(interleave(b, vecs)):
                b.store(v, self.gep(b, dst, b.add(b.mul(p, const64(rows)), const64(j * lanes))),
                        align=self.size)

        def transposed(p: ir.Value) -> None:
            chunks = []
            for c0 in range(0, rows, lanes):
                n = min(lanes, rows - c0)
                vecs = [b.load(self.gep(b, src, b.add(b.mul(const64(c0 + t), s_outer), p)),
                               typ=self.vty, align=self.size) for t in range(n)]
                chunks.append((c0, n, transpose(b, vecs + [zero] * (lanes - n))))
            # The block's lanes x rows elements are contiguous in dst: stored in address order,
            # a partial chunk is stored whole (its spare lanes land where the next store
            # goes); only the block's very last store is masked. (A masked store is slow on
            # AMD's cores: eight of them per block made packing A a sixth of a 512 gemm.)
            for q in range(lanes):
                for c0, n, cols in chunks:
                    ptr = self.gep(b, dst, b.add(b.mul(b.add(p, const64(q)), const64(rows)),
                                                 const64(c0)))
                    if n == lanes or (q, c0) != (lanes - 1, chunks[-1][0]):
                        b.store(cols[q], ptr, align=self.size)
                    else:
                        e.masked_store(cols[q], ptr, self.size, n)

        with for_range(b, const64(0), kv, lanes, name=f"{name}v") as p:
            (interleaved if rows <= lanes and lanes >= INTERLEAVE_LANES else transposed)(p)
        with for_range(b, const64(0), const64(rows), 1, name=f"{name}r", unroll=False) as t:
            self._copy_row(b, src, dst, t, kv, kcur, s_outer, const64(1), rows, f"{name}rp")

    def _block_args(self, direct: bool) -> list[tuple[str, ir.Type]]:
        return ([("ap", PTR), ("bp", PTR), ("c", PTR), ("ldc", I64), ("mcur", I64), ("ncur", I64),
                 ("kcur", I64), ("accumulate", I1), ("ctile", PTR)]
                + ([("lda", I64)] if direct else [])
                + ([("s_i", I64), ("s_k", I64), ("apk", PTR)] if self.jit_a else [])
                + ([("pf", PTR), ("pf_lines", I64)] if self.pf_b else []))

    def block_fn(self, micro: ir.Function, direct: bool = False) -> ir.Function:
        """block(ap, bp, c = &C(b, i0, j0), ldc, mcur, ncur, kcur, accumulate, ctile, [lda],
        [s_i, s_k, apk]): every microkernel tile of a packed A block against the packed B
        block. Edge tiles run the narrowest microkernel covering them (_edge_tile). direct:
        `ap` = &A(b, i0, p0) read in place by micro.da with stride lda. jit_a: `ap` =
        &A(b, i0, p0) with strides s_i, s_k, each panel packed into `apk` before its row of
        tiles. One serves every matmul of a blocking; the last K block of a matmul with an
        epilogue runs its own (epilogue_block_fn)."""
        da = self.d_tag if direct else ""
        return self._helper(f"block{self.mr}x{self.nr}{da}{self.a_tag}{self.h_tag}",
                            self._block_args(direct),
                            lambda b, a: self._tiles(b, a, direct, micro, None))

    def epilogue_block_fn(self, direct: bool) -> ir.Function:
        """block.epi(... as block ..., ctx): the last K block of a matmul with an epilogue,
        every tile through tile_fn; ctx holds the epilogue operands' pointers at the block,
        then their row strides."""
        name = f"{self.prefix}block{self.d_tag if direct else ''}{self.a_tag}{self.h_tag}"
        if name in self.llmod.globals:
            return self.llmod.globals[name]
        args = self._block_args(direct) + [("ctx", PTR)]
        fn = ir.Function(self.llmod, ir.FunctionType(ir.VoidType(), [t for _, t in args]), name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        for arg, (nm, _) in zip(fn.args, args):
            arg.name = nm
        b = Builder(fn.append_basic_block("entry"))
        self._tiles(b, list(fn.args), direct, None, fn.args[-1])
        b.ret_void()
        return fn

    def _tiles(self, b: ir.IRBuilder, a: list[ir.Value], direct: bool, micro: ir.Function | None,
               ctx: ir.Value | None) -> None:
        """The loops over a block's tiles: each through `micro` (and _edge_tile), or through
        tile_fn with the epilogue operands' pointers `ctx`. BLIS order (B panels outer), or
        rows outer; with jit_a, each A panel is packed before its row of tiles, which
        prefetch the next panel's rows into L2 a few lines per tile."""
        mr, nr = self.mr, self.nr
        apk, bp, c, ldc, mcur, ncur, kcur, accumulate, ctile = a[:9]

        def prefetch_from(ir_: ir.Value, jr: ir.Value) -> list[ir.Value]:
            """The full tile (ir, jr)'s share of B's next block (self.pf_b): tile t of the
            block in the order they run fetches lines t S .. (t + 1) S - 1, S = PREFETCH_B KC
            / 4; past the block's end, none (pf_lines = 0); none either where B is not
            prefetched (the rows-outer microkernel takes the arguments anyway)."""
            if not self.pf_b:
                return self._no_prefetch(self.nv)
            pf, pf_lines = a[len(a) - 2:] if ctx is None else a[len(a) - 3:len(a) - 1]
            per_row = b.sdiv(b.add(ncur, const64(nr - 1)), const64(nr))
            t = b.add(b.mul(b.sdiv(ir_, const64(mr)), per_row), b.sdiv(jr, const64(nr)))
            first = b.mul(t, const64(PREFETCH_B * self.kc // 4))
            at = b.gep(pf, [b.mul(first, const64(64))], source_etype=ir.IntType(8))
            left = b.sub(pf_lines, first)
            return [at, b.select(b.icmp_signed(">", left, const64(0)), left, const64(0))]

        def tile(ir_: ir.Value, jr: ir.Value, hm: ir.Value, a_panel: ir.Value) -> None:
            wn = self.smin(b, b.sub(ncur, jr), const64(nr))
            b_panel = self.gep(b, bp, b.mul(jr, kcur))
            more = [a[9], hm] if direct else []
            cptr = self.gep(b, c, self.c_off(b, ldc, ir_, jr))
            pf = prefetch_from(ir_, jr)
            if micro is None:
                assert ctx is not None
                b.call(self.tile_fn(direct), [kcur, a_panel, b_panel, cptr, ldc, accumulate,
                                              a[9] if direct else const64(0), hm, wn, ctile,
                                              ctx, ir_, jr] + pf)
                return
            full = b.and_(b.icmp_signed("==", hm, const64(mr)),
                          b.icmp_signed("==", wn, const64(nr)))
            with b.if_else(full) as (then, otherwise):
                with then:
                    b.call(micro, [kcur, a_panel, b_panel, cptr, ldc, accumulate] + more + pf)
                with otherwise:
                    self._edge_tile(b, direct, hm, wn, [kcur, a_panel, b_panel], more,
                                    cptr, ldc, accumulate, ctile)

        def panel(ir_: ir.Value) -> ir.Value:
            """A's MR-row panel at row ir of the block."""
            if direct and self.blk:    # A in place by channel blocks: rows L apart
                return self.gep(b, apk, b.mul(ir_, const64(self.blk)))
            if direct:                 # A in place: row ir of the block, stride lda
                return self.gep(b, apk, b.mul(ir_, a[9]))
            return self.gep(b, apk, b.mul(ir_, kcur))

        if not self.rows_outer:
            with for_range(b, const64(0), ncur, nr, name="jr") as jr:
                with for_range(b, const64(0), mcur, mr, name="ir") as ir_:
                    tile(ir_, jr, self.smin(b, b.sub(mcur, ir_), const64(mr)), panel(ir_))
            return
        with for_range(b, const64(0), mcur, mr, name="ir") as ir_:
            hm = self.smin(b, b.sub(mcur, ir_), const64(mr))
            if self.jit_a:
                s_i, s_k, buf = a[9:12]
                b.call(self.pack_a_fn(), [self.gep(b, apk, b.mul(ir_, s_i)), buf, hm, kcur,
                                          s_i, s_k])
                a_panel = buf
            else:
                a_panel = panel(ir_)
            with for_range(b, const64(0), ncur, nr, name="jr") as jr:
                if self.jit_a:
                    self._prefetch_next_panel(b, apk, b.add(ir_, const64(mr)), jr, s_i, s_k)
                tile(ir_, jr, hm, a_panel)

    def _prefetch_next_panel(self, b: ir.IRBuilder, src: ir.Value, i_next: ir.Value,
                             jr: ir.Value, s_i: ir.Value, s_k: ir.Value) -> None:
        """Tile jr/NR of a row prefetches its share of the next A panel's source (rows
        i_next.., contiguous along k) into L2: the MR x KC panel's lines, row by row, spread
        over the NC/NR tiles of a row so that they arrive while the tiles run. (A transposed
        A is not prefetched.)"""
        e = ElementEmitter(self.llmod, b, self.lanes)
        per_line = max(1, 64 // self.size)
        lines = self.mr * -(-self.kc // per_line)
        per_tile = min(64, -(-lines // -(-self.nc // self.nr)))
        first = b.mul(b.sdiv(jr, const64(self.nr)), const64(per_tile))
        with b.if_then(b.icmp_signed("==", s_k, const64(1))):
            for q in range(per_tile):
                g = b.add(first, const64(q))
                t, line = b.urem(g, const64(self.mr)), b.udiv(g, const64(self.mr))
                off = b.add(b.mul(b.add(i_next, t), s_i), b.mul(line, const64(per_line)))
                e.prefetch(b.gep(src, [off], source_etype=self.ety), locality=2)

    def _next_b_block(self, b: ir.IRBuilder, bsrc: ir.Value, b_base: ir.Value, u: ir.Value,
                      end: ir.Value, p0: ir.Value, j0: ir.Value, ncur: ir.Value,
                      npad: int) -> list[ir.Value]:
        """Where the block after (p0, j0) of unit u (its batch's B at b_base, rows npad
        wide) starts in the prepacked B, and its length in cache lines (self.pf_b): the
        unit's next K block, else the next unit's first one if this thread runs it, else
        nothing (0 lines). All rows are in one block (M <= MC): a unit is a batch and a
        column block."""
        K, N, kc, nc = self.K, self.N, self.kc, self.nc
        nb = -(-N // nc)
        lines = lambda k, n: b.sdiv(b.mul(b.mul(k, n), const64(self.size)), const64(64))  # noqa: E731
        nxt = b.add(p0, const64(kc))
        kn = self.smin(b, b.sub(const64(K), nxt), const64(kc))
        same = b.add(b_base, b.add(b.mul(nxt, const64(npad)), b.mul(j0, kn)))
        u1 = b.add(u, const64(1))
        j1 = b.mul(b.srem(u1, const64(nb)), const64(nc))
        k0 = const64(min(K, kc))
        after = b.add(b.mul(b.sdiv(u1, const64(nb)), const64(self.b_bs)), b.mul(j1, k0))
        n1 = self.smin(b, b.sub(const64(N), j1), const64(nc))
        in_unit, has_next = b.icmp_signed("<", nxt, const64(K)), b.icmp_signed("<", u1, end)
        off = b.select(in_unit, same, b.select(has_next, after, const64(0)))
        count = b.select(in_unit, lines(kn, ncur),
                         b.select(has_next, lines(k0, n1), const64(0)))
        return [self.gep(b, bsrc, off), count]

    def tile_fn(self, direct: bool) -> ir.Function:
        """tile(k, ap, bp, c, ldc, accumulate, lda, hm, wn, ctile, ctx, i, j): one tile of the
        last K block of a matmul with an epilogue; ctx holds its operands' pointers at the
        block, then their row strides; (i, j) is the tile's place in the block. A full tile
        runs the epilogue microkernel; an edge tile the narrowest shared one into the scratch
        tile, copied out through the epilogue."""
        fty = ir.FunctionType(ir.VoidType(), [I64, PTR, PTR, PTR, I64, I1, I64, I64, I64, PTR,
                                              PTR, I64, I64] + ([PTR, I64] if self.rows_outer else []))
        name = f"{self.prefix}tile{self.d_tag if direct else ''}{self.h_tag}"
        if name in self.llmod.globals:
            return self.llmod.globals[name]
        fn = ir.Function(self.llmod, fty, name)
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        k, ap, bp, c, ldc, accumulate, lda, hm, wn, ctile, ctx, i, j = fn.args[:13]
        pf = list(fn.args[13:])          # where the full tile prefetches from (rows outer)
        b = Builder(fn.append_basic_block("entry"))
        ptrs, rows = [], []
        n_epi = len(self.epi_coeffs)
        for n, (_, _, cn, _) in enumerate(self.epi_coeffs):
            base = b.load(b.gep(ctx, [const64(n)], source_etype=PTR, inbounds=True), typ=PTR)
            cm = b.ptrtoint(b.load(b.gep(ctx, [const64(n_epi + n)], source_etype=PTR,
                                         inbounds=True), typ=PTR), I64)
            ptrs.append(self.gep(b, base, b.add(b.mul(i, cm), b.mul(j, const64(cn)))))
            rows.append(cm)
        more = [lda, hm] if direct else []
        full = b.and_(b.icmp_signed("==", hm, const64(self.mr)),
                      b.icmp_signed("==", wn, const64(self.nr)))
        with b.if_else(full) as (then, otherwise):
            with then:
                b.call(self.microkernel(direct, epilogue=True),
                       [k, ap, bp, c, ldc, accumulate] + more + pf + ptrs + rows)
            with otherwise:
                head = [k, ap, bp, ctile, const64(self.tile_ldc), ir.Constant(I1, 0)]

                def scratch_tile() -> None:
                    self._by_width(b, direct, wn, lambda cols: b.call(cols, [k, ap, bp, ctile]),
                                   lambda v: b.call(self.microkernel(direct, v),
                                                    head + more + self._no_prefetch(v)))
                    self._copy_edge(b, ctile, c, ldc, hm, wn, accumulate, (ptrs, rows))
                self._by_height(b, hm, wn, lambda h: b.call(
                    self.microkernel(direct, None, h, epilogue=True),
                    [k, ap, bp, c, ldc, accumulate] + more + ptrs + rows), scratch_tile)
        b.ret_void()
        return fn

    def _edge_tile(self, b: ir.IRBuilder, direct: bool, hm: ir.Value, wn: ir.Value,
                   head: list[ir.Value], more: list[ir.Value], cptr: ir.Value, ldc: ir.Value,
                   accumulate: ir.Value, ctile: ir.Value) -> None:
        """An edge tile (hm <= MR rows, wn <= NR columns). A full-width one of the product's
        edge heights runs the hm-row microkernel straight into C (a 49-row product's last
        tile: one row, not six). Else the microkernel with the fewest vectors that cover wn
        columns (a 196-column product's last panel has 4: one vector, not four), straight
        into C when the tile is exactly that wide and MR tall, else into the scratch tile
        and copied out."""
        def run(vectors: int) -> None:
            micro, none = self.microkernel(direct, vectors), self._no_prefetch(vectors)
            exact = b.and_(b.icmp_signed("==", hm, const64(self.mr)),
                           b.icmp_signed("==", wn, const64(vectors * self.lanes)))
            with b.if_else(exact) as (then, otherwise):
                with then:
                    b.call(micro, head + [cptr, ldc, accumulate] + more + none)
                with otherwise:
                    b.call(micro, head + [ctile, const64(self.tile_ldc), ir.Constant(I1, 0)] + more
                           + none)
                    b.call(self.copy_edge_fn(), [ctile, cptr, ldc, hm, wn, accumulate])

        def strip(cols: ir.Function) -> None:
            b.call(cols, head + [ctile])
            b.call(self.copy_edge_fn(), [ctile, cptr, ldc, hm, wn, accumulate])
        self._by_height(b, hm, wn, lambda h: b.call(self.microkernel(direct, None, h),
                                                     head + [cptr, ldc, accumulate] + more),
                        lambda: self._by_width(b, direct, wn, strip, run))

    def _takes_prefetch(self, vectors: int | None, height: int | None = None) -> bool:
        """Whether the microkernel `vectors` wide and `height` tall (None: the tile's) takes
        the prefetch arguments (pf, pf_lines): every rows-outer full-tile one, whether its
        product prefetches B's next block (self.pf_b) or passes none."""
        return self.rows_outer and vectors in (None, self.nv) and height in (None, self.mr)

    def _no_prefetch(self, vectors: int) -> list[ir.Value]:
        """The prefetch arguments that fetch nothing, for a call of that microkernel (an
        edge tile run by the full-width one, a product whose B is not prefetched)."""
        return [ir.Constant(PTR, None), const64(0)] if self._takes_prefetch(vectors) else []

    def _by_width(self, b: ir.IRBuilder, direct: bool, wn: ir.Value,
                  strip: Callable[[ir.Function], object],
                  vectors: Callable[[int], object]) -> None:
        """An edge tile wn columns wide: `strip(cols)` when it is the product's narrow last
        panel and column_strip applies, else `vectors(v)` for the fewest vectors v that
        cover wn columns."""
        def cascade(v: int) -> None:
            if v == self.nv:
                vectors(v)
                return
            with b.if_else(b.icmp_signed("<=", wn, const64(v * self.lanes))) as (then, otherwise):
                with then:
                    vectors(v)
                with otherwise:
                    cascade(v + 1)
        cols = self.column_strip(direct)
        if cols is None:
            cascade(1)
            return
        with b.if_else(b.icmp_signed("==", wn, const64(self.strip_w))) as (then, otherwise):
            with then:
                strip(cols)
            with otherwise:
                cascade(1)

    def _by_height(self, b: ir.IRBuilder, hm: ir.Value, wn: ir.Value,
                   height: Callable[[int], object], other: Callable[[], object]) -> None:
        """An edge tile of hm rows and wn columns: `height(h)` (the h-row microkernel,
        straight into C) for a full-width tile of one of the product's edge heights h,
        `other()` for any other."""
        def choose(heights: tuple[int, ...]) -> None:
            if not heights:
                other()
                return
            h = heights[0]
            full = b.and_(b.icmp_signed("==", hm, const64(h)),
                          b.icmp_signed("==", wn, const64(self.nr)))
            with b.if_else(full) as (then, otherwise):
                with then:
                    height(h)
                with otherwise:
                    choose(heights[1:])
        choose(self.heights)

    def copy_edge_fn(self) -> ir.Function:
        """copyedge(tile, c, ldc, hm, wn, accumulate): _copy_edge without an epilogue, one
        function for every block of the module (LLVM vectorizes and unrolls its loop: a
        copy inside each block function made each one as slow to compile as a microkernel)."""
        return self._helper(f"copyedge{self.nr}{'.cb' if self.blk else ''}",
                            [("tile", PTR), ("c", PTR), ("ldc", I64), ("hm", I64), ("wn", I64),
                             ("accumulate", I1)],
                            lambda b, a: self._copy_edge(b, *a, None))

    def _copy_edge(self, b: ir.IRBuilder, tile: ir.Value, cptr: ir.Value, ldc: ir.Value,
                   hm: ir.Value, wn: ir.Value, accumulate: ir.Value,
                   epi: tuple[list[ir.Value], list[ir.Value]] | None) -> None:
        """C (+)= the scratch tile's valid part; C = epilogue(C (+) tile) given the epilogue
        operands' pointers at the tile and their row strides (the last K block)."""
        e1 = ElementEmitter(self.llmod, b, 1)
        with for_range(b, const64(0), hm, 1, name="ei") as i:
            with for_range(b, const64(0), wn, 1, name="ej", vectorize=epi is None) as j:
                t = b.load(self.gep(b, tile, self.c_off(b, const64(self.tile_ldc), i, j)),
                           typ=self.ety)
                dst = self.gep(b, cptr, self.c_off(b, ldc, i, j))
                old = b.load(dst, typ=self.ety)
                val = b.select(accumulate, b.fadd(old, t), t)
                if epi is not None:
                    val = self.epilogue(e1, val, epi, i, j)
                b.store(val, dst)

    # -- the driver (one per matmul: its sizes and strides as constants) ---------------------------
    def emit(self) -> ir.Function:
        direct = self.direct_a()
        micro = self.microkernel(direct)
        pack_a, pack_b, block = self.pack_a_fn(), self.pack_b_fn(), self.block_fn(micro, direct)
        fn = ir.Function(self.llmod, CHUNK_FN_TYPE, self.name)
        fn.linkage = "internal"
        bufs, begin, end = fn.args
        bufs.name, begin.name, end.name = "bufs", "begin", "end"
        b = Builder(fn.append_basic_block("entry"))
        ptrs = [b.load(b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True), typ=PTR)
                for k in range(len(self.op.operands) + 1)]
        asrc, bsrc, *epi_src, c = ptrs
        bp = scratch(self.llmod, b, self.scratch_elems() * self.size)
        apk = self.gep(b, bp, const64(self.kc * self.ncp))
        ctile = self.gep(b, bp, const64(self.kc * self.ncp + self.a_buffer_elems()))
        n_epi = len(self.epi_coeffs)
        ctx = b.alloca(PTR, size=ir.Constant(ir.IntType(32), max(1, 2 * n_epi)), name="ctx")
        for n, (_, cm, _, _) in enumerate(self.epi_coeffs):     # the operands' row strides
            b.store(b.inttoptr(const64(cm), PTR),
                    b.gep(ctx, [const64(n_epi + n)], source_etype=PTR, inbounds=True))
        M, N, K, mc, nc, kc = self.M, self.N, self.K, self.mc, self.nc, self.kc
        mb, nb = -(-M // mc), -(-N // nc)
        ng = -(-mb // self.mg)                    # row groups
        with for_range(b, begin, end, 1, name="unit") as u:
            bi = b.sdiv(u, const64(ng * nb))
            rem = b.srem(u, const64(ng * nb))
            ig, jb = b.sdiv(rem, const64(nb)), b.srem(rem, const64(nb))
            j0 = b.mul(jb, const64(nc))
            ncur = self.smin(b, b.sub(const64(N), j0), const64(nc))
            ib0 = b.mul(ig, const64(self.mg))
            ib1 = self.smin(b, b.add(ib0, const64(self.mg)), const64(mb))
            a_base = b.mul(bi, const64(self.a_bs))
            b_base = b.mul(bi, const64(self.b_bs))
            c_base = b.mul(bi, const64(M * N))
            with for_range(b, const64(0), const64(K), kc, name="pc") as p0:
                kcur = self.smin(b, b.sub(const64(K), p0), const64(kc))
                if self.b_packed:        # packed at compile time: the panels are right there
                    npad = -(-N // self.nr) * self.nr
                    bpan = self.gep(b, bsrc, b.add(b_base, b.add(b.mul(p0, const64(npad)),
                                                                 b.mul(j0, kcur))))
                elif self.patches:
                    b.call(self.pack_patches_fn(), [self.gep(b, bsrc, b_base), bp, p0, kcur, j0, ncur])
                    bpan = bp
                else:
                    b_src = self.gep(b, bsrc, b.add(b_base, b.add(b.mul(p0, const64(self.b_ps)),
                                                                  b.mul(j0, const64(self.b_js)))))
                    b.call(pack_b, [b_src, bp, kcur, ncur, const64(self.b_ps), const64(self.b_js)])
                    bpan = bp
                accumulate = b.icmp_signed(">", p0, const64(0))
                with for_range(b, ib0, ib1, 1, name="ib") as ib:
                    i0 = b.mul(ib, const64(mc))
                    mcur = self.smin(b, b.sub(const64(M), i0), const64(mc))
                    if self.a_packed:
                        mpad = -(-M // self.mr) * self.mr
                        apan = self.gep(b, asrc, b.add(a_base, b.add(b.mul(p0, const64(mpad)),
                                                                     b.mul(i0, kcur))))
                    elif direct and self.blk:      # rows i0.. of channel block p0 / L
                        apan = self.gep(b, asrc, b.add(a_base, b.add(
                            b.mul(i0, const64(self.blk)),
                            b.mul(b.sdiv(p0, const64(self.blk)), const64(self.blk_stride)))))
                    elif direct:
                        apan = self.gep(b, asrc, b.add(a_base, b.add(b.mul(i0, const64(self.a_is)),
                                                                     p0)))
                    else:
                        a_src = self.gep(b, asrc, b.add(a_base, b.add(b.mul(i0, const64(self.a_is)),
                                                                      b.mul(p0, const64(self.a_ps)))))
                        if self.jit_a:          # the block packs each panel as it goes
                            apan = a_src
                        else:
                            b.call(pack_a, [a_src, apk, mcur, kcur, const64(self.a_is),
                                            const64(self.a_ps)])
                            apan = apk
                    ldc = const64(self.blk_stride if self.blk else N)
                    cptr = self.gep(b, c, b.add(c_base, self.c_off(b, ldc, i0, j0)))
                    if self.epi:        # the epilogue operands at (bi, i0, j0)
                        for n, (p, (cb, cm, cn, c0)) in enumerate(zip(epi_src, self.epi_coeffs)):
                            off = b.add(b.add(b.mul(bi, const64(cb)), const64(c0)),
                                        b.add(b.mul(i0, const64(cm)), b.mul(j0, const64(cn))))
                            b.store(self.gep(b, p, off),
                                    b.gep(ctx, [const64(n)], source_etype=PTR, inbounds=True))
                    lda = const64(self.blk_stride if self.blk else self.a_is)
                    args = [apan, bpan, cptr, ldc, mcur, ncur, kcur, accumulate,
                            ctile] + ([lda] if direct else [])
                    if self.jit_a:
                        args += [const64(self.a_is), const64(self.a_ps), apk]
                    if self.pf_b:
                        args += self._next_b_block(b, bsrc, b_base, u, end, p0, j0, ncur, npad)
                    if self.epi:
                        last = b.icmp_signed("==", b.add(p0, kcur), const64(K))
                        with b.if_else(last) as (then, otherwise):
                            with then:
                                b.call(self.epilogue_block_fn(direct), args + [ctx])
                            with otherwise:
                                b.call(block, args)
                    else:
                        b.call(block, args)
        b.ret_void()
        return fn
