"""Vector transcendental math for f32, written as straight-line LLVM IR (no libm calls), so a
vector lane computes exactly what a scalar does and loops stay vectorized.

    exp   Cody-Waite reduction x = n ln2 + r, a degree-6 minimax polynomial on |r| <= ln2/2;
          2^n added to the result's exponent bits when a whole vector is within +-86 (one
          branch per vector), else applied as two exact scalings so results down into the
          subnormals round once (or one ldexp where the target has it as an instruction,
          AVX-512 vscalefps with the float exponent directly: the same bits)
    tanh  the 13/6 odd/even rational approximation XLA and Eigen use, as x (P / Q) on x
          clamped to +-9 (where it rounds to exactly +-1): one division and nine multiply-adds,
          no select (tiny and subnormal x come out as x times a ratio within 2e-7 of 1, and
          NaN passes the clamps); half the instructions of a polynomial near 0 with
          1 - 2 / (exp(2|x|) + 1) above it
    erf   the odd/even rational approximation XLA and Eigen use on [-4, 4] (+-1 beyond);
          x * 2/sqrt(pi) for |x| < 2^-60, where the rational form would lose subnormal bits
    erfc  exp(-x^2) P(u) / (1 + 2|x|) with u = (|x| - 2) / (|x| + 2), P of degree 9 (after
          Shepherd and Laframboise's erfcx), one formula over the whole range: no branch per
          lane and no cancellation, with x^2 split exactly in two so that exp(-x^2) stays
          accurate far into the tail
    logistic  1 / (1 + exp(-x)), or exp(x) / (1 + exp(x)) for x < 0

Each keeps NaN (x != x selects x itself, or clamps that let it pass), +-inf and signed
zero right; tests/test_vmath.py measures the error in ulps against numpy in float64 over the
whole float range (exp 1 ulp; logistic 2; tanh 4; erfc 5; erf 6). f64 goes to libm
(correctly rounded there; its vector forms would need a vector libm).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import llvmlite.ir as ir

if TYPE_CHECKING:
    from solir.lower.llvm.element import ElementEmitter

F32 = ir.FloatType()


def is_f32(x: ir.Value) -> bool:
    t = x.type.element if isinstance(x.type, ir.VectorType) else x.type
    return isinstance(t, ir.FloatType)


def _c(e: "ElementEmitter", v: float) -> ir.Constant:
    c = ir.Constant(F32, v)
    return ir.Constant(ir.VectorType(F32, e.lanes), [c] * e.lanes) if e.lanes > 1 else c


def _i(e: "ElementEmitter", v: int) -> ir.Constant:
    t = ir.IntType(32)
    c = ir.Constant(t, v)
    return ir.Constant(ir.VectorType(t, e.lanes), [c] * e.lanes) if e.lanes > 1 else c


def _i32(e: "ElementEmitter") -> ir.Type:
    return ir.VectorType(ir.IntType(32), e.lanes) if e.lanes > 1 else ir.IntType(32)


def _fma(e: "ElementEmitter", a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
    return e.intrinsic("fmuladd", [a, b, c])


def _horner(e: "ElementEmitter", x: ir.Value, coeffs: list[float]) -> ir.Value:
    """coeffs[0] * x^(n-1) + ... + coeffs[-1]"""
    acc = _c(e, coeffs[0])
    for c in coeffs[1:]:
        acc = _fma(e, acc, x, _c(e, c))
    return acc


def _keep_nan(e: "ElementEmitter", x: ir.Value, y: ir.Value) -> ir.Value:
    return e.b.select(e.b.fcmp_unordered("uno", x, x), x, y)


def _pow2(e: "ElementEmitter", n: ir.Value) -> ir.Value:
    """2^n as a float, for integer n in [-126, 127]."""
    b = e.b
    return b.bitcast(b.shl(b.add(n, _i(e, 127)), _i(e, 23)), x_type(e))


def x_type(e: "ElementEmitter") -> ir.Type:
    return ir.VectorType(F32, e.lanes) if e.lanes > 1 else F32


def _scalef(e: "ElementEmitter") -> bool:
    """AVX-512's vscalefps applies 2^n with n as a float: NaN in, NaN out."""
    return e.vector_ldexp and e.lanes == 16 and e.module.triple.startswith("x86_64")


