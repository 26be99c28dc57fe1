"""Emitting one element of a kernel body, as a scalar or as a vector of `lanes` lanes.

Elementwise ops' `emit` entries receive an ElementEmitter and the LLVM values of their
operands; llvmlite's arithmetic is polymorphic over vectors, so one emitter serves both the
vector main loop and the scalar tail. f16 and bf16 are computed in f32 (and rounded at
conversions), as XLA does on CPUs without native half arithmetic.
"""

from __future__ import annotations

from typing import Any, Sequence

import llvmlite.ir as ir

from solir.ir.types import DType

_INT_BITS = {DType.I1: 1, DType.I8: 8, DType.I32: 32, DType.I64: 64}


def scalar_type(dtype: DType) -> ir.Type:
    """The LLVM type a value of `dtype` is computed in."""
    if dtype is DType.F64:
        return ir.DoubleType()
    if dtype.is_float:
        return ir.FloatType()
    return ir.IntType(_INT_BITS[dtype])


def storage_type(dtype: DType) -> ir.Type:
    """The LLVM type a value of `dtype` is stored in memory as."""
    if dtype is DType.F16:
        return ir.HalfType()
    if dtype is DType.BF16:
        return ir.IntType(16)
    if dtype is DType.I1:
        return ir.IntType(8)
    return scalar_type(dtype)


