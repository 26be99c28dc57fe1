"""fold-constants (evaluate ops whose operands are all constants with the reference
interpreter) and decompose (rewrite composite ops such as erf_inv into simpler ones)."""

from __future__ import annotations

import numpy as np

from solir.ir.core import Builder, Module, Op, Value
from solir.ir.interpreter import _run_op
from solir.lower.pipeline import PassContext, pass_
from solir.lower.rewrite import dce, rewrite_block


def _is_const(v: Value) -> bool:
    return getattr(v.owner, "name", "") == "tensor.constant"


@pass_("fold-constants")
def fold_constants(module: Module, ctx: PassContext) -> Module:
    """Evaluate ops on constants at compile time, unless that grows the constant data."""
    limit = ctx.options.fold_limit

    def fold(op: Op, b: Builder) -> list[Value] | None:
        if (not op.operands or op.regions or not op.results or op.opdef.reference is None
                or not all(_is_const(v) for v in op.operands)):
            return None
        out_size = sum(r.type.size for r in op.results)
        in_size = sum(v.type.size for v in op.operands)
        if out_size > limit or out_size > max(in_size, 64):  # never inflate constant data
            return None
        values = _run_op(op, [v.owner.attrs["value"] for v in op.operands], {})  # type: ignore[union-attr]
        return [b.op("tensor.constant", [], {"value": np.array(val, order="C")},
                     name_hint=r.name).result for val, r in zip(values, op.results)]

    for f in module.funcs:
        rewrite_block(f.body, fold)
        dce(f.body)
    return module


# Giles, "Approximating the erfinv function" (GPU Computing Gems, 2011), as XLA uses it.
_ERFINV_SMALL = [2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087,
                 -0.00125372503, -0.00417768164, 0.246640727, 1.50140941]
_ERFINV_LARGE = [-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773,
                 -0.0076224613, 0.00943887047, 1.00167406, 2.83297682]


def _decompose_erf_inv(op: Op, b: Builder) -> list[Value]:
    x = op.operands[0]
    t = x.type

    def c(v: float) -> Value:
        s = b.op("tensor.constant", [], {"value": np.array(v, t.dtype.numpy)}).result
        return b("tensor.broadcast_in_dim", s, shape=t.shape, broadcast_dimensions=())

    def poly(w: Value, coeffs: list[float]) -> Value:
        p = c(coeffs[0])
        for k in coeffs[1:]:
            p = b("tensor.add", c(k), b("tensor.mul", p, w))
        return p

    w = b("tensor.neg", b("tensor.log", b("tensor.mul", b("tensor.sub", c(1.0), x),
                                                    b("tensor.add", c(1.0), x))))
    small = poly(b("tensor.sub", w, c(2.5)), _ERFINV_SMALL)
    large = poly(b("tensor.sub", b("tensor.sqrt", w), c(3.0)), _ERFINV_LARGE)
    p = b("tensor.select", b("tensor.lt", w, c(5.0)), large, small)
    result = b("tensor.mul", p, x)
    at_one = b("tensor.eq", b("tensor.abs", x), c(1.0))
    return [b("tensor.select", at_one, result, b("tensor.mul", x, c(np.inf)))]


DECOMPOSITIONS = {"tensor.erf_inv": _decompose_erf_inv}


@pass_("decompose")
def decompose(module: Module, ctx: PassContext) -> Module:
    """Rewrite composite ops into ops with a lowering (erf_inv into a polynomial)."""

    def rewrite(op: Op, b: Builder) -> list[Value] | None:
        fn = op.opdef.decompose or DECOMPOSITIONS.get(op.name)
        if fn is None:
            return None
        return fn(op, b)

    for f in module.funcs:
        rewrite_block(f.body, rewrite)
    from solir.lower.canonicalize import cse
    cse(module)      # decompositions repeat constants; share them
    return module