def exp(e: "ElementEmitter", x: ir.Value) -> ir.Value:
    """exp, NaN in NaN out (by itself: see _exp_full). A vector whose lanes are all within +-86 (every lane of nearly
    every vector an ML model feeds exp) takes the short path: 2^n goes straight into the
    polynomial's exponent bits, two integer instructions. Any other vector (NaN, infinities,
    results that overflow or reach the subnormals) takes the full path below; both give the
    same bits where both apply, so the branch never changes a result."""
    if e.lanes == 1 or e.vector_ldexp:
        return _exp_full(e, x)
    b = e.b
    wide = b.fcmp_unordered(">", e.intrinsic("fabs", [x]), _c(e, _EXP_SHORT))   # NaN: true
    with b.if_else(_any(e, wide), likely=False) as (full, short):
        with full:
            y_full, full_end = _exp_full(e, x), b.block
        with short:
            t, n, p = _exp_reduced(e, x)
            # p in [0.7, 1.42] has biased exponent 126 or 127; adding n in [-125, 125] keeps it
            # normal. t's bits are 1.5 * 2^23's plus n, and that constant's bits shifted left
            # by 23 are 0 mod 2^32, so n << 23 is t's bits << 23
            bits = b.add(b.bitcast(p, _i32(e)), b.shl(b.bitcast(t, _i32(e)), _i(e, 23)))
            y_short, short_end = b.bitcast(bits, x_type(e)), b.block
    y = b.phi(y_full.type)
    y.add_incoming(y_full, full_end)
    y.add_incoming(y_short, short_end)
    return y


def _any(e: "ElementEmitter", mask: ir.Value) -> ir.Value:
    """Whether any lane of an i1 vector is set: its halves or'ed together as 32-bit masks
    down to 8 lanes, then one test (vptest on x86; llvm.vector.reduce.or packs the
    lanes' bits down instead, 11 instructions for 32 lanes on AVX2 where this takes 6)."""
    b = e.b
    n = mask.type.count
    m = b.sext(mask, ir.VectorType(ir.IntType(32), n))
    while n > 8 and n % 2 == 0:
        n //= 2
        lo, hi = (b.shuffle_vector(m, m, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                     list(range(k, k + n)))) for k in (0, n))
        m = b.or_(lo, hi)
    wide = ir.IntType(32 * n)
    return b.icmp_unsigned("!=", b.bitcast(m, wide), ir.Constant(wide, 0))


_EXP_SHORT = 86.0               # |x| <= this: n = round(x log2 e) is within [-125, 125]
_ROUND_MAGIC = 12582912.0       # 1.5 * 2^23: v + this, for |v| < 2^22, is v rounded to an
_ROUND_MAGIC_BITS = 0x4B400000  # integer, in the low bits of the sum's mantissa


def _exp_reduced(e: "ElementEmitter", x: ir.Value) -> tuple[ir.Value, ir.Value, ir.Value]:
    """x = n ln2 + r: (t, n, p) with t = n + 1.5 * 2^23 (n in its low mantissa bits), n as a
    float, and p = e^r (1 + r + r^2 Q(r), Q in Estrin's form: half Horner's dependent chain,
    so interleaved vectors overlap)."""
    b = e.b
    t = _fma(e, x, _c(e, 1.44269504088896341), _c(e, _ROUND_MAGIC))
    n = b.fsub(t, _c(e, _ROUND_MAGIC))
    r = _fma(e, n, _c(e, -0.693359375), x)            # x - n ln2, ln2 in two parts
    r = _fma(e, n, _c(e, 2.12194440e-4), r)
    r2 = b.fmul(r, r)
    c = _EXP_Q
    q = _fma(e, _fma(e, _c(e, c[0]), r2, _fma(e, _c(e, c[1]), r, _c(e, c[2]))), r2,
             _fma(e, _c(e, c[3]), r, _c(e, c[4])))
    return t, n, _fma(e, q, r2, b.fadd(r, _c(e, 1.0)))


