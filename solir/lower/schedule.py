"""schedule and vectorize: the order loops run in, which one is split across threads, and
which one is computed in vector lanes. Kept as attributes apart from the algorithm (Halide's
split): changing them never changes results, only speed.

  order    = loop dims outermost first: parallel dims, then scan/reduction dims
  parallel = the outermost loop, when there is enough work to share between threads
  vector   = [dim, lanes]: the innermost axis contiguous in memory (the output's last dim, or
             a reduction over the inputs' last dim), at the target's vector width
"""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.ir.attrs import AffineMap
from solir.ir.core import Module, Op, Value
from solir.ir.types import DType, TensorType
from solir.lower.pipeline import PassContext, pass_
from solir.targets import Target


def flat_coeffs(m: AffineMap, t: TensorType) -> tuple[list[int], int]:
    """Element offset of an access as `sum(coeffs[d] * iv[d]) + const` (maps without division)."""
    strides, s = [], 1
    for n in reversed(t.shape):
        strides.append(s)
        s *= n
    strides.reverse()
    coeffs = [0] * m.n_dims
    const = 0
    for stride, e in zip(strides, m.exprs):
        for d, c in enumerate(e.coeffs):
            coeffs[d] += stride * c
        const += stride * e.const
    return coeffs, const


def _domain(op: Op) -> int:
    n = 1
    for d in op.attrs["dims"]:
        n *= d
    return n


@pass_("schedule")
def schedule(module: Module, ctx: PassContext) -> Module:
    for f in module.funcs:
        ops = []
        for op in f.body.ops:
            if op.name == "kernel.generic":
                _schedule(op, ctx)
            elif op.name == "kernel.matmul":
                ops += _schedule_matmul(op, ctx)      # weights packed now, if constant
            elif op.name in ("kernel.winograd_input", "kernel.winograd_output"):
                _schedule_planes(op, ctx)
            ops.append(op)
        f.body.ops = ops
        _drop_dead_constants(f)
    return module


def _drop_dead_constants(f: Any) -> None:
    """Constants (and reshapes of them) nothing reads any more: the unpacked weights."""
    while True:
        used = {v for op in f.body.ops for v in op.operands}
        dead = [op for op in f.body.ops if op.name in ("tensor.constant", "tensor.reshape")
                and op.results[0] not in used]
        if not dead:
            return
        ids = {id(op) for op in dead}
        f.body.ops = [op for op in f.body.ops if id(op) not in ids]


def rows_outer(target: Target, itemsize: int, nr: int, kc: int) -> bool:
    """The order of a block's tiles. BLIS runs each KC x NR panel of B against every MR-row
    panel of A with the B panel in L1. Where that panel does not fit two thirds of L1 (NR =
    64 on avx512 with KC >= 256: 64 KiB against 48), the tiles go the other way: each MR x
    KC panel of A (6 KiB) stays in L1 against the whole B block, streamed from L2, and C is
    walked along its rows, which the hardware prefetcher follows (down its columns it is a
    new 4 KiB stride per tile)."""
    return kc * nr * itemsize > target.l1_kib * 1024 * 2 // 3


