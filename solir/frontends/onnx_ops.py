"""ONNX operators -> tensor ops: one rule per op_type (the table `RULES` in onnx_graph.py).
Rules translate only; everything computable at compile time folds as it is built."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from solir.errors import UnsupportedOpError
from solir.frontends.onnx_graph import OnnxTranslator, onnx_dtype, rule
from solir.ir.core import Value
from solir.ir.types import DType

T = OnnxTranslator
Ins = list  # list[Value | None]


def _axis(axis: int, rank: int, t: T) -> int:
    if not -rank <= axis < max(rank, 1):
        raise UnsupportedOpError(f"axis {axis} is out of range for rank {rank}", loc=t.b.loc)
    return axis % rank if rank else 0


def _raw_axes(t: T, node: Any, ins: Ins, input_index: int = 1) -> list[int] | None:
    """Axes as given: the attribute (older opsets) or the optional input (newer); None = absent."""
    axes = t.attr(node, "axes")
    if axes is None and len(ins) > input_index and ins[input_index] is not None:
        axes = t.need_const(ins[input_index], "axes")
    return None if axes is None else [int(a) for a in np.ravel(axes)]


def _axes(t: T, node: Any, ins: Ins, rank: int, input_index: int = 1) -> tuple[int, ...] | None:
    """The axes, made non-negative and sorted; None = absent."""
    raw = _raw_axes(t, node, ins, input_index)
    return None if raw is None else tuple(sorted(_axis(a, rank, t) for a in raw))


# ---- elementwise --------------------------------------------------------------------------------

_UNARY = {"Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Sqrt": "sqrt", "Ceil": "ceil",
          "Floor": "floor", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Tanh": "tanh", "Erf": "erf",
          "Sign": "sign", "Not": "not", "Sigmoid": "logistic"}


@rule(*_UNARY)
def _unary(t: T, node: Any, ins: Ins) -> list[Value]:
    return [t.op(f"tensor.{_UNARY[node.op_type]}", ins[0])]


_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow",
           "Equal": "eq", "Less": "lt", "LessOrEqual": "le", "Greater": "gt",
           "GreaterOrEqual": "ge", "And": "and", "Or": "or", "Xor": "xor"}


@rule(*_BINARY)
def _binary(t: T, node: Any, ins: Ins) -> list[Value]:
    a, b = ins
    if t.attr(node, "broadcast", 0) and t.version < 7:
        # opset < 7: b broadcasts onto a with its dims starting at `axis` (default: trailing)
        axis = t.attr(node, "axis", a.type.rank - b.type.rank) % max(a.type.rank, 1)
        b = t.op("tensor.broadcast_in_dim", b, shape=a.type.shape,
                 broadcast_dimensions=tuple(range(axis, axis + b.type.rank)))
    if node.op_type == "Pow":
        if not a.type.dtype.is_float:    # numpy semantics: computed in float64, cast back
            a64, b64 = t.broadcast(t.convert(a, DType.F64), t.convert(b, DType.F64))
            return [t.convert(t.op("tensor.pow", a64, b64), a.type.dtype)]
        b = t.convert(b, a.type.dtype)
        c = t.const_value(b)
        if c is not None and c.size == 1 and float(c.reshape(())) == 2.0:
            return [t.op("tensor.square", t.broadcast(a, b)[0])]
    a, b = t.broadcast(a, b)
    return [t.op(f"tensor.{_BINARY[node.op_type]}", a, b)]


@rule("Max", "Min", "Sum", "Mean")
def _variadic(t: T, node: Any, ins: Ins) -> list[Value]:
    vs = t.broadcast(*ins)
    name = {"Max": "max", "Min": "min", "Sum": "add", "Mean": "add"}[node.op_type]
    acc = vs[0]
    for v in vs[1:]:
        acc = t.op(f"tensor.{name}", acc, v)
    if node.op_type == "Mean":
        acc = t.op("tensor.div", acc, t.scalar(len(vs), acc))
    return [acc]


@rule("Mod")
def _mod(t: T, node: Any, ins: Ins) -> list[Value]:
    a, b = t.broadcast(*ins)
    r = t.op("tensor.rem", a, b)      # C fmod: the sign of the dividend
    if t.attr(node, "fmod", 0):
        return [r]
    # Python-style: the sign of the divisor
    zero = t.scalar(0, r)
    fix = t.op("tensor.and", t.op("tensor.ne", r, zero),
               t.op("tensor.ne", t.op("tensor.lt", r, zero), t.op("tensor.lt", b, zero)))
    return [t.op("tensor.select", fix, r, t.op("tensor.add", r, b))]


@rule("Reciprocal")
def _reciprocal(t: T, node: Any, ins: Ins) -> list[Value]:
    return [t.op("tensor.div", t.scalar(1, ins[0]), ins[0])]


@rule("Acos")
def _acos(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    s = t.op("tensor.sqrt", t.op("tensor.sub", t.scalar(1, x), t.op("tensor.mul", x, x)))
    return [t.op("tensor.atan2", s, x)]


@rule("Round")
def _round(t: T, node: Any, ins: Ins) -> list[Value]:
    return [t.op("tensor.round", ins[0], method="even")]


@rule("Relu")
def _relu(t: T, node: Any, ins: Ins) -> list[Value]:
    return [t.op("tensor.max", ins[0], t.scalar(0, ins[0]))]


@rule("LeakyRelu", "PRelu")
def _leaky(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    if node.op_type == "PRelu":
        slope = ins[1]
        if t.version < 7 and slope.type.rank == 1 and x.type.rank > 1 and \
                slope.type.shape[0] == x.type.shape[1] != x.type.shape[-1]:
            slope = _reshape(t, slope, (slope.type.shape[0],) + (1,) * (x.type.rank - 2))  # per channel
        x, slope = t.broadcast(x, slope)
    else:
        slope = t.scalar(t.attr(node, "alpha", 0.01), x)
    neg = t.op("tensor.lt", x, t.scalar(0, x))
    return [t.op("tensor.select", neg, x, t.op("tensor.mul", x, slope))]


def _elu_like(t: T, x: Value, alpha: float, scale: float = 1.0, celu: bool = False) -> Value:
    inner = t.op("tensor.div", x, t.scalar(alpha, x)) if celu else x
    neg = t.op("tensor.mul", t.scalar(alpha, x), t.op("tensor.expm1", inner))
    pos = t.op("tensor.gt", x, t.scalar(0, x))
    if celu:
        return t.op("tensor.add", t.op("tensor.max", x, t.scalar(0, x)),
                    t.op("tensor.min", t.scalar(0, x), neg))
    y = t.op("tensor.select", pos, neg, x)
    return y if scale == 1.0 else t.op("tensor.mul", y, t.scalar(scale, x))


@rule("Elu")
def _elu(t: T, node: Any, ins: Ins) -> list[Value]:
    return [_elu_like(t, ins[0], t.attr(node, "alpha", 1.0))]


@rule("Selu")
def _selu(t: T, node: Any, ins: Ins) -> list[Value]:
    return [_elu_like(t, ins[0], t.attr(node, "alpha", 1.67326319217681884765625),
                      t.attr(node, "gamma", 1.05070102214813232421875))]


@rule("Celu")
def _celu(t: T, node: Any, ins: Ins) -> list[Value]:
    return [_elu_like(t, ins[0], t.attr(node, "alpha", 1.0), celu=True)]


@rule("HardSigmoid", "HardSwish")
def _hard(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    alpha = t.attr(node, "alpha", 0.2) if node.op_type == "HardSigmoid" else 1 / 6
    beta = t.attr(node, "beta", 0.5)
    y = t.op("tensor.add", t.op("tensor.mul", x, t.scalar(alpha, x)), t.scalar(beta, x))
    y = t.op("tensor.clamp", t.scalar(0, x), y, t.scalar(1, x))
    return [y if node.op_type == "HardSigmoid" else t.op("tensor.mul", x, y)]


def _softplus(t: T, x: Value) -> Value:
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), exact and overflow-free
    return t.op("tensor.add", t.op("tensor.max", x, t.scalar(0, x)),
                t.op("tensor.log1p", t.op("tensor.exp", t.op("tensor.neg", t.op("tensor.abs", x)))))


@rule("Softplus")
def _softplus_rule(t: T, node: Any, ins: Ins) -> list[Value]:
    return [_softplus(t, ins[0])]


@rule("Softsign")
def _softsign(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    return [t.op("tensor.div", x, t.op("tensor.add", t.scalar(1, x), t.op("tensor.abs", x)))]


@rule("Mish")
def _mish(t: T, node: Any, ins: Ins) -> list[Value]:
    return [t.op("tensor.mul", ins[0], t.op("tensor.tanh", _softplus(t, ins[0])))]


@rule("Gelu")
def _gelu(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    if t.attr(node, "approximate", "none") == "tanh":
        inner = t.op("tensor.mul", t.scalar(np.sqrt(2 / np.pi), x),
                     t.op("tensor.add", x, t.op("tensor.mul", t.scalar(0.044715, x),
                                                t.op("tensor.integer_pow", x, y=3))))
        cdf = t.op("tensor.add", t.scalar(1, x), t.op("tensor.tanh", inner))
    else:
        cdf = t.op("tensor.add", t.scalar(1, x),
                   t.op("tensor.erf", t.op("tensor.mul", x, t.scalar(1 / np.sqrt(2), x))))
    return [t.op("tensor.mul", t.op("tensor.mul", x, t.scalar(0.5, x)), cdf)]


@rule("Clip")
def _clip(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    if lo is None and t.attr(node, "min") is not None:
        lo = t.constant(np.array(t.attr(node, "min"), x.type.dtype.numpy))
    if hi is None and t.attr(node, "max") is not None:
        hi = t.constant(np.array(t.attr(node, "max"), x.type.dtype.numpy))
    if lo is not None:
        x = t.op("tensor.max", x, t.broadcast_to(lo, x.type.shape))
    if hi is not None:
        x = t.op("tensor.min", x, t.broadcast_to(hi, x.type.shape))
    return [x]


@rule("Where")
def _where(t: T, node: Any, ins: Ins) -> list[Value]:
    c, a, b = t.broadcast(*ins)
    return [t.op("tensor.select", c, b, a)]


@rule("Cast")
def _cast(t: T, node: Any, ins: Ins) -> list[Value]:
    return [t.convert(ins[0], onnx_dtype(t.attr(node, "to"), t.b.loc))]


@rule("CastLike")
def _cast_like(t: T, node: Any, ins: Ins) -> list[Value]:
    return [t.convert(ins[0], ins[1].type.dtype)]


@rule("Identity", "Dropout")
def _identity(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    if node.op_type == "Dropout":
        training = ins[2] if len(ins) > 2 else None
        if training is not None and bool(t.need_const(training, "training_mode")):
            raise UnsupportedOpError("Dropout in training mode", loc=t.b.loc,
                                     fix="export the model for inference")
        mask = t.broadcast_to(t.constant(np.array(True)), x.type.shape)
        return [x, mask]
    return [x]


# ---- constants and shapes ------------------------------------------------------------------------

@rule("Constant")
def _constant(t: T, node: Any, ins: Ins) -> list[Value]:
    import onnx.numpy_helper as nh
    for a in node.attribute:
        v = t.attr(node, a.name)
        if a.name == "value":
            onnx_dtype(v.data_type, t.b.loc)
            return [t.constant(nh.to_array(v))]
        if a.name in ("value_float", "value_floats"):
            return [t.constant(np.array(v, np.float32))]
        if a.name in ("value_int", "value_ints"):
            return [t.constant(np.array(v, np.int64))]
    raise UnsupportedOpError("Constant with no supported value attribute", loc=t.b.loc)


@rule("ConstantOfShape")
def _constant_of_shape(t: T, node: Any, ins: Ins) -> list[Value]:
    import onnx.numpy_helper as nh
    shape = tuple(int(d) for d in t.need_const(ins[0], "the shape"))
    v = t.attr(node, "value")
    scalar = nh.to_array(v).reshape(()) if v is not None else np.array(0.0, np.float32)
    return [t.broadcast_to(t.constant(scalar), shape)]


@rule("Shape")
def _shape(t: T, node: Any, ins: Ins) -> list[Value]:
    shape = ins[0].type.shape
    r = len(shape)
    start, end = t.attr(node, "start", 0), t.attr(node, "end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return [t.constant(np.array(shape[start:end], np.int64))]


@rule("Size")
def _size(t: T, node: Any, ins: Ins) -> list[Value]:
    return [t.constant(np.array(ins[0].type.size, np.int64))]


@rule("Range")
def _range(t: T, node: Any, ins: Ins) -> list[Value]:
    start, limit, delta = (t.need_const(v, "Range bounds") for v in ins)
    return [t.constant(np.arange(start, limit, delta).astype(start.dtype))]


@rule("EyeLike")
def _eye_like(t: T, node: Any, ins: Ins) -> list[Value]:
    n, m = ins[0].type.shape
    dt = t.attr(node, "dtype")
    dtype = onnx_dtype(dt, t.b.loc).numpy if dt is not None else ins[0].type.dtype.numpy
    return [t.constant(np.eye(n, m, k=t.attr(node, "k", 0), dtype=dtype))]


def _reshape(t: T, x: Value, shape: Sequence[int]) -> Value:
    shape = tuple(int(d) for d in shape)
    return x if shape == x.type.shape else t.op("tensor.reshape", x, shape=shape)


@rule("Reshape")
def _reshape_rule(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    shape = [int(d) for d in t.need_const(ins[1], "the target shape of Reshape")]
    allowzero = t.attr(node, "allowzero", 0)
    shape = [x.type.shape[k] if d == 0 and not allowzero else d for k, d in enumerate(shape)]
    if shape.count(-1) > 1:
        raise UnsupportedOpError(f"Reshape to {shape} has more than one -1", loc=t.b.loc)
    if -1 in shape:
        known = int(np.prod([d for d in shape if d != -1]))
        shape[shape.index(-1)] = x.type.size // known if known else 0
    if int(np.prod(shape)) != x.type.size:
        raise UnsupportedOpError(f"cannot reshape {x.type} to {shape}", loc=t.b.loc)
    return [_reshape(t, x, shape)]


@rule("Flatten")
def _flatten(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    axis = t.attr(node, "axis", 1)
    axis = axis + x.type.rank if axis < 0 else axis
    lead = int(np.prod(x.type.shape[:axis]))
    return [_reshape(t, x, (lead, x.type.size // lead if lead else 0))]


@rule("Squeeze", "Unsqueeze")
def _squeeze(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    if node.op_type == "Squeeze":
        axes = _axes(t, node, ins, x.type.rank)
        if axes is None:
            axes = tuple(k for k, d in enumerate(x.type.shape) if d == 1)
        return [_reshape(t, x, [d for k, d in enumerate(x.type.shape) if k not in axes])]
    rank = x.type.rank + len(_raw_axes(t, node, ins) or ())
    axes = _axes(t, node, ins, rank) or ()
    dims = iter(x.type.shape)
    return [_reshape(t, x, [1 if k in axes else next(dims) for k in range(rank)])]


@rule("Transpose")
def _transpose(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    perm = t.attr(node, "perm") or list(reversed(range(x.type.rank)))
    if list(perm) == list(range(x.type.rank)):
        return [x]
    return [t.op("tensor.transpose", x, permutation=tuple(perm))]


@rule("Concat")
def _concat(t: T, node: Any, ins: Ins) -> list[Value]:
    vs = [v for v in ins if v is not None and v.type.size > 0] or [ins[0]]
    axis = _axis(t.attr(node, "axis"), vs[0].type.rank, t)
    return [vs[0] if len(vs) == 1 else t.op("tensor.concatenate", *vs, dimension=axis)]


def _slice(t: T, x: Value, axis: int, start: int, stop: int, step: int = 1) -> Value:
    n = x.type.rank
    lo, hi, st = [0] * n, list(x.type.shape), [1] * n
    lo[axis], hi[axis], st[axis] = start, stop, step
    return t.op("tensor.slice", x, start=tuple(lo), limit=tuple(hi), strides=tuple(st))


@rule("Split")
def _split(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    axis = _axis(t.attr(node, "axis", 0), x.type.rank, t)
    n = x.type.shape[axis]
    split = t.attr(node, "split")
    if split is None and len(ins) > 1 and ins[1] is not None:
        split = t.need_const(ins[1], "split sizes").tolist()
    if split is None:
        parts = t.attr(node, "num_outputs") or len(node.output)
        size = -(-n // parts)
        split = [min(size, n - k * size) for k in range(parts)]
    outs, at = [], 0
    for s in split:
        outs.append(_slice(t, x, axis, at, at + int(s)))
        at += int(s)
    return outs


@rule("Slice")
def _slice_rule(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    if t.attr(node, "starts") is not None:          # opset < 10: attributes
        starts, ends = list(t.attr(node, "starts")), list(t.attr(node, "ends"))
        axes = list(t.attr(node, "axes") or range(len(starts)))
    else:
        starts = t.need_const(ins[1], "Slice starts").tolist()
        ends = t.need_const(ins[2], "Slice ends").tolist()
        axes = t.need_const(ins[3], "Slice axes").tolist() if len(ins) > 3 and ins[3] is not None \
            else list(range(len(starts)))
    steps = t.need_const(ins[4], "Slice steps").tolist() if len(ins) > 4 and ins[4] is not None \
        else [1] * len(starts)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _axis(int(a), x.type.rank, t)
        n = x.type.shape[a]
        s, e, st = int(s), int(e), int(st)
        if st == 0:
            raise UnsupportedOpError("Slice step 0", loc=t.b.loc)
        s = s + n if s < 0 else s
        e = e + n if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
            e = max(e, s)
            x = _slice(t, x, a, s, s + ((e - s + st - 1) // st - 1) * st + 1 if e > s else s, st)
        else:
            s, e = min(max(s, -1), n - 1), min(max(e, -1), n - 1)
            count = max(0, (s - e + (-st) - 1) // (-st))
            # reverse, then slice forward: element s maps to n-1-s
            rs = n - 1 - s
            x = t.op("tensor.rev", x, dimensions=(a,))
            x = _slice(t, x, a, rs, rs + (count - 1) * (-st) + 1 if count else rs, -st)
    return [x]


@rule("Expand")
def _expand(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    shape = [int(d) for d in t.need_const(ins[1], "the shape of Expand")]
    out = tuple(int(d) for d in np.broadcast_shapes(x.type.shape, tuple(shape)))
    return [t.broadcast_to(x, out)]


@rule("Tile")
def _tile(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    reps = [int(r) for r in t.need_const(ins[1], "Tile repeats")]
    # broadcast to (r0, d0, r1, d1, ...) then merge each pair
    inter = tuple(v for r, d in zip(reps, x.type.shape) for v in (r, d))
    y = t.op("tensor.broadcast_in_dim", x, shape=inter,
             broadcast_dimensions=tuple(2 * k + 1 for k in range(x.type.rank)))
    return [_reshape(t, y, [r * d for r, d in zip(reps, x.type.shape)])]


@rule("Pad")
def _pad(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    n = x.type.rank
    pads = t.attr(node, "pads")
    if pads is None:
        pads = t.need_const(ins[1], "Pad pads").tolist()
    axes = _axes(t, node, ins, n, input_index=3) if len(ins) > 3 else None
    axes = axes if axes is not None else tuple(range(n))
    lo, hi = [0] * n, [0] * n
    for k, a in enumerate(axes):
        lo[a], hi[a] = int(pads[k]), int(pads[k + len(axes)])
    mode = t.attr(node, "mode", "constant")
    cv = ins[2] if len(ins) > 2 and ins[2] is not None else None
    if cv is not None:
        value = t.need_const(cv, "the Pad value").reshape(())
    else:                                          # opset < 11: an attribute
        value = np.array(t.attr(node, "value", 0), x.type.dtype.numpy)
    if mode == "constant":
        pv = t.constant(np.array(value, x.type.dtype.numpy))
        return [t.op("tensor.pad", x, pv, low=tuple(lo), high=tuple(hi), interior=(0,) * n)]
    if mode not in ("reflect", "edge", "wrap"):
        raise UnsupportedOpError(f"Pad mode '{mode}'", loc=t.b.loc)
    for a in range(n):
        size = x.type.shape[a]
        parts = []
        for count, side in ((lo[a], "lo"), (hi[a], "hi")):
            pieces = []
            for k in range(count):
                if mode == "edge":
                    i = 0 if side == "lo" else size - 1
                elif mode == "reflect":
                    i = (count - k) if side == "lo" else size - 2 - k
                else:
                    i = (size - count + k) % size if side == "lo" else k % size
                pieces.append(_slice(t, x, a, i, i + 1))
            parts.append(pieces)
        if parts[0] or parts[1]:
            x = t.op("tensor.concatenate", *parts[0], x, *parts[1], dimension=a)
    return [x]


@rule("Trilu")
def _trilu(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    k = int(t.need_const(ins[1], "Trilu k")) if len(ins) > 1 and ins[1] is not None else 0
    n, m = x.type.shape[-2:]
    rows, cols = np.indices((n, m))
    keep = cols - rows >= k if t.attr(node, "upper", 1) else cols - rows <= k
    mask = t.broadcast_to(t.constant(keep), x.type.shape)
    return [t.op("tensor.select", mask, t.scalar(0, x), x)]


@rule("DepthToSpace", "SpaceToDepth")
def _depth_space(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    b, c, h, w = x.type.shape
    s = t.attr(node, "blocksize")
    if node.op_type == "SpaceToDepth":
        y = _reshape(t, x, (b, c, h // s, s, w // s, s))
        crd = t.attr(node, "mode", "DCR") == "CRD"       # opset 25+: channel-major blocks
        y = t.op("tensor.transpose", y, permutation=(0, 1, 3, 5, 2, 4) if crd else (0, 3, 5, 1, 2, 4))
        return [_reshape(t, y, (b, c * s * s, h // s, w // s))]
    if t.attr(node, "mode", "DCR") == "DCR":
        y = _reshape(t, x, (b, s, s, c // (s * s), h, w))
        y = t.op("tensor.transpose", y, permutation=(0, 3, 4, 1, 5, 2))
    else:
        y = _reshape(t, x, (b, c // (s * s), s, s, h, w))
        y = t.op("tensor.transpose", y, permutation=(0, 1, 4, 2, 5, 3))
    return [_reshape(t, y, (b, c // (s * s), h * s, w * s))]


# ---- indexing -------------------------------------------------------------------------------------

def _wrap_indices(t: T, idx: Value, size: int) -> Value:
    """ONNX allows negative indices (counted from the end)."""
    idx = t.convert(idx, DType.I64)
    neg = t.op("tensor.lt", idx, t.scalar(0, idx))
    return t.op("tensor.select", neg, idx, t.op("tensor.add", idx, t.scalar(size, idx)))


@rule("Gather")
def _gather(t: T, node: Any, ins: Ins) -> list[Value]:
    x, idx = ins
    axis = _axis(t.attr(node, "axis", 0), x.type.rank, t)
    return [take(t, x, _wrap_indices(t, idx, x.type.shape[axis]), axis)]


def take(t: T, x: Value, idx: Value, axis: int) -> Value:
    """numpy.take along one axis with non-negative i64 indices (clipped into range)."""
    r = x.type.rank
    sizes = tuple(1 if d == axis else n for d, n in enumerate(x.type.shape))
    iv = _reshape(t, idx, idx.type.shape + (1,))
    offset = tuple(d for d in range(axis)) + tuple(range(axis + idx.type.rank, r - 1 + idx.type.rank))
    return t.op("tensor.gather", x, iv, offset_dims=offset, collapsed_slice_dims=(axis,),
                start_index_map=(axis,), slice_sizes=sizes, mode="clip")


@rule("GatherElements")
def _gather_elements(t: T, node: Any, ins: Ins) -> list[Value]:
    x, idx = ins
    axis = _axis(t.attr(node, "axis", 0), x.type.rank, t)
    return [take_along_axis(t, x, _wrap_indices(t, idx, x.type.shape[axis]), axis)]


def take_along_axis(t: T, x: Value, idx: Value, axis: int) -> Value:
    """numpy.take_along_axis with non-negative i64 indices (clipped into range)."""
    r = x.type.rank
    # full index vectors: iota on every dim but `axis`
    comps = []
    for d in range(r):
        if d == axis:
            comps.append(_reshape(t, idx, idx.type.shape + (1,)))
        else:
            io = t.op("tensor.iota", shape=idx.type.shape + (1,), dimension=d, dtype=DType.I64)
            comps.append(io)
    full = t.op("tensor.concatenate", *comps, dimension=r) if r > 1 else comps[0]
    return t.op("tensor.gather", x, full, offset_dims=(), collapsed_slice_dims=tuple(range(r)),
                 start_index_map=tuple(range(r)), slice_sizes=(1,) * r, mode="clip")


@rule("TopK")
def _top_k(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    k = int(np.ravel(t.attr(node, "k") if t.version < 10 else t.need_const(ins[1], "TopK's k"))[0])
    axis = _axis(t.attr(node, "axis", -1), x.type.rank, t)
    n = x.type.shape[axis]
    if not 0 <= k <= n:
        raise UnsupportedOpError(f"TopK's k={k} is outside [0, {n}] (the size of axis {axis})",
                                 loc=t.b.loc)
    largest = t.attr(node, "largest", 1)
    # work on the axis moved last
    perm = tuple(d for d in range(x.type.rank) if d != axis) + (axis,)
    inv = tuple(int(p) for p in np.argsort(perm))
    xt = t.op("tensor.transpose", x, permutation=perm) if axis != x.type.rank - 1 else x
    rows = int(np.prod(xt.type.shape[:-1], dtype=np.int64))
    if k == 0:
        idx = t.constant(np.zeros(xt.type.shape[:-1] + (0,), np.int64))
    elif rows * n * n <= 1 << 26:
        idx = _top_k_by_rank(t, xt, k, largest)
    else:
        idx = _top_k_by_selection(t, xt, k, largest)
    vals = take_along_axis(t, xt, idx, xt.type.rank - 1)
    if axis != x.type.rank - 1:
        vals = t.op("tensor.transpose", vals, permutation=inv)
        idx = t.op("tensor.transpose", idx, permutation=inv)
    return [vals, idx]


def _top_k_by_rank(t: T, x: Value, k: int, largest: int) -> Value:
    """Each element's rank = how many elements beat it (greater, or equal and earlier); the
    r-th output is the element of rank r. O(n^2) compares per row, a fixed-size graph."""
    shape, r = x.type.shape, x.type.rank
    n = shape[-1]
    pair = shape + (n,)                       # [..., i, j]
    xi = t.op("tensor.broadcast_in_dim", x, shape=pair, broadcast_dimensions=tuple(range(r)))
    xj = t.op("tensor.broadcast_in_dim", x, shape=pair,
              broadcast_dimensions=tuple(range(r - 1)) + (r,))
    beats = t.op("tensor.gt" if largest else "tensor.lt", xj, xi)
    i = t.op("tensor.iota", shape=pair, dimension=r - 1, dtype=DType.I64)
    j = t.op("tensor.iota", shape=pair, dimension=r, dtype=DType.I64)
    tie = t.op("tensor.and", t.op("tensor.eq", xj, xi), t.op("tensor.lt", j, i))
    rank = t.op("tensor.reduce_sum", t.convert(t.op("tensor.or", beats, tie), DType.I64), axes=(r,))
    # position of rank q, for q < k: argmax over i of (rank_i == q)
    sel = shape[:-1] + (k, n)                  # [..., q, i]
    rk = t.op("tensor.broadcast_in_dim", rank, shape=sel,
              broadcast_dimensions=tuple(range(r - 1)) + (r,))
    q = t.op("tensor.iota", shape=sel, dimension=r - 1, dtype=DType.I64)
    hit = t.convert(t.op("tensor.eq", rk, q), DType.I32)
    return t.op("tensor.argmax", hit, axis=r, index_dtype=DType.I64)


def _top_k_by_selection(t: T, x: Value, k: int, largest: int) -> Value:
    """k rounds of: best remaining value, then the first untaken position holding it.
    O(k n) per row, for long rows."""
    shape, r = x.type.shape, x.type.rank
    dt = x.type.dtype
    worst = (-np.inf if largest else np.inf) if dt.is_float else \
        (np.iinfo(dt.numpy).min if largest else np.iinfo(dt.numpy).max)
    taken = t.constant(np.zeros(shape, bool))
    pos = t.op("tensor.iota", shape=shape, dimension=r - 1, dtype=DType.I64)
    keep = tuple(range(r - 1))
    picks = []
    for _ in range(k):
        key = t.op("tensor.select", taken, x, t.scalar(worst, x))
        best = t.op(f"tensor.reduce_{'max' if largest else 'min'}", key, axes=(r - 1,))
        bb = t.op("tensor.broadcast_in_dim", best, shape=shape, broadcast_dimensions=keep)
        hit = t.op("tensor.and", t.op("tensor.eq", key, bb), t.op("tensor.not", taken))
        i = t.op("tensor.argmax", t.convert(hit, DType.I32), axis=r - 1, index_dtype=DType.I64)
        ib = t.op("tensor.broadcast_in_dim", i, shape=shape, broadcast_dimensions=keep)
        taken = t.op("tensor.or", taken, t.op("tensor.eq", pos, ib))
        picks.append(_reshape(t, i, shape[:-1] + (1,)))
    return t.op("tensor.concatenate", *picks, dimension=r - 1) if len(picks) > 1 else picks[0]


@rule("GatherND")
def _gather_nd(t: T, node: Any, ins: Ins) -> list[Value]:
    x, idx = ins
    bd = t.attr(node, "batch_dims", 0)
    k = idx.type.shape[-1]
    r = x.type.rank
    idx = t.convert(idx, DType.I64)
    # negative indices wrap per component
    sizes = np.array(x.type.shape[bd:bd + k], np.int64)
    lim = t.broadcast_to(t.constant(sizes), idx.type.shape)
    neg = t.op("tensor.lt", idx, t.scalar(0, idx))
    idx = t.op("tensor.select", neg, idx, t.op("tensor.add", idx, lim))
    batch = tuple(range(bd))
    collapsed = tuple(range(bd, bd + k))
    slice_sizes = tuple(1 if d < bd + k else x.type.shape[d] for d in range(r))
    out_rank = idx.type.rank - 1 + (r - bd - k)
    offset = tuple(range(idx.type.rank - 1, out_rank))
    return [t.op("tensor.gather", x, idx, offset_dims=offset, collapsed_slice_dims=collapsed,
                 start_index_map=collapsed, operand_batching_dims=batch,
                 start_indices_batching_dims=batch, slice_sizes=slice_sizes, mode="clip")]


# ---- reductions -----------------------------------------------------------------------------------

def _reduce(t: T, node: Any, ins: Ins, kind: str, x: Value | None = None) -> Value:
    x = ins[0] if x is None else x
    r = x.type.rank
    axes = _axes(t, node, ins, r)
    if not axes:                 # absent or empty: all axes, unless told to do nothing
        if t.attr(node, "noop_with_empty_axes", 0):
            return x
        axes = tuple(range(r))
    y = t.op(f"tensor.reduce_{kind}", x, axes=axes)
    if t.attr(node, "keepdims", 1):
        y = _reshape(t, y, [1 if k in axes else d for k, d in enumerate(x.type.shape)])
    return y


@rule("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceMean", "ReduceL1", "ReduceL2",
      "ReduceSumSquare", "ReduceLogSumExp", "ReduceLogSum")
def _reductions(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    op = node.op_type
    if op in ("ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"):
        if x.type.dtype.is_bool and op in ("ReduceMax", "ReduceMin"):
            return [_reduce(t, node, ins, "or" if op == "ReduceMax" else "and")]
        return [_reduce(t, node, ins, op[6:].lower())]
    if op == "ReduceMean":
        s = _reduce(t, node, ins, "sum")
        count = max(1, x.type.size // max(1, s.type.size))
        return [t.op("tensor.div", s, t.scalar(count, s))]
    if op == "ReduceL1":
        return [_reduce(t, node, ins, "sum", t.op("tensor.abs", x))]
    if op in ("ReduceL2", "ReduceSumSquare"):
        s = _reduce(t, node, ins, "sum", t.op("tensor.mul", x, x))
        return [t.op("tensor.sqrt", s) if op == "ReduceL2" else s]
    if op == "ReduceLogSum":
        return [t.op("tensor.log", _reduce(t, node, ins, "sum"))]
    # ReduceLogSumExp, stable: m + log(sum(exp(x - m)))
    axes = _axes(t, node, ins, x.type.rank)
    if not axes:
        if t.attr(node, "noop_with_empty_axes", 0):
            return [x]
        axes = tuple(range(x.type.rank))
    keep = tuple(k for k in range(x.type.rank) if k not in axes)
    m = t.op("tensor.reduce_max", x, axes=axes)
    mb = t.op("tensor.broadcast_in_dim", m, shape=x.type.shape, broadcast_dimensions=keep)
    s = t.op("tensor.reduce_sum", t.op("tensor.exp", t.op("tensor.sub", x, mb)), axes=axes)
    y = t.op("tensor.add", t.op("tensor.log", s), m)
    if t.attr(node, "keepdims", 1):
        y = _reshape(t, y, [1 if k in axes else d for k, d in enumerate(x.type.shape)])
    return [y]


@rule("ArgMax", "ArgMin")
def _argmax(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    axis = _axis(t.attr(node, "axis", 0), x.type.rank, t)
    kind = node.op_type[3:].lower()
    last = t.attr(node, "select_last_index", 0)
    src = t.op("tensor.rev", x, dimensions=(axis,)) if last else x
    y = t.op(f"tensor.arg{kind}", src, axis=axis, index_dtype=DType.I64)
    if last:
        y = t.op("tensor.sub", t.scalar(x.type.shape[axis] - 1, y), y)
    if t.attr(node, "keepdims", 1):
        y = _reshape(t, y, [1 if k == axis else d for k, d in enumerate(x.type.shape)])
    return [y]


@rule("CumSum")
def _cumsum(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    axis = _axis(int(t.need_const(ins[1], "the CumSum axis")), x.type.rank, t)
    rev = t.attr(node, "reverse", 0)
    src = t.op("tensor.rev", x, dimensions=(axis,)) if rev else x
    if t.attr(node, "exclusive", 0):     # shift by one along the axis, a zero in front
        n = x.type.rank
        low = tuple(1 if d == axis else 0 for d in range(n))
        high = tuple(-1 if d == axis else 0 for d in range(n))
        src = t.op("tensor.pad", src, t.constant(np.zeros((), x.type.dtype.numpy)),
                   low=low, high=high, interior=(0,) * n)
    y = t.op("tensor.cumsum", src, axis=axis)
    return [t.op("tensor.rev", y, dimensions=(axis,)) if rev else y]


def _softmax_core(t: T, x: Value, axis: int, log: bool) -> Value:
    r = x.type.rank
    keep = tuple(k for k in range(r) if k != axis)
    m = t.op("tensor.reduce_max", x, axes=(axis,))
    d = t.op("tensor.sub", x, t.op("tensor.broadcast_in_dim", m, shape=x.type.shape, broadcast_dimensions=keep))
    e = t.op("tensor.exp", d)
    s = t.op("tensor.reduce_sum", e, axes=(axis,))
    if log:
        return t.op("tensor.sub", d, t.op("tensor.broadcast_in_dim", t.op("tensor.log", s),
                                          shape=x.type.shape, broadcast_dimensions=keep))
    return t.op("tensor.div", e, t.op("tensor.broadcast_in_dim", s, shape=x.type.shape, broadcast_dimensions=keep))


@rule("Softmax", "LogSoftmax")
def _softmax(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    log = node.op_type == "LogSoftmax"
    if t.version < 13:   # the input is flattened to 2-D at `axis` (default 1)
        axis = _axis(t.attr(node, "axis", 1), x.type.rank, t)
        lead = int(np.prod(x.type.shape[:axis]))
        flat = _reshape(t, x, (lead, x.type.size // max(lead, 1)))
        return [_reshape(t, _softmax_core(t, flat, 1, log), x.type.shape)]
    axis = _axis(t.attr(node, "axis", -1), x.type.rank, t)
    return [_softmax_core(t, x, axis, log)]


# ---- contractions ---------------------------------------------------------------------------------

def matmul(t: T, a: Value, b: Value) -> Value:
    """numpy.matmul: 1-D operands promoted, batch dims broadcast."""
    a1, b1 = a.type.rank == 1, b.type.rank == 1
    if a1:
        a = _reshape(t, a, (1,) + a.type.shape)
    if b1:
        b = _reshape(t, b, b.type.shape + (1,))
    batch = tuple(int(d) for d in np.broadcast_shapes(a.type.shape[:-2], b.type.shape[:-2]))
    a = t.broadcast_to(a, batch + a.type.shape[-2:])
    b = t.broadcast_to(b, batch + b.type.shape[-2:])
    nb = len(batch)
    y = t.op("tensor.dot_general", a, b, lhs_contract=(nb + 1,), rhs_contract=(nb,),
             lhs_batch=tuple(range(nb)), rhs_batch=tuple(range(nb)))
    if a1 or b1:
        y = _reshape(t, y, batch + (() if a1 else (a.type.shape[-2],)) + (() if b1 else (b.type.shape[-1],)))
    return y


@rule("MatMul")
def _matmul(t: T, node: Any, ins: Ins) -> list[Value]:
    return [matmul(t, ins[0], ins[1])]


@rule("Gemm")
def _gemm(t: T, node: Any, ins: Ins) -> list[Value]:
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    if t.attr(node, "transA", 0):
        a = t.op("tensor.transpose", a, permutation=(1, 0))
    if t.attr(node, "transB", 0):
        b = t.op("tensor.transpose", b, permutation=(1, 0))
    y = matmul(t, a, b)
    alpha, beta = t.attr(node, "alpha", 1.0), t.attr(node, "beta", 1.0)
    if alpha != 1.0:
        y = t.op("tensor.mul", y, t.scalar(alpha, y))
    if c is not None:
        c = t.broadcast_to(c, y.type.shape)
        if beta != 1.0:
            c = t.op("tensor.mul", c, t.scalar(beta, c))
        y = t.op("tensor.add", y, c)
    return [y]


@rule("Einsum")
def _einsum(t: T, node: Any, ins: Ins) -> list[Value]:
    eq = t.attr(node, "equation").replace(" ", "")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    vals = list(ins)
    if len(terms) != len(vals):
        raise UnsupportedOpError(f"Einsum equation '{eq}' has {len(terms)} terms for "
                                 f"{len(vals)} inputs", loc=t.b.loc)
    # an ellipsis stands for fresh (upper-case) letters, aligned from the right
    ell = max((v.type.rank - len(term.replace("...", "")) for term, v in zip(terms, vals)
               if "..." in term), default=0)
    fresh = "".join(c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in eq)[:ell]
    for i, (term, v) in enumerate(zip(terms, vals)):
        if "..." in term:
            e = v.type.rank - len(term.replace("...", ""))
            terms[i] = term.replace("...", fresh[ell - e:])
    if not arrow:
        letters = sorted(c for c in set("".join(terms)) if "".join(terms).count(c) == 1
                         and c not in fresh)
        out = fresh + "".join(letters)
    out = out.replace("...", fresh)
    # a letter shared by operands must have one size (size-1 ellipsis dims broadcast)
    sizes: dict[str, int] = {}
    for term, v in zip(terms, vals):
        for c, n in zip(term, v.type.shape):
            sizes[c] = max(sizes.get(c, n), n)
    for i, (term, v) in enumerate(zip(terms, vals)):
        want = tuple(sizes[c] for c in term)
        if want != v.type.shape:
            if any(n not in (1, w) for n, w in zip(v.type.shape, want)):
                raise UnsupportedOpError(f"Einsum operand {i} of shape {list(v.type.shape)} does "
                                         f"not match '{term}'", loc=t.b.loc)
            vals[i] = t.op("tensor.broadcast_in_dim", v, shape=want,
                           broadcast_dimensions=tuple(range(len(want))))
    for i, term in enumerate(terms):
        # a repeated letter takes the diagonal: zero off it, sum one copy away
        while len(set(term)) != len(term):
            c = next(c for c in term if term.count(c) > 1)
            p, q = term.index(c), term.index(c, term.index(c) + 1)
            v = vals[i]
            eye = t.op("tensor.broadcast_in_dim", t.constant(np.eye(sizes[c], dtype=bool)),
                       shape=v.type.shape, broadcast_dimensions=(p, q))
            vals[i] = t.op("tensor.reduce_sum", t.op("tensor.select", eye, t.scalar(0, v), v),
                           axes=(q,))
            term = term[:q] + term[q + 1:]
        terms[i] = term
    # letters only one operand has and the output does not: summed first
    for i, term in enumerate(terms):
        others = "".join(terms[:i] + terms[i + 1:]) + out
        lonely = [k for k, c in enumerate(term) if c not in others]
        if lonely:
            vals[i] = t.op("tensor.reduce_sum", vals[i], axes=tuple(lonely))
            terms[i] = "".join(c for c in term if c not in [term[k] for k in lonely])
    acc, aterm = vals[0], terms[0]
    for k in range(1, len(terms)):
        v, term = vals[k], terms[k]
        later = out + "".join(terms[k + 1:])     # letters still needed after this product
        batch = [c for c in aterm if c in term and c in later]
        contract = [c for c in aterm if c in term and c not in later]
        acc = t.op("tensor.dot_general", acc, v,
                   lhs_contract=tuple(aterm.index(c) for c in contract),
                   rhs_contract=tuple(term.index(c) for c in contract),
                   lhs_batch=tuple(aterm.index(c) for c in batch),
                   rhs_batch=tuple(term.index(c) for c in batch))
        aterm = "".join(batch) + "".join(c for c in aterm if c not in batch and c not in contract) + \
            "".join(c for c in term if c not in batch and c not in contract)
    lonely = tuple(k for k, c in enumerate(aterm) if c not in out)
    if lonely:
        acc = t.op("tensor.reduce_sum", acc, axes=lonely)
        aterm = "".join(c for c in aterm if c in out)
    perm = tuple(aterm.index(c) for c in out)
    if perm != tuple(range(len(perm))):
        acc = t.op("tensor.transpose", acc, permutation=perm)
    return [acc]


def _conv_pads(t: T, node: Any, spatial: Sequence[int], kernel: Sequence[int],
               strides: Sequence[int], dilations: Sequence[int]) -> list[tuple[int, int]]:
    auto = t.attr(node, "auto_pad", "NOTSET")
    n = len(spatial)
    if auto in ("NOTSET", "VALID"):
        pads = t.attr(node, "pads") or [0] * (2 * n)
        if auto == "VALID":
            pads = [0] * (2 * n)
        return [(int(pads[k]), int(pads[k + n])) for k in range(n)]
    out = []
    for size, k, s, d in zip(spatial, kernel, strides, dilations):
        total = max(0, (-(-size // s) - 1) * s + (k - 1) * d + 1 - size)
        lo = total // 2 if auto == "SAME_UPPER" else total - total // 2
        out.append((lo, total - lo))
    return out


@rule("Conv")
def _conv(t: T, node: Any, ins: Ins) -> list[Value]:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    n = x.type.rank - 2
    kernel = w.type.shape[2:]
    strides = t.attr(node, "strides") or [1] * n
    dil = t.attr(node, "dilations") or [1] * n
    pads = _conv_pads(t, node, x.type.shape[2:], kernel, strides, dil)
    spec = tuple(range(n + 2))
    y = t.op("tensor.conv", x, w, lhs_spec=spec, rhs_spec=spec, out_spec=spec,
             strides=tuple(strides), padding=tuple(pads), lhs_dilation=(1,) * n,
             rhs_dilation=tuple(dil), feature_group_count=int(t.attr(node, "group", 1)))
    if b is not None:
        y = t.op("tensor.add", y, t.op("tensor.broadcast_in_dim", b, shape=y.type.shape,
                                       broadcast_dimensions=(1,)))
    return [y]


@rule("ConvTranspose")
def _conv_transpose(t: T, node: Any, ins: Ins) -> list[Value]:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    n = x.type.rank - 2
    group = int(t.attr(node, "group", 1))
    kernel = w.type.shape[2:]
    strides = t.attr(node, "strides") or [1] * n
    dil = t.attr(node, "dilations") or [1] * n
    out_pad = t.attr(node, "output_padding") or [0] * n
    out_shape = t.attr(node, "output_shape")
    spatial = x.type.shape[2:]
    full = [(s - 1) * st + (k - 1) * d + 1 + op for s, st, k, d, op in zip(spatial, strides, kernel, dil, out_pad)]
    if out_shape is not None or t.attr(node, "auto_pad", "NOTSET") in ("SAME_UPPER", "SAME_LOWER"):
        target = list(out_shape)[-n:] if out_shape is not None else [s * st for s, st in zip(spatial, strides)]
        total = [f - o for f, o in zip(full, target)]
        # the spec: SAME_UPPER puts the odd unit of padding at the end, otherwise at the start
        upper = t.attr(node, "auto_pad", "NOTSET") == "SAME_UPPER"
        pads = [(tt // 2, tt - tt // 2) if upper else (tt - tt // 2, tt // 2) for tt in total]
    else:
        p = t.attr(node, "pads") or [0] * (2 * n)
        pads = [(int(p[k]), int(p[k + n])) for k in range(n)]
    # a transposed conv is a conv of the stride-dilated input with the flipped, swapped kernel
    cin, cout_g = w.type.shape[0], w.type.shape[1]
    wg = _reshape(t, w, (group, cin // group, cout_g) + tuple(kernel))
    wg = t.op("tensor.transpose", wg, permutation=(0, 2, 1) + tuple(range(3, 3 + n)))
    wk = _reshape(t, wg, (group * cout_g, cin // group) + tuple(kernel))
    wk = t.op("tensor.rev", wk, dimensions=tuple(range(2, 2 + n)))
    conv_pads = tuple(((k - 1) * d - lo, (k - 1) * d - hi + op)
                      for k, d, (lo, hi), op in zip(kernel, dil, pads, out_pad))
    spec = tuple(range(n + 2))
    y = t.op("tensor.conv", x, wk, lhs_spec=spec, rhs_spec=spec, out_spec=spec, strides=(1,) * n,
             padding=conv_pads, lhs_dilation=tuple(strides), rhs_dilation=tuple(dil),
             feature_group_count=group)
    if b is not None:
        y = t.op("tensor.add", y, t.op("tensor.broadcast_in_dim", b, shape=y.type.shape,
                                       broadcast_dimensions=(1,)))
    return [y]


def _pool_geometry(t: T, node: Any, x: Value) -> tuple[list[int], list[int], list[int], list[tuple[int, int]]]:
    n = x.type.rank - 2
    kernel = list(t.attr(node, "kernel_shape"))
    strides = list(t.attr(node, "strides") or [1] * n)
    dil = list(t.attr(node, "dilations") or [1] * n)
    pads = _conv_pads(t, node, x.type.shape[2:], kernel, strides, dil)
    if t.attr(node, "ceil_mode", 0):
        # extra high padding so the last partial window is kept (if it starts inside)
        new = []
        for size, k, s, d, (lo, hi) in zip(x.type.shape[2:], kernel, strides, dil, pads):
            span = (k - 1) * d + 1
            out = -(-(size + lo + hi - span) // s) + 1
            if (out - 1) * s >= size + lo:
                out -= 1
            new.append((lo, max(hi, (out - 1) * s + span - size - lo)))
        pads = new
    return kernel, strides, dil, pads


@rule("MaxPool", "AveragePool")
def _pool(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    kernel, strides, dil, pads = _pool_geometry(t, node, x)
    if len([o for o in node.output if o]) > 1:
        return _max_pool_with_indices(t, node, x, kernel, strides, dil, pads)
    full_pad = ((0, 0), (0, 0)) + tuple(pads)
    win = dict(window=(1, 1) + tuple(kernel), strides=(1, 1) + tuple(strides), padding=full_pad,
               window_dilation=(1, 1) + tuple(dil))
    if node.op_type == "MaxPool":
        return [t.op("tensor.reduce_window", x, combiner="max", **win)]
    s = t.op("tensor.reduce_window", x, combiner="add", **win)
    if t.attr(node, "count_include_pad", 0):
        # divide by the window clipped to the explicit padding (not to ceil_mode's extra)
        given = _conv_pads(t, node, x.type.shape[2:], kernel, strides, dil)
        ones = t.constant(np.ones(x.type.shape[2:], x.type.dtype.numpy))
        ones = t.op("tensor.pad", ones, t.constant(np.array(1, x.type.dtype.numpy)),
                    low=tuple(lo for lo, _ in given), high=tuple(hi for _, hi in given),
                    interior=(0,) * len(kernel))
        extra = [(0, hi - ghi) for (lo, hi), (_, ghi) in zip(pads, given)]
        count = t.op("tensor.reduce_window", ones, combiner="add", window=tuple(kernel),
                     strides=tuple(strides), padding=tuple(extra), window_dilation=tuple(dil))
    else:
        ones = t.constant(np.ones(x.type.shape[2:], x.type.dtype.numpy))
        count = t.op("tensor.reduce_window", ones, combiner="add", window=tuple(kernel),
                     strides=tuple(strides), padding=tuple(pads), window_dilation=tuple(dil))
    return [t.op("tensor.div", s, t.op("tensor.broadcast_in_dim", count, shape=s.type.shape,
                                       broadcast_dimensions=tuple(range(2, s.type.rank))))]


def _max_pool_with_indices(t: T, node: Any, x: Value, kernel: list[int], strides: list[int],
                           dil: list[int], pads: list[tuple[int, int]]) -> list[Value]:
    """MaxPool's second output: the flat index (into N,C,spatial...) of each window's first
    maximum. The windows' taps are stacked on a leading axis (one strided slice of the
    padded input per kernel offset), so the max and its position are one argmax."""
    shape, n = x.type.shape, len(kernel)
    spatial = shape[2:]
    dt = x.type.dtype
    low = -np.inf if dt.is_float else np.iinfo(dt.numpy).min
    xp = t.op("tensor.pad", x, t.constant(np.array(low, dt.numpy)), low=(0, 0) + tuple(lo for lo, _ in pads),
              high=(0, 0) + tuple(hi for _, hi in pads), interior=(0,) * (n + 2))
    out = [(size + lo + hi - ((k - 1) * d + 1)) // s + 1
           for size, (lo, hi), k, d, s in zip(spatial, pads, kernel, dil, strides)]
    col_major = t.attr(node, "storage_order", 0)
    taps, positions = [], []
    for off in np.ndindex(*kernel):
        start = (0, 0) + tuple(o * d for o, d in zip(off, dil))
        limit = shape[:2] + tuple(st + (m - 1) * s + 1 for st, m, s in zip(start[2:], out, strides))
        tap = t.op("tensor.slice", xp, start=start, limit=limit, strides=(1, 1) + tuple(strides))
        taps.append(_reshape(t, tap, (1,) + tap.type.shape))
        # where this tap reads, as a flat spatial index (row- or column-major)
        coords = np.meshgrid(*[np.arange(m) * s - lo + o * d for m, s, (lo, _), o, d
                               in zip(out, strides, pads, off, dil)], indexing="ij")
        order = range(n - 1, -1, -1) if col_major else range(n)
        flat = np.zeros(out, np.int64)
        for a in order:
            flat = flat * spatial[a] + coords[a]
        positions.append(flat)
    stack = t.op("tensor.concatenate", *taps, dimension=0) if len(taps) > 1 else taps[0]
    which = t.op("tensor.argmax", stack, axis=0, index_dtype=DType.I64)      # [N, C, out...]
    values = t.op("tensor.reduce_max", stack, axes=(0,))
    table = t.constant(np.stack(positions))                                  # [K, out...]
    k = len(positions)
    base = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape[:2] + (1,) * n) * int(np.prod(spatial))
    pos_full = t.op("tensor.broadcast_in_dim", table, shape=(k,) + which.type.shape,
                    broadcast_dimensions=(0,) + tuple(range(3, 3 + n)))
    pos = take_along_axis(t, pos_full, _reshape(t, which, (1,) + which.type.shape), 0)
    idx = t.op("tensor.add", _reshape(t, pos, which.type.shape),
               t.broadcast_to(t.constant(base), which.type.shape))
    return [values, idx]


@rule("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    axes = tuple(range(2, x.type.rank))
    kind = "max" if node.op_type == "GlobalMaxPool" else "sum"
    y = t.op(f"tensor.reduce_{kind}", x, axes=axes)
    if kind == "sum":
        y = t.op("tensor.div", y, t.scalar(int(np.prod(x.type.shape[2:])), y))
    return [_reshape(t, y, x.type.shape[:2] + (1,) * len(axes))]


def _per_channel(t: T, v: Value, like: Value, axis: int = 1) -> Value:
    return t.op("tensor.broadcast_in_dim", v, shape=like.type.shape, broadcast_dimensions=(axis,))


@rule("BatchNormalization")
def _batchnorm(t: T, node: Any, ins: Ins) -> list[Value]:
    x, scale, bias, mean, var = ins[:5]
    if t.attr(node, "training_mode", 0):
        raise UnsupportedOpError("BatchNormalization in training mode", loc=t.b.loc,
                                 fix="export the model for inference")
    eps = t.attr(node, "epsilon", 1e-5)
    inv = t.op("tensor.rsqrt", t.op("tensor.add", var, t.scalar(eps, var)))
    k = t.op("tensor.mul", scale, inv)
    shift = t.op("tensor.sub", bias, t.op("tensor.mul", mean, k))
    y = t.op("tensor.add", t.op("tensor.mul", x, _per_channel(t, k, x)), _per_channel(t, shift, x))
    return [y]


def _normalize(t: T, x: Value, axes: tuple[int, ...], eps: float) -> tuple[Value, Value, Value]:
    """(x - mean) / sqrt(var + eps) over `axes`, and the mean and 1/std (reduced shapes)."""
    keep = tuple(k for k in range(x.type.rank) if k not in axes)
    count = int(np.prod([x.type.shape[a] for a in axes]))
    total = t.op("tensor.reduce_sum", x, axes=axes)
    mean = t.op("tensor.div", total, t.scalar(count, total))
    d = t.op("tensor.sub", x, t.op("tensor.broadcast_in_dim", mean, shape=x.type.shape, broadcast_dimensions=keep))
    var_sum = t.op("tensor.reduce_sum", t.op("tensor.mul", d, d), axes=axes)
    var = t.op("tensor.div", var_sum, t.scalar(count, var_sum))
    inv = t.op("tensor.rsqrt", t.op("tensor.add", var, t.scalar(eps, var)))
    y = t.op("tensor.mul", d, t.op("tensor.broadcast_in_dim", inv, shape=x.type.shape, broadcast_dimensions=keep))
    return y, mean, inv


@rule("InstanceNormalization")
def _instancenorm(t: T, node: Any, ins: Ins) -> list[Value]:
    x, scale, bias = ins
    y, _, _ = _normalize(t, x, tuple(range(2, x.type.rank)), t.attr(node, "epsilon", 1e-5))
    return [t.op("tensor.add", t.op("tensor.mul", y, _per_channel(t, scale, y)), _per_channel(t, bias, y))]


@rule("LayerNormalization")
def _layernorm(t: T, node: Any, ins: Ins) -> list[Value]:
    x, scale = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    axis = _axis(t.attr(node, "axis", -1), x.type.rank, t)
    axes = tuple(range(axis, x.type.rank))
    y, mean, inv = _normalize(t, x, axes, t.attr(node, "epsilon", 1e-5))
    y = t.op("tensor.mul", y, t.broadcast_to(scale, y.type.shape))
    if bias is not None:
        y = t.op("tensor.add", y, t.broadcast_to(bias, y.type.shape))
    reduced = tuple(d if k < axis else 1 for k, d in enumerate(x.type.shape))
    return [y, _reshape(t, mean, reduced), _reshape(t, inv, reduced)]


@rule("LRN")
def _lrn(t: T, node: Any, ins: Ins) -> list[Value]:
    x = ins[0]
    size = t.attr(node, "size")
    alpha, beta, bias = t.attr(node, "alpha", 1e-4), t.attr(node, "beta", 0.75), t.attr(node, "bias", 1.0)
    sq = t.op("tensor.mul", x, x)
    lo, hi = (size - 1) // 2, size // 2
    pads = ((0, 0), (lo, hi)) + ((0, 0),) * (x.type.rank - 2)
    s = t.op("tensor.reduce_window", sq, combiner="add", window=(1, size) + (1,) * (x.type.rank - 2),
             strides=(1,) * x.type.rank, padding=pads)
    base = t.op("tensor.add", t.scalar(bias, s), t.op("tensor.mul", s, t.scalar(alpha / size, s)))
    return [t.op("tensor.div", x, t.op("tensor.pow", base, t.scalar(beta, base)))]