# e^r = 1 + r + r^2 Q(r) on |r| <= ln2/2: Q of degree 4, minimax for e^r's relative error
# (Lawson's algorithm; 3.3e-9 before rounding, well under f32's half ulp), one FMA fewer
# than Cephes' degree-5 Q at the same float32 error (1.08 ulp at most on the interval)
_EXP_Q = [0.0013791732490062714, 0.008368831127882004, 0.04166880249977112, 0.1666651964187622,
          0.49999991059303284]


def _exp_full(e: "ElementEmitter", x: ir.Value) -> ir.Value:
    """exp over the whole float range: the clamps keep a NaN (x < lo ? lo : x, one maxps/minps
    each), and n = round(x log2 e) comes from adding 1.5 * 2^23 (n as a float is the sum
    minus that, as an integer the sum's bits minus its bits): no fptosi, whose NaN is poison
    in LLVM, so no select to put NaN back, and rint's rounding and conversion become one FMA
    and one integer subtraction. 2^n is applied as two exact scalings, so that results in
    the subnormals round once."""
    b = e.b
    xc = _clamp(e, x, -104.0, 89.0)
    t, n, p = _exp_reduced(e, xc)
    if _scalef(e):
        # AVX-512's vscalefps takes the exponent as a float: no conversion either way
        ty = p.type
        fn = e.declare("llvm.x86.avx512.mask.scalef.ps.512", ty,
                       [ty, ty, ty, ir.IntType(16), ir.IntType(32)])
        return b.call(fn, [p, n, ir.Constant(ty, None), ir.Constant(ir.IntType(16), -1),
                           ir.Constant(ir.IntType(32), 4)])     # 4: the current rounding mode
    ni = b.sub(b.bitcast(t, _i32(e)), _i(e, _ROUND_MAGIC_BITS))
    if e.vector_ldexp:          # one rounding either way: the same bits
        it = ni.type
        suffix = f"v{e.lanes}f32.v{e.lanes}i32" if e.lanes > 1 else "f32.i32"
        fn = e.declare(f"llvm.ldexp.{suffix}", p.type, [p.type, it])
        return b.call(fn, [p, ni])
    n1 = b.ashr(ni, _i(e, 1))
    n2 = b.sub(ni, n1)
    return b.fmul(b.fmul(p, _pow2(e, n1)), _pow2(e, n2))


_TANH_P = [-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11,
           5.12229709037114e-08, 1.48572235717979e-05, 6.37261928875436e-04,
           4.89352455891786e-03]
_TANH_Q = [1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03,
           4.89352518554385e-03]


def tanh(e: "ElementEmitter", x: ir.Value) -> ir.Value:
    """x P(x^2) / Q(x^2) as x (P / Q), on x clamped to +-9: there the quotient rounds to
    exactly +-1 (at XLA's clamp, 7.905, it gives 0.9999997 in this order), and between 7.9
    and 9 it stays within 4 ulp. The ratio is within 2e-7 of 1 near 0, so tiny and subnormal
    x come out as x times it, rounded once (no select for them). The clamps keep a NaN
    (x < lo ? lo : x, one maxps/minps each), so NaN flows through to the result."""
    b = e.b
    xc = _clamp(e, x, -9.0, 9.0)
    z = b.fmul(xc, xc)
    return b.fmul(xc, b.fdiv(_horner(e, z, _TANH_P), _horner(e, z, _TANH_Q)))


def _clamp(e: "ElementEmitter", x: ir.Value, lo: float, hi: float) -> ir.Value:
    """min(max(x, lo), hi), NaN in NaN out: x < lo ? lo : x, then x > hi ? hi : x (an
    unordered compare is false, so NaN passes; one maxps and one minps on x86)."""
    b = e.b
    x = b.select(b.fcmp_ordered("<", x, _c(e, lo)), _c(e, lo), x)
    return b.select(b.fcmp_ordered(">", x, _c(e, hi)), _c(e, hi), x)