class ElementEmitter:
    def __init__(self, module: ir.Module, builder: ir.IRBuilder, lanes: int):
        self.module = module
        self.b = builder
        self.lanes = lanes
        # the target scales by 2^n in one instruction (set on the module by emit())
        self.vector_ldexp = bool(getattr(module, "vector_ldexp", False))

    # -- types and constants ---------------------------------------------------------------
    def ty(self, dtype: DType) -> ir.Type:
        t = scalar_type(dtype)
        return ir.VectorType(t, self.lanes) if self.lanes > 1 else t

    def const(self, dtype: DType, value: Any) -> ir.Constant:
        t = scalar_type(dtype)
        if dtype.is_float:
            c = ir.Constant(t, float(value))
        elif dtype.is_bool:
            c = ir.Constant(t, int(bool(value)))
        else:
            c = ir.Constant(t, int(value))
        if self.lanes == 1:
            return c
        return ir.Constant(ir.VectorType(t, self.lanes), [c] * self.lanes)

    def splat(self, value: ir.Value) -> ir.Value:
        if self.lanes == 1 or isinstance(value.type, ir.VectorType):
            return value
        vt = ir.VectorType(value.type, self.lanes)
        undef = ir.Constant(vt, ir.Undefined)
        one = self.b.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
        zeros = ir.Constant(ir.VectorType(ir.IntType(32), self.lanes), [0] * self.lanes)
        return self.b.shuffle_vector(one, undef, zeros)

    # -- calls -------------------------------------------------------------------------------
    def _suffix(self, t: ir.Type) -> str:
        if isinstance(t, ir.VectorType):
            return f"v{t.count}{self._suffix(t.element)}"
        if isinstance(t, ir.DoubleType):
            return "f64"
        if isinstance(t, ir.FloatType):
            return "f32"
        if isinstance(t, ir.HalfType):
            return "f16"
        return f"i{t.width}"

    def declare(self, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, list(args)), name)
        return fn

    def intrinsic(self, name: str, args: Sequence[ir.Value], *extra: ir.Value,
                  ret: ir.Type | None = None) -> ir.Value:
        """`llvm.<name>.<type suffix>` overloaded on the first argument's type."""
        t = args[0].type
        ret = ret or t
        fn = self.declare(f"llvm.{name}.{self._suffix(t)}", ret,
                          [a.type for a in args] + [e.type for e in extra])
        return self.b.call(fn, list(args) + list(extra))

    def masked_load(self, ty: ir.VectorType, ptr: ir.Value, align: int, mask: ir.Value,
                    passthru: ir.Value) -> ir.Value:
        """Lanes of `ty` at `ptr` where `mask` is set (the others are not read), else `passthru`."""
        fn = self.declare(f"llvm.masked.load.{self._suffix(ty)}.p0", ty,
                          [ptr.type, ir.IntType(32), mask.type, ty])
        return self.b.call(fn, [ptr, ir.Constant(ir.IntType(32), align), mask, passthru])

    def masked_store(self, value: ir.Value, ptr: ir.Value, align: int,
                     count: int | ir.Value) -> None:
        """Store the first `count` lanes of `value` at `ptr` (or, given an i1 vector, the lanes
        it sets)."""
        t = value.type
        i1 = ir.IntType(1)
        mask = count if isinstance(count, ir.Value) else ir.Constant(
            ir.VectorType(i1, t.count), [1] * count + [0] * (t.count - count))
        fn = self.declare(f"llvm.masked.store.{self._suffix(t)}.p0", ir.VoidType(),
                          [t, ptr.type, ir.IntType(32), mask.type])
        self.b.call(fn, [value, ptr, ir.Constant(ir.IntType(32), align), mask])

    def prefetch(self, ptr: ir.Value, write: bool = False, locality: int = 3) -> None:
        """A hint to bring the cache line at `ptr` into L1 (for writing, if `write`); a lower
        `locality` keeps it further out (2: L2)."""
        i32 = ir.IntType(32)
        fn = self.declare("llvm.prefetch.p0", ir.VoidType(), [ptr.type, i32, i32, i32])
        self.b.call(fn, [ptr, ir.Constant(i32, int(write)), ir.Constant(i32, locality),
                         ir.Constant(i32, 1)])

    def libm(self, name: str, args: Sequence[ir.Value]) -> ir.Value:
        """A libm function (`tanhf` for f32, `tanh` for f64), applied lane by lane."""
        t = args[0].type
        elem = t.element if isinstance(t, ir.VectorType) else t
        cname = name if isinstance(elem, ir.DoubleType) else name + "f"
        fn = self.declare(cname, elem, [elem] * len(args))
        if not isinstance(t, ir.VectorType):
            return self.b.call(fn, list(args))
        out = ir.Constant(t, ir.Undefined)
        for lane in range(t.count):
            idx = ir.Constant(ir.IntType(32), lane)
            lane_args = [self.b.extract_element(a, idx) for a in args]
            out = self.b.insert_element(out, self.b.call(fn, lane_args), idx)
        return out

    # -- conversions ---------------------------------------------------------------------------
    def convert(self, x: ir.Value, src: DType, dst: DType) -> ir.Value:
        """lax.convert_element_type semantics: float->int saturates and maps NaN to 0,
        anything->bool is `!= 0`, f16/bf16 results are rounded to their precision."""
        b = self.b
        if src == dst:
            return x
        if dst.is_bool:
            if src.is_float:
                return b.fcmp_unordered("!=", x, self.const(src, 0.0))
            return b.icmp_signed("!=", x, self.const(src, 0))
        if src.is_bool:
            if dst.is_float:
                return b.uitofp(x, self.ty(dst))
            return b.zext(x, self.ty(dst))
        if src.is_float and dst.is_float:
            st, dt = self.ty(src), self.ty(dst)
            if st != dt:
                x = b.fpext(x, dt) if _fbits(dt) > _fbits(st) else b.fptrunc(x, dt)
            return self.round_to(x, dst)
        if src.is_float:
            return self.intrinsic("fptosi.sat", [x], ret=self.ty(dst))
        if dst.is_float:
            return self.round_to(b.sitofp(x, self.ty(dst)), dst)
        st, dt = self.ty(src), self.ty(dst)
        if _ibits(dt) > _ibits(st):
            return b.sext(x, dt)
        return b.trunc(x, dt)

    def round_to(self, x: ir.Value, dtype: DType) -> ir.Value:
        """Round an f32 value to f16/bf16 precision (they are computed in f32)."""
        b = self.b
        if dtype is DType.F16:
            half = ir.VectorType(ir.HalfType(), self.lanes) if self.lanes > 1 else ir.HalfType()
            return b.fpext(b.fptrunc(x, half), x.type)
        if dtype is DType.BF16:
            return self.from_bf16_bits(self.to_bf16_bits(x))
        return x

    def to_bf16_bits(self, x: ir.Value) -> ir.Value:
        """f32 -> bf16 bits with round-to-nearest-even; NaN stays a quiet NaN."""
        b = self.b
        i32, i16 = self.ty(DType.I32), (ir.VectorType(ir.IntType(16), self.lanes)
                                         if self.lanes > 1 else ir.IntType(16))
        bits = b.bitcast(x, i32)
        lsb = b.and_(b.lshr(bits, self.const(DType.I32, 16)), self.const(DType.I32, 1))
        rounded = b.add(bits, b.add(lsb, self.const(DType.I32, 0x7FFF)))
        is_nan = b.fcmp_unordered("uno", x, x)
        quiet = b.or_(bits, self.const(DType.I32, 0x00400000))
        chosen = b.select(is_nan, quiet, rounded)
        return b.trunc(b.lshr(chosen, self.const(DType.I32, 16)), i16)

    def from_bf16_bits(self, bits: ir.Value) -> ir.Value:
        b = self.b
        wide = b.shl(b.zext(bits, self.ty(DType.I32)), self.const(DType.I32, 16))
        return b.bitcast(wide, self.ty(DType.F32))


def _fbits(t: ir.Type) -> int:
    t = t.element if isinstance(t, ir.VectorType) else t
    return 64 if isinstance(t, ir.DoubleType) else 32 if isinstance(t, ir.FloatType) else 16


def _ibits(t: ir.Type) -> int:
    t = t.element if isinstance(t, ir.VectorType) else t
    return t.width
