"""Emits one kernel.generic as a chunk function `void k(ptr bufs, i64 begin, i64 end)`.

Loops run in the schedule's `order`. The vector dim steps by `lanes` and everything inside it
is computed on vectors (outer-loop vectorization when it is a parallel dim, so reductions nested
inside keep one accumulator per lane). A parallel vector dim's remainder reruns the last whole
vector, shifted back to end at the loop's end; a reduction's (or a loop shorter than a vector)
runs the same body with one lane. Reductions
and scans accumulate in registers (allocas that mem2reg promotes) from the first reduction loop
inward. `begin`/`end` bound the outermost loop when the kernel runs on the thread pool.

Padded reads (a conv's or pool's window over a zero-padded image) are bounds-checked: a
compare and a select per index, or a masked vector load. A loop whose index moves such reads
runs as three (border_splits): the border iterations before the interior, the interior, the
border after; inside the interior the reads that cannot leave their tensor there are plain
loads (a depthwise 3x3 over a 56x56 image: 54 of its 56 rows and columns). Loads from the
module's constants are !invariant.load, so LLVM hoists a tap's weights out of the loops.
"""

from __future__ import annotations

from typing import Any

import llvmlite.ir as ir

from solir.errors import UnsupportedOpError
from solir.ir.core import Op, Value
from solir.ir.types import DType, TensorType
from solir.lower.llvm.element import ElementEmitter, scalar_type, storage_type
from solir.lower.llvm.loops import Builder, I64, as64, const64, for_range
from solir.lower.llvm.shuffle import transpose
from solir.lower.schedule import border_splits, flat_coeffs, index_inside, transposed_reads
from solir.targets import Target

PTR = ir.PointerType()
UNROLL = 4          # independent vector accumulators in an innermost vector reduction
JAM = 4             # output vectors computed together over a reduction (a conv's taps)
SPLITTABLE = ("add", "mul", "max", "min", "and", "or")   # combiners several accumulators may share
CHUNK_FN_TYPE = ir.FunctionType(ir.VoidType(), [PTR, I64, I64])