_ERF_ALPHA = [-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
              -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02]
_ERF_BETA = [-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
             -7.37332916720468e-03, -1.42647390514189e-02]


def erf(e: "ElementEmitter", x: ir.Value) -> ir.Value:
    b = e.b
    xc = e.intrinsic("minnum", [e.intrinsic("maxnum", [x, _c(e, -4.0)]), _c(e, 4.0)])
    z = b.fmul(xc, xc)
    p = b.fmul(_horner(e, z, _ERF_ALPHA), xc)
    q = _horner(e, z, _ERF_BETA)
    y = b.fdiv(p, q)
    tiny = b.fcmp_ordered("<", e.intrinsic("fabs", [x]), _c(e, 2.0 ** -60))
    y = b.select(tiny, b.fmul(x, _c(e, 1.1283791670955126)), y)
    return _keep_nan(e, x, y)


# erfc(t) exp(t^2) (1 + 2t) as a polynomial in u = (t - 2) / (t + 2), for t in [0, 10.5]
# (u in [-1, 0.68]): degree 9, minimax for the relative error (Lawson's algorithm, 1.7e-8
# before rounding), after Shepherd and Laframboise's Chebyshev series for erfcx
_ERFC_K = 2.0
_ERFC_U = [-0.0004008524992968887, -0.0012277476489543915, 0.001317278598435223,
           0.008630909956991673, -0.008062588982284069, -0.05420441925525665,
           0.1640559285879135, -0.1660313904285431, -0.09276401251554489, 1.2769783735275269]


def erfc(e: "ElementEmitter", x: ir.Value) -> ir.Value:
    """erfc(|x|) = exp(-x^2) P(u) / (1 + 2|x|), u = (|x| - 2) / (|x| + 2): one formula from 0
    to 10.5 (past it the result is 0 in f32; clamping there keeps x^2 finite), with no
    cancellation anywhere, so no branch per lane; erfc(x) = 2 - erfc(|x|) for x < 0. One
    division gives both u and 1 / (1 + 2|x|). x^2 is split exactly into hi + lo so that
    exp(-x^2) keeps its accuracy far into the tail: exp(-hi) (1 - lo)."""
    b = e.b
    t = e.intrinsic("minnum", [e.intrinsic("fabs", [x]), _c(e, 10.5)])
    hi = b.fmul(t, t)
    lo = _fma(e, t, t, b.fneg(hi))
    s = _fma(e, t, _c(e, 2.0), _c(e, 1.0))                         # 1 + 2t
    tk = b.fadd(t, _c(e, _ERFC_K))
    r = b.fdiv(_c(e, 1.0), b.fmul(tk, s))                          # 1 / ((t + K)(1 + 2t))
    u = b.fmul(b.fmul(b.fsub(t, _c(e, _ERFC_K)), s), r)
    w = b.fmul(tk, r)                                              # 1 / (1 + 2t)
    m = b.fmul(b.fmul(b.fsub(_c(e, 1.0), lo), w), _horner(e, u, _ERFC_U))
    y = b.fmul(exp(e, b.fneg(hi)), m)           # one rounding where the result is subnormal
    y = b.select(b.fcmp_ordered("<", x, _c(e, 0.0)), b.fsub(_c(e, 2.0), y), y)
    return _keep_nan(e, x, y)


def logistic(e: "ElementEmitter", x: ir.Value) -> ir.Value:
    """1 / (1 + e^-x) for x >= 0 and e^x / (1 + e^x) below, so e^-|x| never overflows and
    tiny results keep their subnormal bits."""
    b = e.b
    t = exp(e, b.fneg(e.intrinsic("fabs", [x])))
    d = b.fadd(_c(e, 1.0), t)
    y = b.select(b.fcmp_ordered(">=", x, _c(e, 0.0)), b.fdiv(_c(e, 1.0), d), b.fdiv(t, d))
    return _keep_nan(e, x, y)
