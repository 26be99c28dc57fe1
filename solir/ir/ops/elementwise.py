"""Elementwise ops: one table row per op with its numpy reference (lax semantics) and the
LLVM it emits for one element. All operands have the same shape; the frontends broadcast."""

from __future__ import annotations

import math
from typing import Any, Callable

import llvmlite.ir as ir
import numpy as np

from solir.ir.attrs import AffineMap
from solir.ir.core import Builder, Op, Value
from solir.ir.ops.kernel import build_generic
from solir.ir.registry import ELEMENTWISE, OpDef, register
from solir.ir.types import DType, TensorType, i1
from solir.lower.llvm.element import ElementEmitter

# ---- type rules -----------------------------------------------------------------------------

def _same(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    for t in types[1:]:
        if t != types[0]:
            raise ValueError(f"expected operands of one type, got {', '.join(map(str, types))}")
    return [types[0]]


def _compare(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    return [_same(types, attrs)[0].with_dtype(i1)]


def _predicate(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    return [_same(types, attrs)[0].with_dtype(i1)]


def _select(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    pred, cases = types[0], types[1:]
    out = _same(cases, attrs)[0]
    if pred.shape != out.shape or not (pred.dtype.is_bool or pred.dtype is DType.I32):
        raise ValueError(f"predicate {pred} must be i1 or i32 with the cases' shape")
    if pred.dtype.is_bool and len(cases) != 2:
        raise ValueError("an i1 predicate selects between exactly two cases")
    return [out]


def _convert(types: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    return [types[0].with_dtype(attrs["dtype"])]


def _floats_only(op: Op) -> str | None:
    if not op.operands[0].type.dtype.is_float:
        return f"'{op.name}' takes floating-point operands, got {op.operands[0].type.dtype}"
    return None


def _ints_or_bools(op: Op) -> str | None:
    if op.operands[0].type.dtype.is_float:
        return f"'{op.name}' takes integer or i1 operands, got {op.operands[0].type.dtype}"
    return None


def _numbers_only(op: Op) -> str | None:
    if op.operands[0].type.dtype.is_bool:
        return f"'{op.name}' takes numbers, not i1"
    return None


# ---- numpy references with lax semantics ---------------------------------------------------

def _err(fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(attrs: dict[str, Any], *xs: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            out = fn(*xs)
        return np.asarray(out).astype(xs[0].dtype, copy=False)
    return wrapped


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Integer division rounding toward zero; x/0 = -1 and MIN/-1 = MIN (as XLA)."""
    safe = np.where(b == 0, 1, b)
    q = np.abs(a.astype(np.int64)) // np.abs(safe.astype(np.int64))
    q = np.where((a < 0) != (safe < 0), -q, q)
    return np.where(b == 0, -1, q).astype(a.dtype)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a / b if a.dtype.kind == "f" or a.dtype.name == "bfloat16" else _int_div(a, b)


def _rem(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        safe = np.where(b == 0, 1, b)
        return np.where(b == 0, a, np.fmod(a, safe)).astype(a.dtype)
    return np.fmod(a, b)


def _round(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    if attrs.get("method", "even") == "even":
        return np.round(x)
    ax = np.abs(x)
    fl = np.floor(ax)
    r = np.where(ax - fl >= 0.5, fl + 1, fl)
    return np.copysign(r, x).astype(x.dtype)


def _vec(fn: Callable[[float], float]) -> Callable[[np.ndarray], np.ndarray]:
    def apply(x: np.ndarray) -> np.ndarray:
        flat = np.asarray(x, dtype=np.float64).ravel()
        out = np.array([fn(v) if math.isfinite(v) or not math.isnan(v) else v for v in flat])
        return out.reshape(np.shape(x)).astype(x.dtype)
    return apply


def _safe(fn: Callable[[float], float], lo: float, hi: float) -> Callable[[float], float]:
    return lambda v: lo if v == -math.inf else hi if v == math.inf else fn(v)


_erf = _vec(_safe(math.erf, -1.0, 1.0))
_erfc = _vec(_safe(math.erfc, 2.0, 0.0))


def _erf_inv_scalar(y: float) -> float:
    if y <= -1:
        return -math.inf if y == -1 else math.nan
    if y >= 1:
        return math.inf if y == 1 else math.nan
    # erf is monotone: bisect in float64 (|erf_inv(y)| < 6 for every y a double can hold < 1).
    lo, hi = -6.0, 6.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if math.erf(mid) < y:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


_erf_inv = _vec(_erf_inv_scalar)


def _convert_ref(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    dst: DType = attrs["dtype"]
    if dst.is_bool:
        return x != 0
    if dst.is_int and (x.dtype.kind == "f" or x.dtype.name == "bfloat16"):
        info = np.iinfo(dst.numpy)
        xf = np.nan_to_num(x.astype(np.float64), nan=0.0)
        return np.clip(np.trunc(xf), info.min, info.max).astype(dst.numpy)
    with np.errstate(over="ignore"):   # overflow to +-inf is the defined result
        return x.astype(dst.numpy)


def _select_ref(attrs: dict[str, Any], pred: np.ndarray, *cases: np.ndarray) -> np.ndarray:
    if pred.dtype == np.bool_:
        return np.where(pred, cases[1], cases[0])
    return np.choose(np.clip(pred, 0, len(cases) - 1), cases)


def _integer_pow(attrs: dict[str, Any], x: np.ndarray) -> np.ndarray:
    y = attrs["y"]
    with np.errstate(all="ignore"):
        acc = np.ones_like(x)
        base = x
        n = abs(y)
        while n:
            if n & 1:
                acc = acc * base
            base = base * base
            n >>= 1
        return (1 / acc).astype(x.dtype) if y < 0 else acc


# ---- LLVM emitters for one element ---------------------------------------------------------

def _float_or_int(fop: str, iop: str) -> Callable[..., ir.Value]:
    def emit(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
        dt = op.operands[0].type.dtype
        if not dt.is_float:
            return getattr(e.b, iop)(*args)
        if fop in _FMATH:   # let LLVM fuse a*b+c into an FMA
            return getattr(e.b, fop)(*args, flags=("contract",))
        return getattr(e.b, fop)(*args)
    return emit


_FMATH = {"fadd", "fsub", "fmul"}


def _emit_int_div(e: ElementEmitter, op: Op, a: ir.Value, b_: ir.Value, rem: bool) -> ir.Value:
    """sdiv/srem that never traps: x/0 and MIN/-1 are defined as in XLA."""
    dt = op.operands[0].type.dtype
    b = e.b
    zero, one, minus1 = e.const(dt, 0), e.const(dt, 1), e.const(dt, -1)
    is_zero = b.icmp_signed("==", b_, zero)
    overflow = b.and_(b.icmp_signed("==", a, e.const(dt, np.iinfo(dt.numpy).min)),
                      b.icmp_signed("==", b_, minus1))
    safe = b.select(b.or_(is_zero, overflow), one, b_)
    if rem:
        return b.select(is_zero, a, b.srem(a, safe))
    return b.select(is_zero, minus1, b.sdiv(a, safe))


def _emit_div(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    if op.operands[0].type.dtype.is_float:
        # arcp: a divisor that is the same for a whole loop (softmax's sum, layernorm's
        # deviation) becomes one reciprocal and a multiply per element (within an ulp)
        return e.b.fdiv(*args, flags=("arcp",))
    return _emit_int_div(e, op, *args, rem=False)


def _emit_rem(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    if op.operands[0].type.dtype.is_float:
        return e.b.frem(*args)
    return _emit_int_div(e, op, *args, rem=True)


def _constant_operand(op: Op) -> int | None:
    """The position of an operand that is a non-NaN constant (ReLU's 0), if one is."""
    for k, v in enumerate(op.operands):
        owner = v.owner
        if getattr(owner, "name", "") == "tensor.constant":
            value = owner.attrs["value"]
            if value.size == 1 and value.dtype.kind == "f" and not np.isnan(value).any():
                return k
    return None


def _minmax(fname: str, iname: str, bool_op: str) -> Callable[..., ir.Value]:
    def emit(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
        dt = op.operands[0].type.dtype
        if dt.is_float:
            k = _constant_operand(op)
            if k is not None:
                # max(x, c) = x < c ? c : x (NaN x stays x, as np.maximum(x, c)): one maxps
                # with the constant first, where the intrinsic takes three instructions
                x, c = args[1 - k], args[k]
                return e.b.select(e.b.fcmp_ordered("<" if fname == "maximum" else ">", x, c), c, x)
            return e.intrinsic(fname, args)   # NaN-propagating, as lax.max/min
        if dt.is_bool:
            return getattr(e.b, bool_op)(*args)
        return e.intrinsic(iname, args)
    return emit


def _intr(name: str) -> Callable[..., ir.Value]:
    return lambda e, op, args: e.intrinsic(name, args)


def _libm(name: str) -> Callable[..., ir.Value]:
    return lambda e, op, args: e.libm(name, args)


# ops whose f32 code is a long chain of dependent vector instructions (solir's polynomial
# math): the vectorizer gives their kernels wider logical vectors where the target asks
# (Target.chain_interleave), so that independent chains interleave
LONG_CHAIN_OPS: set[str] = set()


def _vmath(name: str, fallback: Callable[..., ir.Value]) -> Callable[..., ir.Value]:
    """f32 (and f16/bf16, computed in f32) through solir's vector polynomial math; f64 through
    `fallback` (libm)."""
    from solir.lower.llvm import vmath
    LONG_CHAIN_OPS.add(f"tensor.{name}")

    def emit(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
        if vmath.is_f32(args[0]):
            return getattr(vmath, name)(e, args[0])
        return fallback(e, op, args)
    return emit


def _emit_neg(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    if op.operands[0].type.dtype.is_float:
        return e.b.fneg(args[0])
    return e.b.sub(e.const(op.operands[0].type.dtype, 0), args[0])


def _emit_abs(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    if op.operands[0].type.dtype.is_float:
        return e.intrinsic("fabs", args)
    return e.intrinsic("abs", args, ir.Constant(ir.IntType(1), 0))


def _emit_sign(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    dt, x, b = op.operands[0].type.dtype, args[0], e.b
    one, minus1, zero = e.const(dt, 1), e.const(dt, -1), e.const(dt, 0)
    if dt.is_float:  # sign(±0) = ±0 and sign(nan) = nan, as lax.sign
        inner = b.select(b.fcmp_ordered("<", x, zero), minus1, x)
        return b.select(b.fcmp_ordered(">", x, zero), one, inner)
    inner = b.select(b.icmp_signed("<", x, zero), minus1, zero)
    return b.select(b.icmp_signed(">", x, zero), one, inner)


def _emit_round(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    return e.intrinsic("roundeven" if op.attrs.get("method", "even") == "even" else "round", args)


def _emit_logistic(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    dt = op.operands[0].type.dtype
    ex = e.intrinsic("exp", [e.b.fneg(args[0])])
    return e.b.fdiv(e.const(dt, 1.0), e.b.fadd(e.const(dt, 1.0), ex))


def _emit_rsqrt(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    return e.b.fdiv(e.const(op.operands[0].type.dtype, 1.0), e.intrinsic("sqrt", args))


def _emit_square(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    if op.operands[0].type.dtype.is_float:
        return e.b.fmul(args[0], args[0])
    return e.b.mul(args[0], args[0])


def _emit_is_finite(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    dt = op.operands[0].type.dtype
    return e.b.fcmp_ordered("<", e.intrinsic("fabs", args), e.const(dt, math.inf))


def _emit_integer_pow(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    y, dt, b = op.attrs["y"], op.operands[0].type.dtype, e.b
    mul = (lambda p, q: b.fmul(p, q)) if dt.is_float else (lambda p, q: b.mul(p, q))
    acc, base, n = None, args[0], abs(y)
    while n:
        if n & 1:
            acc = base if acc is None else mul(acc, base)
        n >>= 1
        if n:
            base = mul(base, base)
    acc = acc if acc is not None else e.const(dt, 1)
    return b.fdiv(e.const(dt, 1.0), acc) if y < 0 else acc


_FCMP = {"eq": ("oeq", "=="), "ne": ("une", "!="), "lt": ("olt", "<"), "le": ("ole", "<="),
         "gt": ("ogt", ">"), "ge": ("oge", ">=")}


def _compare_emit(kind: str) -> Callable[..., ir.Value]:
    fpred, ipred = _FCMP[kind]

    def emit(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
        dt = op.operands[0].type.dtype
        if dt.is_float:
            if fpred == "une":
                return e.b.fcmp_unordered("!=", *args)
            return e.b.fcmp_ordered(ipred, *args)
        if dt.is_bool:
            return e.b.icmp_unsigned(ipred, *args)
        return e.b.icmp_signed(ipred, *args)
    return emit


def _emit_not(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    return e.b.xor(args[0], e.const(op.operands[0].type.dtype, -1 if not
                                   op.operands[0].type.dtype.is_bool else 1))


def _emit_select(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    pred, cases = args[0], args[1:]
    if op.operands[0].type.dtype.is_bool:
        return e.b.select(pred, cases[1], cases[0])
    out = cases[-1]
    for k in range(len(cases) - 2, -1, -1):
        out = e.b.select(e.b.icmp_signed("<=", pred, e.const(DType.I32, k)), cases[k], out)
    return out


def _emit_clamp(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    lo, x, hi = args
    dt = op.operands[1].type.dtype
    if dt.is_float:
        return e.intrinsic("minimum", [e.intrinsic("maximum", [x, lo]), hi])
    return e.intrinsic("smin", [e.intrinsic("smax", [x, lo]), hi])


def _emit_convert(e: ElementEmitter, op: Op, args: list[ir.Value]) -> ir.Value:
    return e.convert(args[0], op.operands[0].type.dtype, op.attrs["dtype"])


# ---- the table --------------------------------------------------------------------------------

def lower_elementwise(op: Op, b: Builder) -> list[Value]:
    """Every elementwise op lowers to a generic whose body is the op itself on scalars."""
    shape = op.results[0].type.shape
    ident = AffineMap.identity(len(shape))

    def body(inner: Builder, args: list[Value]) -> list[Value]:
        return inner.op(op.name, args, op.attrs, name_hint=op.results[0].name).results

    return build_generic(b, shape, "p" * len(shape), [(v, ident) for v in op.operands], body,
                         [r.type.dtype for r in op.results], name=op.name.split(".")[-1],
                         loc=op.loc)


def _ew(name: str, arity: int, reference: Callable[..., Any], emit: Callable[..., Any], *,
        infer: Callable[..., list[TensorType]] = _same, verify: Callable[[Op], str | None] | None = None,
        attrs: tuple[str, ...] = (), optional: dict[str, Any] | None = None, doc: str = "") -> None:
    operands = ("x",) if arity == 1 else ("lhs", "rhs") if arity == 2 else ("*operands",)
    register(OpDef(name=f"tensor.{name}", operands=operands, infer=infer, attrs=attrs,
                   optional_attrs=optional or {}, verify=verify, reference=reference, emit=emit,
                   lower=lower_elementwise, kind=ELEMENTWISE, doc=doc))


def _np(fn: Callable[..., Any]) -> Callable[..., Any]:
    return _err(fn)


_ew("add", 2, _np(np.add), _float_or_int("fadd", "add"))
_ew("sub", 2, _np(np.subtract), _float_or_int("fsub", "sub"), verify=_numbers_only)
_ew("mul", 2, _np(np.multiply), _float_or_int("fmul", "mul"))
_ew("div", 2, _np(_div), _emit_div, verify=_numbers_only,
    doc="Float division; integer division rounds toward zero, x/0 = -1.")
_ew("rem", 2, _np(_rem), _emit_rem, verify=_numbers_only,
    doc="Remainder with the dividend's sign (C fmod); integer x%0 = x.")
_ew("max", 2, _np(np.maximum), _minmax("maximum", "smax", "or_"), doc="NaN-propagating max.")
_ew("min", 2, _np(np.minimum), _minmax("minimum", "smin", "and_"), doc="NaN-propagating min.")
_ew("pow", 2, _np(np.power), _intr("pow"), verify=_floats_only)
_ew("atan2", 2, _np(np.arctan2), _intr("atan2"), verify=_floats_only)
_ew("neg", 1, _np(np.negative), _emit_neg, verify=_numbers_only)
_ew("abs", 1, _np(np.abs), _emit_abs, verify=_numbers_only)
_ew("sign", 1, _np(np.sign), _emit_sign, verify=_numbers_only)
_ew("floor", 1, _np(np.floor), _intr("floor"), verify=_floats_only)
_ew("ceil", 1, _np(np.ceil), _intr("ceil"), verify=_floats_only)
_ew("round", 1, _round, _emit_round, verify=_floats_only, optional={"method": "even"},
    doc="method 'even' rounds half to even, 'away' half away from zero.")
_ew("exp", 1, _np(np.exp), _vmath("exp", _intr("exp")), verify=_floats_only)
_ew("exp2", 1, _np(np.exp2), _intr("exp2"), verify=_floats_only)
_ew("log", 1, _np(np.log), _intr("log"), verify=_floats_only)
_ew("log1p", 1, _np(np.log1p), _libm("log1p"), verify=_floats_only)
_ew("expm1", 1, _np(np.expm1), _libm("expm1"), verify=_floats_only)
_ew("tanh", 1, _np(np.tanh), _vmath("tanh", _libm("tanh")), verify=_floats_only)
_ew("logistic", 1, _np(lambda x: 1 / (1 + np.exp(-x))), _vmath("logistic", _emit_logistic),
    verify=_floats_only)
_ew("sqrt", 1, _np(np.sqrt), _intr("sqrt"), verify=_floats_only)
_ew("rsqrt", 1, _np(lambda x: 1 / np.sqrt(x)), _emit_rsqrt, verify=_floats_only)
_ew("cbrt", 1, _np(np.cbrt), _libm("cbrt"), verify=_floats_only)
_ew("square", 1, _np(np.square), _emit_square, verify=_numbers_only)
_ew("erf", 1, _np(_erf), _vmath("erf", _libm("erf")), verify=_floats_only)
_ew("erfc", 1, _np(_erfc), _vmath("erfc", _libm("erfc")), verify=_floats_only)
_ew("erf_inv", 1, _np(_erf_inv), None, verify=_floats_only,
    doc="Inverse error function; decomposed into polynomial tensor ops before lowering.")
_ew("sin", 1, _np(np.sin), _intr("sin"), verify=_floats_only)
_ew("cos", 1, _np(np.cos), _intr("cos"), verify=_floats_only)
_ew("tan", 1, _np(np.tan), _intr("tan"), verify=_floats_only)
_ew("is_finite", 1, lambda a, x: np.isfinite(x), _emit_is_finite, infer=_predicate,
    verify=_floats_only)
for _k in _FCMP:
    _ew(_k, 2, (lambda fn: lambda a, x, y: fn(x, y))(getattr(np, {
        "eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal", "gt": "greater",
        "ge": "greater_equal"}[_k])), _compare_emit(_k), infer=_compare)
_ew("and", 2, _np(np.bitwise_and), _float_or_int("and_", "and_"), verify=_ints_or_bools)
_ew("or", 2, _np(np.bitwise_or), _float_or_int("or_", "or_"), verify=_ints_or_bools)
_ew("xor", 2, _np(np.bitwise_xor), _float_or_int("xor", "xor"), verify=_ints_or_bools)
_ew("not", 1, _np(np.invert), _emit_not, verify=_ints_or_bools)
_ew("select", 3, _select_ref, _emit_select, infer=_select,
    doc="select(pred, on_false, on_true) for an i1 pred; an i32 pred indexes the cases.")
_ew("clamp", 3, lambda a, lo, x, hi: np.minimum(np.maximum(x, lo), hi), _emit_clamp,
    infer=lambda ts, a: _same(ts, a), doc="clamp(lo, x, hi) = min(max(x, lo), hi).")
_ew("convert", 1, _convert_ref, _emit_convert, infer=_convert, attrs=("dtype",),
    doc="Element type conversion; float->int saturates, NaN->0; x->i1 is x != 0.")
_ew("integer_pow", 1, _integer_pow, _emit_integer_pow, attrs=("y",), verify=_numbers_only,
    doc="x ** y for a constant integer y, by repeated multiplication.")