def units_of(op: Op) -> int:
    """How many units of work the thread pool splits (iterations of the outermost loop, in
    vectors when that loop is the vector dim)."""
    a = op.attrs
    if a.get("parallel") is None:
        return 1
    d = a["parallel"]
    vec = a.get("vector")
    extent = a["dims"][d]
    if vec and vec[0] == d:
        return -(-extent // vec[1])
    return extent


def emit_generic(llmod: ir.Module, op: Op, target: Target, name: str) -> ir.Function:
    return _GenericEmitter(llmod, op, target, name).emit()


def _steps_end(b: ir.IRBuilder, lo: ir.Value, span: ir.Value, step: int, name: str) -> ir.Value:
    """Where whole steps of `step` from lo end, `span` iterations in: lo + span - span % step."""
    return b.add(lo, b.sub(span, b.srem(span, const64(step))), name=name)


class _GenericEmitter:
    def __init__(self, llmod: ir.Module, op: Op, target: Target, name: str,
                 fn: ir.Function | None = None, builder: ir.IRBuilder | None = None):
        """Emits into a new chunk function `name`, or (row groups) into `fn` at `builder`."""
        if len(op.results) != 1:
            raise UnsupportedOpError(f"kernel.generic with {len(op.results)} results", loc=op.loc)
        a = op.attrs
        self.llmod, self.op, self.target = llmod, op, target
        self.dims = tuple(a["dims"])
        self.its = a.get("iterators") or "p" * len(self.dims)
        self.order = tuple(a.get("order") or range(len(self.dims)))
        vec = a.get("vector")
        self.vdim, self.width = (vec[0], vec[1]) if vec else (None, 1)
        self.par = a.get("parallel")
        self.comb = a.get("combiner")
        self.maps = a["maps"]
        self.pads = a.get("pads") or (None,) * len(op.operands)
        self.out = op.results[0]
        self.body = op.regions[0]
        if fn is not None and builder is not None:
            self.fn, self.b = fn, builder
        else:
            self.fn = ir.Function(llmod, CHUNK_FN_TYPE, name)
            self.fn.linkage = "internal"
            self.fn.args[0].name, self.fn.args[1].name, self.fn.args[2].name = "bufs", "begin", "end"
            self.b = Builder(self.fn.append_basic_block("entry"))
        self.ivs: dict[int, ir.Value] = {}
        # row-local buffers are addressed from a base shifted by -row (rows.py): those
        # addresses are in bounds, the base is not, so no `inbounds` promise there
        self.inbounds = fn is None
        self.acc_depth = next((k for k, d in enumerate(self.order) if self.its[d] != "p"), None)
        self.acc: dict[int, Any] = {}
        self.extra_acc: list[dict[str, Any]] = []
        self.acc_slot = 0
        self.jam: list[ir.Value] | None = None        # the vector dim's ivs of jammed vectors
        self.jam_accs: list[dict[int, Any]] = []
        # operand (or len(operands), the result) -> elements ahead to prefetch in vector loops
        self.prefetch: dict[int, int] = {}
        # vector stores of the result are non-temporal, to addresses aligned to this many
        # bytes (row groups: rows.py checks the alignment before choosing such a member)
        self.stream_align = 0
        # index-set splitting: per loop dim, the iterations [lo, hi] (inclusive) where every
        # padded read's index along it stays inside its tensor whatever the other dims are
        # (the rows and columns of a conv's output away from the image's border). Such a loop
        # runs as border, interior, border; inside the interior (`self.interior`) those
        # reads need no bounds check, mask or select. Border iterations do not split the
        # loops inside them again (`self.border`): 2 k + 1 copies of the body for k dims.
        self.interior: dict[int, tuple[int, int]] = {}
        self.border = False
        # operands that are the module's constants (weights): never written while a kernel
        # runs, so their loads are !invariant.load and leave the loops they do not vary in
        # (a depthwise conv's nine tap vectors, BN's scale and shift), which LLVM could not
        # otherwise move past the result's stores
        self.constant = [getattr(v.owner, "name", "") == "tensor.constant" for v in op.operands]
        self.splits = border_splits(op)
        # transposed reads: where the vector dim is one whole vector innermost and an
        # operand's lanes are far apart (stride > 1) but contiguous along the loop just
        # outside it (a layout change NCHW -> NCHWc: 16 channels a plane apart per vector),
        # that loop steps by a vector: `width` contiguous loads, one in-register transpose,
        # then `width` points each taking its vector from it (`self.pre`), instead of
        # `width` x `width` scalar loads
        self.tdim, self.transposed = transposed_reads(op, self.splits)
        self.pre: dict[int, ir.Value] = {}

    # -- structure -----------------------------------------------------------------------------
    def emit(self) -> ir.Function:
        b = self.b
        bufs = self.fn.args[0]
        self.ptrs = []
        for k, v in enumerate(list(self.op.operands) + [self.out]):
            slot = b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True)
            self.ptrs.append(b.load(slot, typ=PTR, name=_llname(v.name or f"buf{k}")))
        self.nest(0, 1)
        b.ret_void()
        return self.fn

    def emit_row(self, ptrs: list[ir.Value], row: ir.Value) -> None:
        """The loops inside one row (dim 0 fixed to `row`), reading and writing through `ptrs`
        (one per operand, then the result)."""
        self.ptrs = ptrs
        self.ivs[0] = row
        self.nest(1, 1)

    def nest(self, depth: int, lanes: int) -> None:
        if depth == len(self.order):
            self.point(lanes)
            return
        if depth == self.acc_depth:
            jam = self.jam or [None]             # one accumulator per jammed output vector
            self.jam_accs = []
            for _ in jam:
                self.begin_accumulate(lanes)
                self.jam_accs.append(self.acc)
            self.loops(depth, lanes)
            for iv, acc in zip(jam, self.jam_accs):
                if iv is not None:
                    self.ivs[self.vdim] = iv       # type: ignore[index]
                self.acc = acc
                self.end_accumulate(lanes)
        else:
            self.loops(depth, lanes)

    def loops(self, depth: int, lanes: int) -> None:
        b = self.b
        d = self.order[depth]
        lo: ir.Value | int = 0
        hi: ir.Value | int = self.dims[d]
        if depth == 0 and self.par is not None:
            begin, end = self.fn.args[1], self.fn.args[2]
            if d == self.vdim:
                w = const64(self.width)
                lo = b.mul(begin, w, name="lo")
                hi = ElementEmitter(self.llmod, b, 1).intrinsic("smin", [b.mul(end, w), const64(self.dims[d])])
            else:
                lo, hi = begin, end
        name = f"d{d}"
        if d == self.vdim and lanes == 1:
            w = self.width
            lo_v, hi_v = as64(lo), as64(hi)
            span = b.sub(hi_v, lo_v)
            main_hi = _steps_end(b, lo_v, span, w, f"{name}.vend")
            if self.unrolled_reduction(depth):
                # UNROLL independent vector accumulators hide the combine's latency
                uw = UNROLL * w
                un_hi = _steps_end(b, lo_v, span, uw, f"{name}.uend")
                with for_range(b, lo_v, un_hi, uw, name=f"{name}.u") as iv:
                    for u in range(UNROLL):
                        self.ivs[d] = b.add(iv, const64(u * w)) if u else iv
                        self.acc_slot = u
                        self.nest(depth + 1, w)
                self.acc_slot = 0
                lo_v = un_hi
            jam = self.jammed_reduction(depth)
            if jam > 1:
                # `jam` output vectors share each pass over the reduction: independent
                # accumulator chains instead of one (a 3x3 conv's nine dependent FMAs)
                jw = jam * w
                jam_hi = _steps_end(b, lo_v, span, jw, f"{name}.jend")
                with for_range(b, lo_v, jam_hi, jw, name=f"{name}.j") as iv:
                    self.jam = [b.add(iv, const64(u * w)) if u else iv for u in range(jam)]
                    self.nest(depth + 1, w)
                self.jam = None
                lo_v = jam_hi
            with for_range(b, lo_v, main_hi, w, name=f"{name}.v") as iv:
                self.ivs[d] = iv
                self.nest(depth + 1, w)
            if self.its[d] != "p":
                self.scalar_tail(depth, main_hi, hi_v)
                return
            # A parallel dim's remainder reruns the last whole vector of this loop, shifted
            # back to end at `hi`: the lanes it repeats recompute the values already stored
            # (each point depends only on the inputs, which a kernel never overwrites).
            # Only loops shorter than a vector go element by element.
            overlap = b.and_(b.icmp_signed("<", main_hi, hi_v), b.icmp_signed(">=", span, const64(w)))
            with b.if_else(overlap) as (then, otherwise):
                with then:
                    self.ivs[d] = b.sub(hi_v, const64(w), name=f"{name}.last")
                    self.nest(depth + 1, w)
                with otherwise:
                    self.scalar_tail(depth, main_hi, hi_v)
            return
        if d == self.tdim and lanes == 1:
            self.transposed_loop(depth, lo, hi)
            return
        if d in self.splits and not self.border:
            self.split_loop(depth, lanes, lo, hi)
            return
        with for_range(b, lo, hi, 1, name=name) as iv:
            self.ivs[d] = iv
            self.nest(depth + 1, lanes)

    def split_loop(self, depth: int, lanes: int, lo: ir.Value | int, hi: ir.Value | int) -> None:
        """The loop over dim order[depth] as three: its border iterations before the
        interior, the interior (reads inside their tensors there are unchecked), the border
        after."""
        b = self.b
        d = self.order[depth]
        first, last = self.splits[d]
        if isinstance(lo, int) and isinstance(hi, int):
            a: ir.Value | int = min(max(first, lo), hi)
            z: ir.Value | int = max(min(last + 1, hi), a)
        else:
            e = ElementEmitter(self.llmod, b, 1)
            lo_v, hi_v = as64(lo), as64(hi)
            a = e.intrinsic("smin", [e.intrinsic("smax", [const64(first), lo_v]), hi_v])
            z = e.intrinsic("smax", [e.intrinsic("smin", [const64(last + 1), hi_v]), a])
        for s, t, inside in ((lo, a, False), (a, z, True), (z, hi, False)):
            if isinstance(s, int) and isinstance(t, int) and s >= t:
                continue
            if inside:
                self.interior[d] = (first, last)
            else:
                self.border = True
            with for_range(b, s, t, 1, name=f"d{d}.{'in' if inside else 'edge'}") as iv:
                self.ivs[d] = iv
                self.nest(depth + 1, lanes)
            self.interior.pop(d, None)
            self.border = False         # (only loops outside any border split)

    def transposed_loop(self, depth: int, lo: ir.Value | int, hi: ir.Value | int) -> None:
        """The loop just outside the vector dim, a vector's width of iterations at a time,
        the transposed operands read as whole blocks (see __init__); the rest one by one."""
        b, w, d, vd = self.b, self.width, self.order[depth], self.vdim
        lo_v, hi_v = as64(lo), as64(hi)
        main_hi = _steps_end(b, lo_v, b.sub(hi_v, lo_v), w, f"d{d}.tend")
        e = ElementEmitter(self.llmod, b, w)
        with for_range(b, lo_v, main_hi, w, name=f"d{d}.t") as iv:
            blocks = {}
            for k in self.transposed:
                v, m = self.op.operands[k], self.maps[k]
                coeffs, const = flat_coeffs(m, v.type)
                rows = []
                for r in range(w):              # lane r of the vector dim: w along dim d
                    self.ivs[d], self.ivs[vd] = iv, const64(r)   # type: ignore[index]
                    rows.append(self.load(e, k, v.type.dtype, self._offset(coeffs, const), w,
                                          1, f"{v.name or 'x'}_row"))
                blocks[k] = transpose(b, rows)
            for u in range(w):
                self.ivs[d] = b.add(iv, const64(u))
                self.pre = {k: blocks[k][u] for k in blocks}
                self.nest(depth + 1, 1)
            self.pre = {}
        with for_range(b, main_hi, hi_v, 1, name=f"d{d}.rest") as iv:
            self.ivs[d] = iv
            self.nest(depth + 1, 1)

    # -- which reads are inside their tensors ----------------------------------------------------
    def _inside(self, expr: Any, size: int) -> bool:
        """Whether an index is inside [0, size) on every iteration being emitted."""
        return index_inside(expr, size, self.dims, self.interior)

    def scalar_tail(self, depth: int, lo: ir.Value, hi: ir.Value) -> None:
        d = self.order[depth]
        with for_range(self.b, lo, hi, 1, name=f"d{d}.tail") as iv:
            self.ivs[d] = iv
            self.nest(depth + 1, 1)

    # -- accumulation ------------------------------------------------------------------------------
    def jammed_reduction(self, depth: int) -> int:
        """How many vectors of a parallel vector loop right around the reduction loops run
        through the reduction together (up to JAM; each output's order of combination is
        unchanged); 1: one at a time."""
        if (self.vdim is None or self.its[self.vdim] != "p" or self.acc_depth != depth + 1
                or "s" in self.its or self.comb not in SPLITTABLE):
            return 1
        return max(1, min(JAM, self.dims[self.vdim] // self.width))

    def unrolled_reduction(self, depth: int) -> bool:
        """A vector reduction in the innermost loop, with a combiner whose partial results may
        be kept in several accumulators (the order is fixed by the schedule, so results are
        still the same on every run and thread count)."""
        return (depth == len(self.order) - 1 and self.vdim is not None
                and self.its[self.vdim] == "r" and "s" not in self.its
                and self.comb in SPLITTABLE)

    def _acc_types(self) -> tuple[DType, DType]:
        y = self.body.ops[-1].operands[0].type.dtype
        return y, self.out.type.dtype

    def begin_accumulate(self, lanes: int) -> None:
        ydt, _ = self._acc_types()
        self.acc = {}
        vector_reduction = self.vdim is not None and self.its[self.vdim] == "r"
        widths = [lanes] + ([self.width] if vector_reduction and lanes == 1 else [])
        for w in widths:
            e = ElementEmitter(self.llmod, self.b, w)
            slot = self._alloca(e.ty(ydt), "acc")
            self.b.store(e.const(ydt, self._identity(ydt)), slot)
            entry = {"val": slot, "emitter": e}
            if self.comb in ("argmax", "argmin"):
                islot = self._alloca(e.ty(DType.I64), "acc.idx")
                self.b.store(e.const(DType.I64, 0), islot)
                entry["idx"] = islot
            self.acc[w] = entry
        self.extra_acc = []
        if vector_reduction and lanes == 1 and self.unrolled_reduction(len(self.order) - 1):
            e = self.acc[self.width]["emitter"]
            for _ in range(UNROLL - 1):
                slot = self._alloca(e.ty(ydt), "acc.u")
                self.b.store(e.const(ydt, self._identity(ydt)), slot)
                self.extra_acc.append({"val": slot, "emitter": e})

    def end_accumulate(self, lanes: int) -> None:
        if "s" in self.its:
            return
        ydt, odt = self._acc_types()
        main = self.acc[lanes]
        e = main["emitter"]
        val = self.b.load(main["val"], name="acc")
        if self.width in self.acc and lanes == 1 and self.width != 1:
            vec = self.acc[self.width]
            parts = [self.b.load(a["val"]) for a in [vec] + self.extra_acc]
            while len(parts) > 1:          # a fixed pairwise tree over the accumulators
                parts = [self.combine(vec["emitter"], ydt, parts[k], parts[k + 1])
                         if k + 1 < len(parts) else parts[k] for k in range(0, len(parts), 2)]
            val = self.combine(ElementEmitter(self.llmod, self.b, 1), ydt, val,
                               self.horizontal(vec["emitter"], ydt, parts[0]))
        if self.comb in ("argmax", "argmin"):
            idx = self.b.load(main["idx"])
            val = e.convert(idx, DType.I64, odt)
        self.store(val, lanes)

    def _identity(self, dt: DType) -> Any:
        from solir.ir.ops.reduce import identity_of
        comb = {"argmax": "max", "argmin": "min"}.get(self.comb, self.comb)
        return identity_of(comb, dt)

    def combine(self, e: ElementEmitter, dt: DType, acc: ir.Value, y: ir.Value) -> ir.Value:
        b, comb = self.b, self.comb
        if comb == "add":
            return b.fadd(acc, y, flags=("contract",)) if dt.is_float else (b.or_(acc, y) if dt.is_bool else b.add(acc, y))
        if comb == "mul":
            return b.fmul(acc, y) if dt.is_float else (b.and_(acc, y) if dt.is_bool else b.mul(acc, y))
        if comb in ("max", "min"):
            if dt.is_float:
                # NaN-propagating like llvm.maximum, but equal values (+0 and -0) keep the
                # accumulator, as numpy's and XLA's reductions do: one vmaxps and a NaN
                # blend instead of llvm.maximum's six instructions on x86
                better = b.fcmp_ordered(">" if comb == "max" else "<", y, acc)
                return b.select(b.fcmp_unordered("uno", y, y), y, b.select(better, y, acc))
            if dt.is_bool:
                return b.or_(acc, y) if comb == "max" else b.and_(acc, y)
            return e.intrinsic("smax" if comb == "max" else "smin", [acc, y])
        if comb == "and":
            return b.and_(acc, y)
        if comb == "or":
            return b.or_(acc, y)
        raise UnsupportedOpError(f"combiner {comb!r}", loc=self.op.loc)

    def horizontal(self, e: ElementEmitter, dt: DType, vec: ir.Value) -> ir.Value:
        """Combine the lanes of a vector accumulator pairwise (a fixed, deterministic tree)."""
        n = vec.type.count
        while n > 1:
            half = n // 2
            lo = self.b.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half))))
            hi = self.b.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                                              list(range(half, n))))
            vec = self.combine(ElementEmitter(self.llmod, self.b, half), dt, lo, hi)
            n = half
        return self.b.extract_element(vec, ir.Constant(ir.IntType(32), 0))

    def _alloca(self, ty: ir.Type, name: str) -> ir.Value:
        with self.b.goto_entry_block():
            return self.b.alloca(ty, name=name)

    # -- one point of the iteration space -------------------------------------------------------
    def point(self, lanes: int) -> None:
        if self.jam is not None:
            for iv, acc in zip(self.jam, self.jam_accs):
                self.ivs[self.vdim], self.acc = iv, acc   # type: ignore[index]
                self._point(lanes)
            return
        self._point(lanes)

    def _point(self, lanes: int) -> None:
        e = ElementEmitter(self.llmod, self.b, lanes)
        env: dict[Value, ir.Value] = {}
        for k, arg in enumerate(self.body.args):
            if self.maps[k] is not None:
                env[arg] = self.load_input(e, k, lanes, arg.name)
        for bop in self.body.ops[:-1]:
            env[bop.results[0]] = self.body_op(e, bop, env, lanes)
        y = env[self.body.ops[-1].operands[0]]
        ydt, _ = self._acc_types()
        if self.comb is None:
            self.store(y, lanes)
            return
        acc = self.acc[lanes]
        if self.acc_slot and lanes == self.width:
            acc = self.extra_acc[self.acc_slot - 1]
        old = self.b.load(acc["val"])
        if self.comb in ("argmax", "argmin"):
            self._arg_update(e, ydt, acc, old, y)
            return
        new = self.combine(e, ydt, old, y)
        self.b.store(new, acc["val"])
        if "s" in self.its:
            self.store(new, lanes)

    def _arg_update(self, e: ElementEmitter, dt: DType, acc: dict, old: ir.Value, y: ir.Value) -> None:
        b = self.b
        if dt.is_float:
            pred = ">" if self.comb == "argmax" else "<"
            better = b.or_(b.fcmp_ordered(pred, y, old),
                           b.and_(b.fcmp_unordered("uno", y, y), b.fcmp_ordered("ord", old, old)))
        elif dt.is_bool:
            better = b.icmp_unsigned(">" if self.comb == "argmax" else "<", y, old)
        else:
            better = b.icmp_signed(">" if self.comb == "argmax" else "<", y, old)
        idx = e.splat(self._reduction_index())
        b.store(b.select(better, y, old), acc["val"])
        b.store(b.select(better, idx, b.load(acc["idx"])), acc["idx"])

    def _reduction_index(self) -> ir.Value:
        """Row-major linear index over the reduction dims (the arg-reduction's answer)."""
        rdims = [d for d in range(len(self.dims)) if self.its[d] == "r"]
        idx: ir.Value = const64(0)
        for d in rdims:
            idx = self.b.add(self.b.mul(idx, const64(self.dims[d])), self.ivs[d])
        return idx

    def body_op(self, e: ElementEmitter, bop: Op, env: dict[Value, ir.Value], lanes: int) -> ir.Value:
        name = bop.name
        if name == "kernel.index":
            return self.index_value(e, bop.attrs["dim"], lanes)
        if name == "kernel.read":
            return self.read(e, bop, [env[v] for v in bop.operands], lanes)
        if name == "tensor.constant":
            value = bop.attrs["value"]
            return e.const(bop.results[0].type.dtype, value.item() if value.dtype.kind != "V" else float(value))
        if bop.opdef.emit is None:
            raise UnsupportedOpError(f"'{name}' has no element lowering", loc=bop.loc,
                                     fix=f"give the '{name}' entry an `emit` or a decomposition")
        out = bop.opdef.emit(e, bop, [env[v] for v in bop.operands])
        if out.name == "" and bop.results[0].name:
            out.name = _llname(bop.results[0].name)
        return out

    def index_value(self, e: ElementEmitter, dim: int, lanes: int) -> ir.Value:
        iv = self.ivs[dim]
        if lanes == 1:
            return iv
        v = e.splat(iv)
        if dim == self.vdim:
            v = self.b.add(v, ir.Constant(ir.VectorType(I64, lanes), list(range(lanes))))
        return v

    # -- memory --------------------------------------------------------------------------------------
    def _offset(self, coeffs: list[int], const: int) -> ir.Value:
        b = self.b
        off: ir.Value = const64(const)
        for d, c in enumerate(coeffs):
            if c:
                off = b.add(off, b.mul(self.ivs[d], const64(c)) if c != 1 else self.ivs[d])
        return off

    def load_input(self, e: ElementEmitter, k: int, lanes: int, name: str) -> ir.Value:
        if k in self.pre and lanes == self.width:
            return self.pre[k]
        v, m, pad = self.op.operands[k], self.maps[k], self.pads[k]
        dt = v.type.dtype
        if not m.divides and (pad is None or all(
                self._inside(x, size) for x, size in zip(m.exprs, v.type.shape))):
            coeffs, const = flat_coeffs(m, v.type)
            off = self._offset(coeffs, const)
            step = coeffs[self.vdim] if lanes > 1 else 0
            return self.load(e, k, dt, off, lanes, step, name)
        if lanes > 1 and any(e_.coeffs[self.vdim] for e_ in m.exprs):
            return self.load_padded_vector(e, k, lanes, name)
        # bounds-checked (padding) or dividing (dilation) access, the same for every lane
        valid, flat = self._checked_index(v.type.shape, m.exprs)
        e1 = ElementEmitter(self.llmod, self.b, 1)
        x = self.load(e1, k, dt, flat, 1, 0, name)
        padv = e1.const(dt, pad if pad is not None else 0)
        return e.splat(self.b.select(valid, x, padv))

    def _checked_index(self, shape: tuple[int, ...], exprs: Any) -> tuple[ir.Value, ir.Value]:
        """(whether every index is inside `shape` and every division exact, the row-major
        offset with out-of-range indices replaced by 0) for a bounds-checked access."""
        b = self.b
        valid: ir.Value = ir.Constant(ir.IntType(1), 1)
        flat: ir.Value = const64(0)
        for size, expr in zip(shape, exprs):
            idx = self._offset(list(expr.coeffs), expr.const)
            if self._inside(expr, size):
                flat = b.add(b.mul(flat, const64(size)), idx)
                continue
            if expr.div != 1:
                valid = b.and_(valid, b.icmp_signed("==", b.srem(idx, const64(expr.div)), const64(0)))
                idx = b.sdiv(idx, const64(expr.div))
            inside = b.and_(b.icmp_signed(">=", idx, const64(0)), b.icmp_signed("<", idx, const64(size)))
            valid = b.and_(valid, inside)
            flat = b.add(b.mul(flat, const64(size)), b.select(inside, idx, const64(0)))
        return valid, flat

    def load_padded_vector(self, e: ElementEmitter, k: int, lanes: int, name: str) -> ir.Value:
        """A padded read whose last index steps along the lanes (schedule.padded_vector_read).
        By 1: one masked load from lane 0's position; lanes outside the tensor (or all of
        them, when an outer index is) are masked off, so they never touch memory and read the
        pad value. By c > 1: _load_padded_lanes."""
        b = self.b
        v, m, pad = self.op.operands[k], self.maps[k], self.pads[k]
        dt = v.type.dtype
        padv = pad if pad is not None else 0
        *rest, last = m.exprs
        row_ok, row = self._checked_index(v.type.shape[:-1], rest)
        width, c = v.type.shape[-1], last.coeffs[self.vdim]
        x0 = self._offset(list(last.coeffs), last.const)           # lane 0's last index
        if c > 1:
            return self._load_padded_lanes(e, k, lanes, row_ok, row, x0, name)
        mask = self._lanes_in_row(e, x0, 1, width, row_ok)
        st = storage_type(dt)
        addr = b.gep(self.ptrs[k], [b.add(b.mul(row, const64(width)), x0)], source_etype=st)
        computed = st == scalar_type(dt)     # else f16/bf16/i1 storage: pad after converting
        raw = e.masked_load(ir.VectorType(st, lanes), addr, dt.itemsize, mask,
                            e.const(dt, padv) if computed
                            else ir.Constant(ir.VectorType(st, lanes), None))
        x = self.to_compute(raw, dt, lanes, _llname(name))
        if not computed:
            x = b.select(mask, x, e.const(dt, padv))
        return x

    def _lanes_in_row(self, e: ElementEmitter, first: ir.Value, step: int, width: int,
                      row_ok: ir.Value) -> ir.Value:
        """Which lanes' positions first + j*step lie inside a row of `width` (all off when
        the row itself is outside, `row_ok` false). Compared as i32: half the work of i64
        compares, and a row is shorter than 2^31."""
        b, i32 = self.b, ir.IntType(32)
        pos = b.add(e.splat(b.trunc(first, i32)),
                    ir.Constant(ir.VectorType(i32, e.lanes), [j * step for j in range(e.lanes)]))
        ok = b.and_(b.icmp_signed(">=", pos, e.const(DType.I32, 0)),
                    b.icmp_signed("<", pos, e.const(DType.I32, width)))
        return b.and_(ok, e.splat(row_ok))

    def _load_padded_lanes(self, e: ElementEmitter, k: int, lanes: int, row_ok: ir.Value,
                           row: ir.Value, x0: ir.Value, name: str) -> ir.Value:
        """A padded read stepping by c > 1 along the lanes. Where all c * lanes elements from
        lane 0's position are inside the row (most vectors of a wide row), one plain load of
        them and a shuffle; at the row's edges (every vector of a 14-wide row), c masked
        loads of one vector each (lanes outside the row are not read), the same shuffle, and
        a select of the pad value for the lanes outside. Not one masked load of c * lanes
        elements, nor the masked loads' pass-through values: LLVM 22's x86 lowering of that
        with a shuffle loaded a lane whose mask was off (a stride-3 depthwise pad then read
        the next row's values)."""
        b = self.b
        v, pad = self.op.operands[k], self.pads[k]
        dt = v.type.dtype
        width, c = v.type.shape[-1], self.maps[k].exprs[-1].coeffs[self.vdim]
        st = storage_type(dt)
        base = b.mul(row, const64(width))
        span = c * lanes
        every_c = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [j * c for j in range(lanes)])
        inside = b.and_(row_ok, b.and_(b.icmp_signed(">=", x0, const64(0)),
                                       b.icmp_signed("<=", b.add(x0, const64(span)), const64(width))))
        with b.if_else(inside, likely=True) as (whole, edge):
            with whole:
                addr = b.gep(self.ptrs[k], [b.add(base, x0)], source_etype=st,
                             inbounds=self.inbounds)
                raw = b.load(addr, typ=ir.VectorType(st, span), align=dt.itemsize)
                fast = self.to_compute(b.shuffle_vector(raw, raw, every_c), dt, lanes,
                                       _llname(name))
                fast_block = b.block
            with edge:
                vty = ir.VectorType(st, lanes)
                parts = []
                for i in range(c):               # elements x0 + i*lanes .. x0 + (i+1)*lanes
                    first = b.add(x0, const64(i * lanes))
                    addr = b.gep(self.ptrs[k], [b.add(base, first)], source_etype=st)
                    parts.append(e.masked_load(vty, addr, dt.itemsize,
                                               self._lanes_in_row(e, first, 1, width, row_ok),
                                               ir.Constant(vty, None)))
                while len(parts) & (len(parts) - 1):       # a power of two, to pair them up
                    parts.append(ir.Constant(parts[0].type, None))
                while len(parts) > 1:
                    n = parts[0].type.count
                    pair = ir.Constant(ir.VectorType(ir.IntType(32), 2 * n), list(range(2 * n)))
                    parts = [b.shuffle_vector(parts[i], parts[i + 1], pair)
                             for i in range(0, len(parts), 2)]
                picked = self.to_compute(b.shuffle_vector(parts[0], parts[0], every_c), dt,
                                         lanes, _llname(name))
                slow = b.select(self._lanes_in_row(e, x0, c, width, row_ok), picked,
                                e.const(dt, pad if pad is not None else 0))
                slow_block = b.block
        out = b.phi(fast.type)
        out.add_incoming(fast, fast_block)
        out.add_incoming(slow, slow_block)
        return out

    def load(self, e: ElementEmitter, k: int, dt: DType, off: ir.Value, lanes: int, step: int,
             name: str) -> ir.Value:
        b = self.b
        st = storage_type(dt)
        addr = b.gep(self.ptrs[k], [off], source_etype=st, inbounds=self.inbounds)
        if lanes == 1 or step == 0:
            raw = self._invariant(k, b.load(addr, typ=st, align=dt.itemsize))
            return e.splat(self.to_compute(raw, dt, 1, _llname(name)))
        if step == 1:
            self._prefetch(e, k, off)
            raw = self._invariant(k, b.load(addr, typ=ir.VectorType(st, lanes), align=dt.itemsize))
            return self.to_compute(raw, dt, lanes, _llname(name))
        out = ir.Constant(ir.VectorType(scalar_type(dt), lanes), ir.Undefined)
        for lane in range(lanes):
            p = b.gep(self.ptrs[k], [b.add(off, const64(lane * step))], source_etype=st, inbounds=self.inbounds)
            x = self.to_compute(b.load(p, typ=st, align=dt.itemsize), dt, 1, "")
            out = b.insert_element(out, x, ir.Constant(ir.IntType(32), lane))
        return out

    def _invariant(self, k: int, load: ir.Instruction) -> ir.Instruction:
        if k < len(self.constant) and self.constant[k] and self.inbounds:
            load.set_metadata("invariant.load", self.llmod.add_metadata([]))
        return load

    def _prefetch(self, e: ElementEmitter, k: int, off: ir.Value) -> None:
        ahead = self.prefetch.get(k)
        if ahead:
            dt = (list(self.op.operands) + [self.out])[k].type.dtype
            e.prefetch(self.b.gep(self.ptrs[k], [self.b.add(off, const64(ahead))],
                                  source_etype=storage_type(dt)), write=k == len(self.op.operands))

    def read(self, e: ElementEmitter, bop: Op, idx: list[ir.Value], lanes: int) -> ir.Value:
        """kernel.read: indices computed in the body, clamped (or checked, for mode 'fill')."""
        b = self.b
        k = bop.attrs["input"]
        t: TensorType = self.op.operands[k].type
        dt = t.dtype
        mode = bop.attrs.get("mode", "clip")
        e64 = ElementEmitter(self.llmod, b, lanes)
        flat = e64.const(DType.I64, 0)
        valid = e64.const(DType.I1, 1)
        for i, size in zip(idx, t.shape):
            if i.type != e64.ty(DType.I64):
                i = b.sext(i, e64.ty(DType.I64))
            lo, hi = e64.const(DType.I64, 0), e64.const(DType.I64, size - 1)
            if mode == "fill":
                valid = b.and_(valid, b.and_(b.icmp_signed(">=", i, lo), b.icmp_signed("<=", i, hi)))
            i = e64.intrinsic("smin", [e64.intrinsic("smax", [i, lo]), hi])
            flat = b.add(b.mul(flat, e64.const(DType.I64, size)), i)
        st = storage_type(dt)
        if lanes == 1:
            p = b.gep(self.ptrs[k], [flat], source_etype=st, inbounds=self.inbounds)
            x = self.to_compute(b.load(p, typ=st, align=dt.itemsize), dt, 1, "")
        else:
            x = ir.Constant(e.ty(dt), ir.Undefined)
            for lane in range(lanes):
                li = ir.Constant(ir.IntType(32), lane)
                p = b.gep(self.ptrs[k], [b.extract_element(flat, li)], source_etype=st, inbounds=self.inbounds)
                x = b.insert_element(x, self.to_compute(b.load(p, typ=st, align=dt.itemsize), dt, 1, ""), li)
        if mode == "fill":
            fill = bop.attrs.get("fill")
            x = b.select(valid, x, e.const(dt, fill if fill is not None else 0))
        return x

    def to_compute(self, raw: ir.Value, dt: DType, lanes: int, name: str) -> ir.Value:
        b = self.b
        e = ElementEmitter(self.llmod, b, lanes)
        if dt is DType.F16:
            return b.fpext(raw, e.ty(dt), name=name)
        if dt is DType.BF16:
            return e.from_bf16_bits(raw)
        if dt is DType.I1:
            return b.trunc(raw, e.ty(dt), name=name)
        if name:
            raw.name = name
        return raw

    def to_storage(self, x: ir.Value, dt: DType, lanes: int) -> ir.Value:
        b = self.b
        e = ElementEmitter(self.llmod, b, lanes)
        if dt is DType.F16:
            half = ir.VectorType(ir.HalfType(), lanes) if lanes > 1 else ir.HalfType()
            return b.fptrunc(x, half)
        if dt is DType.BF16:
            return e.to_bf16_bits(x)
        if dt is DType.I1:
            i8 = ir.VectorType(ir.IntType(8), lanes) if lanes > 1 else ir.IntType(8)
            return b.zext(x, i8)
        return x

    def store(self, x: ir.Value, lanes: int) -> None:
        b = self.b
        dt = self.out.type.dtype
        out_dims = [d for d in range(len(self.dims)) if self.its[d] != "r"]
        coeffs, stride = [0] * len(self.dims), 1
        for d in reversed(out_dims):
            coeffs[d] = stride
            stride *= self.dims[d]
        off = self._offset(coeffs, 0)
        st = storage_type(dt)
        contiguous = lanes > 1 and coeffs[self.vdim] == 1
        if contiguous:
            self._prefetch(ElementEmitter(self.llmod, b, lanes), len(self.op.operands), off)
        addr = b.gep(self.ptrs[-1], [off], source_etype=st, inbounds=self.inbounds)
        stream = contiguous and self.stream_align
        ins = b.store(self.to_storage(x, dt, lanes), addr,
                      align=self.stream_align if stream else dt.itemsize)
        if stream:
            ins.set_metadata("nontemporal", self.llmod.add_metadata([ir.Constant(ir.IntType(32), 1)]))


def _llname(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._" else "_" for c in name)