def matmul_blocking(target: Target, itemsize: int, m: int, n: int, k: int,
                    min_units: int = 1) -> dict[str, int]:
    """BLIS blocking from the target: an MR x NR register tile (NR = four vectors where there
    are 32 vector registers and N is that wide, else two; MR as many rows as the registers
    allow beside them), KC so a KC x NR panel of B fills two thirds of L1 but at least 256
    deep, in equal K blocks, MC so an MC x KC block of A fills half of L2, NC so KC x NC of
    B stays in L3 (in half of L2 where the tiles go rows outer: rows_outer); then NC (or
    else MC) shrinks until there are `min_units` units of work for the threads."""
    lanes = target.lanes(itemsize)
    # Each k step loads NV vectors of B and broadcasts MR elements of A for MR x NV FMAs:
    # (MR + NV) / (MR NV) loads per FMA. With 32 registers 6 x 4 vectors needs 10 loads for
    # 24 FMAs where 14 x 2 needs 16 for 28 (benchmarks/README.md, session 4, has the gain).
    nv = 2 if lanes > 1 else 4
    if lanes > 1 and target.vector_registers >= 32 and n >= 4 * lanes:
        nv = 4
    nr = nv * lanes
    mr = max(1, min(16, (target.vector_registers - nv - 1) // nv))
    kc = max(32, min(1024, target.l1_kib * 1024 * 2 // 3 // (nr * itemsize)) // 8 * 8)
    # ... but at least 256 deep. Each K block reads C's MR x NR tile back and writes it again;
    # with NR = 64 (avx512) an L1-sized panel is 128 deep, and gemm_1024 made eight such
    # passes over a C in L3 (13.9 -> 13.1 ms at 1 thread, 7.8 -> 6.9 ms at 2 with 256:
    # benchmarks/README.md, session 16). The B panel then streams from L2.
    kc = max(kc, 256)
    # K blocks of equal depth (576 = 3 x 192, not 256 + 256 + 64: a 64-deep block pays the
    # tile's round trip for a quarter of the FMAs)
    kc = _balanced(k, kc, 8)
    mc = max(mr, target.l2_kib * 1024 // 2 // (kc * itemsize) // mr * mr)
    mc = _balanced(m, mc, mr)
    nc = max(nr, min(4096, target.l3_kib * 1024 // 4 // (kc * itemsize)) // nr * nr)
    if m <= mc or rows_outer(target, itemsize, nr, kc):
        # B blocks in half of L2: one row block (a pointwise conv's 32-256 rows, a 128-row
        # transformer's) reads each packed B block once, a panel at a time, and a block
        # that fits is read back from L2, not L3; with the tiles rows outer every A panel
        # reads the whole B block
        nc = max(nr, min(nc, target.l2_kib * 1024 // 2 // (kc * itemsize)) // nr * nr)
    nc = _balanced(n, nc, nr)
    # Units of work for the threads: column blocks (each packs all of A again) when A is the
    # smaller operand, else groups of `mg` row blocks (each packs its B block again).
    # Either way the blocks are cut so that each thread gets the same number of them: 3 row
    # blocks in groups of 2 for 2 threads left one thread twice the other's work (MobileNet's
    # 512 x 196 pointwise products), 4 of 132 rows balance.
    if -(-n // nc) < min_units and m <= n:
        nc = min(nc, max(nr, -(-(-(-n // min_units)) // nr) * nr))
    nb = -(-n // nc)
    if min_units > 1 and nb > min_units and nb % min_units:
        nc = _even_blocks(n, nb, min_units, nr)
        nb = -(-n // nc)
    groups = max(1, -(-min_units // nb))
    if -(-m // mc) < groups:
        mc = max(mr, -(-(-(-m // groups)) // mr) * mr)
    mb = -(-m // mc)
    if groups > 1 and mb % groups:
        mc = _even_blocks(m, mb, groups, mr)
        mb = -(-m // mc)
    mg = -(-mb // min(groups, mb))
    return {"mr": mr, "nr": nr, "kc": kc, "mc": mc, "nc": nc, "mg": mg}


def _even_blocks(extent: int, blocks: int, ways: int, tile: int) -> int:
    """A block size (a multiple of `tile`) that cuts `extent` into a multiple of `ways`
    blocks, at least `blocks` of them."""
    want = -(-blocks // ways) * ways
    while True:
        size = max(tile, -(-(-(-extent // want)) // tile) * tile)
        if -(-extent // size) % ways == 0 or size == tile:
            return size
        want += ways


def _constant_of(v: Value) -> np.ndarray | None:
    """The value of `v` if it is a constant seen through reshapes."""
    shape = v.type.shape
    while getattr(v.owner, "name", "") == "tensor.reshape":
        v = v.owner.operands[0]  # type: ignore[union-attr]
    if getattr(v.owner, "name", "") != "tensor.constant":
        return None
    return np.asarray(v.owner.attrs["value"]).reshape(shape)  # type: ignore[union-attr]


def _prepack_constants(op: Op, m: int, n: int, k: int) -> list[Op]:
    """Constant weights (shared by the batch, or one per batch element) are packed into the
    microkernel's panel order now, so calls never pack them (see solir/ir/ops/matmul.py). Returns the new constant
    ops, to go before `op`."""
    from solir.ir.core import Block, Builder
    from solir.ir.ops.matmul import pack_panels
    a = op.attrs
    made = []
    for idx, flag in ((0, "a_packed"), (1, "b_packed")):
        value = _constant_of(op.operands[idx])
        if value is None or a.get(flag):
            continue
        panels = []
        for x in value:
            if idx == 0:
                x = x.T if a.get("trans_a") else x                 # -> [M, K]
                panels.append(pack_panels(np.ascontiguousarray(x), a["mr"], a["kc"]))
            else:
                x = x if a.get("trans_b") else x.T                 # -> [N, K]
                panels.append(pack_panels(np.ascontiguousarray(x), a["nr"], a["kc"]))
        packed = panels[0] if len(panels) == 1 else np.stack(panels)
        const = Builder(Block(), op.loc).op("tensor.constant", [], {"value": packed},
                                            name_hint=f"{op.operands[idx].name or 'w'}_packed")
        operands = list(op.operands)
        operands[idx] = const.result
        op.operands = operands
        op.attrs.update({flag: True, "m": m, "n": n, "k": k})
        made.append(const)
    return made


def _threads_hint(ctx: PassContext) -> int:
    if ctx.target.name != "host":
        return 4
    import os
    return min(64, os.cpu_count() or 1)     # the machine's, not this process's share: the
                                            # cache key does not depend on affinity


def _balanced(size: int, most: int, step: int) -> int:
    """A block size of at most `most` (a multiple of `step`) that splits `size` into equal
    blocks, rather than full ones and a sliver."""
    blocks = -(-size // most)
    return max(step, -(-(-(-size // blocks)) // step) * step)


def _schedule_matmul(op: Op, ctx: PassContext) -> list[Op]:
    from solir.ir.ops.matmul import c_shape
    L = int(op.attrs.get("blocked") or 0)
    a = op.operands[0].type
    batch, m, n = c_shape(op)
    # A is [batch, K/L, M, L] by channel blocks
    k = a.shape[1] * L if L else a.shape[1] if op.attrs.get("trans_a") else a.shape[2]
    work = batch * m * n * k
    threads = ctx.options.parallel and work >= ctx.options.parallel_min_work * 8
    # a unit per core of the machine compiling (for the host): each extra unit packs one
    # operand again, so more units than cores cost more than they balance
    blocking = matmul_blocking(ctx.target, op.results[0].type.dtype.itemsize, m, n, k,
                               min_units=max(1, -(-_threads_hint(ctx) // batch)) if threads else 1)
    if ctx.options.matmul_tiles is not None:
        mr, nr, kc, mc, nc, mg = (max(1, int(t)) for t in ctx.options.matmul_tiles)
        lanes = ctx.target.lanes(op.results[0].type.dtype.itemsize)
        nr = -(-nr // lanes) * lanes
        blocking = {"mr": mr, "nr": nr, "kc": kc, "mc": max(mc, mr), "nc": max(nc, nr), "mg": mg}
    if L:       # tiles of whole channel blocks, K blocks too, column blocks of whole tiles
        blocking["nr"] = -(-blocking["nr"] // L) * L
        blocking["kc"] = min(-(-blocking["kc"] // L) * L, k)
        blocking["nc"] = -(-blocking["nc"] // blocking["nr"]) * blocking["nr"]
    op.attrs.update(blocking)
    made = _prepack_constants(op, m, n, k)
    units = batch * -(-(-(-m // blocking["mc"])) // blocking["mg"]) * -(-n // blocking["nc"])
    if threads and units > 1:
        op.attrs["parallel"] = 0
    else:
        op.attrs.pop("parallel", None)
    return made


def _schedule_planes(op: Op, ctx: PassContext) -> None:
    """Kernels whose units are image planes (Winograd's transforms): threads take planes."""
    from solir.ir.ops.winograd import planes
    work = op.results[0].type.size
    if ctx.options.parallel and planes(op) > 1 and work >= ctx.options.parallel_min_work:
        op.attrs["parallel"] = 0
    else:
        op.attrs.pop("parallel", None)


def _schedule(op: Op, ctx: PassContext) -> None:
    dims, its = op.attrs["dims"], op.attrs["iterators"]
    parallel = [d for d, it in enumerate(its) if it == "p"]
    inner = [d for d, it in enumerate(its) if it != "p"]
    # Bring the first parallel dim with more than one iteration to the front (batch-1 models).
    for k, d in enumerate(parallel):
        if dims[d] > 1:
            parallel = [d] + parallel[:k] + parallel[k + 1:]
            break
    op.attrs["order"] = tuple(parallel + inner)
    big = _domain(op) >= ctx.options.parallel_min_work
    if ctx.options.parallel and parallel and dims[parallel[0]] > 1 and big:
        op.attrs["parallel"] = parallel[0]
    else:
        op.attrs.pop("parallel", None)


@pass_("vectorize")
def vectorize(module: Module, ctx: PassContext) -> Module:
    for f in module.funcs:
        for op in f.body.ops:
            if op.name == "kernel.generic":
                op.attrs.pop("vector", None)
                if ctx.options.vectorize:
                    choice = choose_vector_dim(op, ctx)
                    if choice is not None:
                        op.attrs["vector"] = choice
    return module


def choose_vector_dim(op: Op, ctx: PassContext) -> tuple[int, int] | None:
    """The vector axis and width, or None to stay scalar."""
    dims, its, order = op.attrs["dims"], op.attrs["iterators"], op.attrs["order"]
    comb = op.attrs.get("combiner")
    out = op.results[0].type
    widest = max([out.dtype.itemsize] + [v.type.dtype.itemsize for v in op.operands] + [4])
    lanes = ctx.target.lanes(min(widest, 8))
    if lanes < 2:
        return None
    candidates = []
    par = [d for d in order if its[d] == "p"]
    if par and max(par) == max(d for d, it in enumerate(its) if it != "r"):
        # The output's innermost dim (not when a scan's dim is: the lanes would not be
        # contiguous in the output); reduction loops (if any) run inside it, per lane-vector.
        candidates.append(max(par))
    if comb not in (None, "argmax", "argmin") and "s" not in its and its[order[-1]] == "r":
        candidates.append(order[-1])             # an innermost reduction over contiguous data
    best: tuple[tuple[int, int], int, int] | None = None
    for d in candidates:
        width = _width_for(dims[d], lanes) if its[d] == "p" else lanes
        if dims[d] < width or not _vectorizable_along(op, d):
            continue
        cost = (_gathers_along(op, d), -width)
        if best is None or cost < best[0]:
            best = (cost, d, width)
    if best is None:
        return None
    _, d, width = best
    k = ctx.target.chain_interleave
    if (k > 1 and width == lanes and _long_chains(op)
            and (dims[d] % (k * width) == 0 or dims[d] >= 32 * width)):   # short scalar tails
        width *= k
    return d, width


def _long_chains(op: Op) -> bool:
    from solir.ir.ops.elementwise import LONG_CHAIN_OPS
    return any(bop.name in LONG_CHAIN_OPS for bop in op.regions[0].ops)


MIN_NARROW_LANES = 4      # a parallel axis shorter than a vector uses a narrower one down to this


def _width_for(extent: int, lanes: int) -> int:
    """The vector width for a parallel axis: the target's, or for an axis shorter than that the
    widest power of two that fits (a 14-wide row: two 8-lane vectors, the second shifted back
    to overlap the first, where it would be 14 scalar iterations)."""
    if extent >= lanes:
        return lanes
    width = 1 << (max(extent, 1).bit_length() - 1)
    return width if width >= MIN_NARROW_LANES else lanes


MAX_PADDED_STRIDE = 4     # a padded read with lanes this far apart is one masked load + shuffle


def padded_vector_read(m: AffineMap, d: int) -> bool:
    """A bounds-checked read that varies along the vector dim `d` only in its last index, by a
    small positive step: one masked load of the window the lanes span, then a shuffle
    (lanes out of bounds read the pad value)."""
    if m.divides:
        return False
    *rest, last = m.exprs
    return all(e.coeffs[d] == 0 for e in rest) and 0 < last.coeffs[d] <= MAX_PADDED_STRIDE


def _span(expr: Any, dims: tuple[int, ...], interior: dict[int, tuple[int, int]],
          skip: int | None = None) -> tuple[int, int]:
    """The least and greatest value of an index expression (division aside) over the
    iterations its loops can take: a dim's `interior` range where given, else its whole
    extent; `skip`: without that dim's term."""
    lo = hi = expr.const
    for d, c in enumerate(expr.coeffs):
        if not c or d == skip:
            continue
        first, last = interior.get(d, (0, dims[d] - 1))
        lo += min(c * first, c * last)
        hi += max(c * first, c * last)
    return lo, hi


def index_inside(expr: Any, size: int, dims: tuple[int, ...],
                 interior: dict[int, tuple[int, int]]) -> bool:
    """Whether an index expression stays inside [0, size) (and divides exactly) on every
    iteration, the dims in `interior` restricted to their ranges there."""
    if expr.div != 1:
        return False
    lo, hi = _span(expr, dims, interior)
    return lo >= 0 and hi < size


def border_splits(op: Op) -> dict[int, tuple[int, int]]:
    """Index-set splitting for a kernel.generic: per loop dim (not the vector one), the
    iterations [first, last] where every padded read's index along it that can leave its
    tensor stays inside whatever the other dims are (a conv's output rows and columns whose
    window is inside the image), where that is a proper, non-empty part of the loop."""
    a = op.attrs
    dims = tuple(a["dims"])
    vec = a.get("vector")
    pads = a.get("pads") or (None,) * len(op.operands)
    its = a.get("iterators") or "p" * len(dims)
    splits = {}
    for d in range(len(dims)):
        if (vec and vec[0] == d) or its[d] != "p" or dims[d] < 4:
            continue
        first, last, useful = 0, dims[d] - 1, False
        for v, m, pad in zip(op.operands, a["maps"], pads):
            if m is None or pad is None:
                continue
            for size, expr in zip(v.type.shape, m.exprs):
                c = expr.coeffs[d]
                if not c or expr.div != 1 or index_inside(expr, size, dims, {}):
                    continue
                # want 0 <= rest + c iv <= size - 1 for every value of the rest
                rlo, rhi = _span(expr, dims, {}, skip=d)
                at_least, at_most = -rlo, size - 1 - rhi
                if c < 0:
                    at_least, at_most = at_most, at_least
                first = max(first, -(-at_least // c))
                last = min(last, at_most // c)
                useful = True
        # (at least two iterations inside: a 3-tap window's loop split 1 + 1 + 1 is only code)
        if useful and last - first >= 1 and (first, last) != (0, dims[d] - 1):
            splits[d] = (first, last)
    return splits


def transposed_reads(op: Op, splits: dict[int, tuple[int, int]]) -> tuple[int | None, tuple[int, ...]]:
    """(the loop just outside the vector dim, the operands it reads transposed) for a
    kernel.generic whose vector dim is one whole vector innermost and some f32/f64 operand's
    lanes are a stride apart but contiguous along that loop (a layout change NCHW -> NCHWc):
    that loop then steps a vector at a time, reading those operands a vector of rows at once
    and transposing them in registers. (None, ()) where that does not apply."""
    a = op.attrs
    dims = tuple(a["dims"])
    its = a.get("iterators") or "p" * len(dims)
    order = tuple(a.get("order") or range(len(dims)))
    pads = a.get("pads") or (None,) * len(op.operands)
    vec = a.get("vector")
    if not vec or a.get("combiner") is not None or len(order) < 2:
        return None, ()
    vd, w = vec
    if w < 4 or w & (w - 1) or order[-1] != vd or dims[vd] != w or its[vd] != "p":
        return None, ()
    td = order[-2]
    if its[td] != "p" or dims[td] < w or td in splits:
        return None, ()
    ks = []
    for k, (v, m, pad) in enumerate(zip(op.operands, a["maps"], pads)):
        if m is None or pad is not None or m.divides or v.type.dtype not in (DType.F32, DType.F64):
            continue
        coeffs, _ = flat_coeffs(m, v.type)
        if abs(coeffs[vd]) > 1 and coeffs[td] == 1:
            ks.append(k)
    return (td, tuple(ks)) if ks else (None, ())


def _vectorizable_along(op: Op, d: int) -> bool:
    pads = op.attrs.get("pads") or (None,) * len(op.operands)
    for m, pad in zip(op.attrs["maps"], pads):
        if m is None or (pad is None and not m.divides):
            continue
        if any(e.coeffs[d] for e in m.exprs) and not (pad is not None and padded_vector_read(m, d)):
            return False        # dividing (dilated) reads along the vector axis stay scalar
    return True


def _gathers_along(op: Op, d: int) -> int:
    n = 0
    for v, m in zip(op.operands, op.attrs["maps"]):
        if m is None:
            continue
        coeffs, _ = flat_coeffs(m, v.type)
        if coeffs[d] not in (0, 1):
            n += 1
    return n
