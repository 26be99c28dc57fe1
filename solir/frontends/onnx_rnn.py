"""ONNX recurrent layers (RNN, GRU, LSTM) -> matmuls and elementwise ops, unrolled in time.

The input projection of every time step is one matmul over the whole sequence (X W^T + b,
[seq*batch, gates*hidden]); each step then adds H R^T and applies the gate equations of the
ONNX spec. The sequence length is static, so the loop is unrolled at compile time; per-batch
`sequence_lens` (a constant) become masks that hold the state and zero the output past each
sequence's end, which also makes the reverse direction start at each sequence's last step.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from solir.errors import UnsupportedOpError
from solir.frontends.onnx_graph import OnnxTranslator, rule
from solir.frontends.onnx_ops import _elu_like, _reshape, _slice, _softplus, matmul
from solir.ir.core import Value

T = OnnxTranslator


# ---- activations (the names ONNX allows in `activations`) ----------------------------------------

def _scaled(t: T, x: Value, a: float) -> Value:
    return t.op("tensor.mul", x, t.scalar(a, x))


_ACTIVATIONS: dict[str, tuple[int, Callable[[T, Value, float, float], Value]]] = {
    # name: (how many of activation_alpha/beta it takes, the function)
    "sigmoid": (0, lambda t, x, a, b: t.op("tensor.logistic", x)),
    "tanh": (0, lambda t, x, a, b: t.op("tensor.tanh", x)),
    "relu": (0, lambda t, x, a, b: t.op("tensor.max", x, t.scalar(0, x))),
    "softsign": (0, lambda t, x, a, b: t.op("tensor.div", x, t.op(
        "tensor.add", t.scalar(1, x), t.op("tensor.abs", x)))),
    "softplus": (0, lambda t, x, a, b: _softplus(t, x)),
    "affine": (2, lambda t, x, a, b: t.op("tensor.add", _scaled(t, x, a), t.scalar(b, x))),
    "leakyrelu": (1, lambda t, x, a, b: t.op("tensor.select", t.op("tensor.lt", x, t.scalar(0, x)),
                                             x, _scaled(t, x, a))),
    "thresholdedrelu": (1, lambda t, x, a, b: t.op("tensor.select", t.op(
        "tensor.gt", x, t.scalar(a, x)), t.scalar(0, x), x)),
    "scaledtanh": (2, lambda t, x, a, b: _scaled(t, t.op("tensor.tanh", _scaled(t, x, b)), a)),
    "hardsigmoid": (2, lambda t, x, a, b: t.op("tensor.clamp", t.scalar(0, x), t.op(
        "tensor.add", _scaled(t, x, a), t.scalar(b, x)), t.scalar(1, x))),
    "elu": (1, lambda t, x, a, b: _elu_like(t, x, a)),
}
_DEFAULT_ALPHA = {"leakyrelu": 0.01, "thresholdedrelu": 1.0, "elu": 1.0, "hardsigmoid": 0.2,
                  "affine": 1.0, "scaledtanh": 1.0}
_DEFAULT_BETA = {"hardsigmoid": 0.5, "affine": 0.0, "scaledtanh": 1.0}

Act = Callable[[Value], Value]


def _activations(t: T, node: Any, defaults: list[str], directions: int) -> list[list[Act]]:
    """The activation functions of each direction, with their alpha/beta bound."""
    names = t.attr(node, "activations") or defaults * directions
    if len(names) != len(defaults) * directions:
        raise UnsupportedOpError(f"{node.op_type} needs {len(defaults) * directions} activations, "
                                 f"got {len(names)}", loc=t.b.loc)
    alphas = list(t.attr(node, "activation_alpha") or [])
    betas = list(t.attr(node, "activation_beta") or [])
    out: list[Act] = []
    for name in names:
        key = name.lower()
        if key not in _ACTIVATIONS:
            raise UnsupportedOpError(f"{node.op_type} activation '{name}'", loc=t.b.loc,
                                     fix="supported: " + ", ".join(sorted(_ACTIVATIONS)))
        takes, fn = _ACTIVATIONS[key]
        a = float(alphas.pop(0)) if takes >= 1 and alphas else _DEFAULT_ALPHA.get(key, 0.0)
        b = float(betas.pop(0)) if takes >= 2 and betas else _DEFAULT_BETA.get(key, 0.0)
        out.append(lambda x, fn=fn, a=a, b=b: fn(t, x, a, b))
    k = len(defaults)
    return [out[d * k:(d + 1) * k] for d in range(directions)]


# ---- the shared time loop -------------------------------------------------------------------------

def _opt(ins: list[Value | None], i: int) -> Value | None:
    return ins[i] if len(ins) > i else None


def _recurrent(t: T, node: Any, ins: list[Value | None], gates: int, defaults: list[str],
               cell: Callable[..., tuple[Value, Value | None]], has_c: bool) -> list[Value]:
    """Run `cell` over time for each direction; returns [Y, Y_h] (+ [Y_c] if has_c)."""
    x, w, r = ins[0], ins[1], ins[2]
    assert x is not None and w is not None and r is not None
    layout = t.attr(node, "layout", 0)
    if layout:
        x = t.op("tensor.transpose", x, permutation=(1, 0, 2))        # -> [seq, batch, input]
    seq, batch, _ = x.type.shape
    ndir, gh, _ = w.type.shape
    hidden = t.attr(node, "hidden_size", gh // gates)
    direction = t.attr(node, "direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise UnsupportedOpError(f"{node.op_type} direction '{direction}'", loc=t.b.loc)
    if ndir != (2 if direction == "bidirectional" else 1) or gh != gates * hidden:
        raise UnsupportedOpError(f"{node.op_type} weights of shape {list(w.type.shape)} do not "
                                 f"match direction '{direction}' and hidden_size {hidden}",
                                 loc=t.b.loc)
    acts = _activations(t, node, defaults, ndir)
    clip = t.attr(node, "clip")
    dt = x.type.dtype
    b, lens, h0 = _opt(ins, 3), _opt(ins, 4), _opt(ins, 5)
    c0 = _opt(ins, 6) if has_c else None
    if layout and h0 is not None:
        h0 = t.op("tensor.transpose", h0, permutation=(1, 0, 2))
    if layout and c0 is not None:
        c0 = t.op("tensor.transpose", c0, permutation=(1, 0, 2))
    valid = None                      # [seq] of [batch, 1] masks, if some sequences are short
    if lens is not None:
        n = np.ravel(t.need_const(lens, f"{node.op_type}'s sequence_lens")).astype(np.int64)
        if (n < seq).any():
            valid = [t.constant((k < n)[:, None]) for k in range(seq)]

    ys, hs, cs = [], [], []
    for d in range(ndir):
        wd = _reshape(t, _slice(t, w, 0, d, d + 1), (gh, w.type.shape[2]))
        rd = _reshape(t, _slice(t, r, 0, d, d + 1), (gh, hidden))
        xs = matmul(t, _reshape(t, x, (seq * batch, x.type.shape[2])),
                    t.op("tensor.transpose", wd, permutation=(1, 0)))
        wb = rb = None
        if b is not None:
            bd = _reshape(t, _slice(t, b, 0, d, d + 1), (2 * gh,))
            wb, rb = _slice(t, bd, 0, 0, gh), _slice(t, bd, 0, gh, 2 * gh)
            xs = t.op("tensor.add", xs, t.broadcast_to(wb, xs.type.shape))
        xs = _reshape(t, xs, (seq, batch, gh))
        rt = t.op("tensor.transpose", rd, permutation=(1, 0))
        zeros = t.constant(np.zeros((batch, hidden), dt.numpy))
        h = _reshape(t, _slice(t, h0, 0, d, d + 1), (batch, hidden)) if h0 is not None else zeros
        c = _reshape(t, _slice(t, c0, 0, d, d + 1), (batch, hidden)) if c0 is not None else zeros
        reverse = direction == "reverse" or d == 1
        steps: list[Value] = [zeros] * seq
        for k in (reversed(range(seq)) if reverse else range(seq)):
            xk = _reshape(t, _slice(t, xs, 0, k, k + 1), (batch, gh))
            h_new, c_new = cell(t, node, xk, h, c, rt, rb, hidden, acts[d], clip, d, ins)
            if valid is not None:
                m = t.broadcast_to(valid[k], (batch, hidden))
                h_new = t.op("tensor.select", m, h, h_new)
                if c_new is not None:
                    c_new = t.op("tensor.select", m, c, c_new)
                steps[k] = t.op("tensor.select", m, zeros, h_new)
            else:
                steps[k] = h_new
            h = h_new
            c = c_new if c_new is not None else c
        ys.append(t.op("tensor.concatenate", *[_reshape(t, s, (1, 1, batch, hidden)) for s in steps],
                       dimension=0) if seq > 1 else _reshape(t, steps[0], (1, 1, batch, hidden)))
        hs.append(_reshape(t, h, (1, batch, hidden)))
        cs.append(_reshape(t, c, (1, batch, hidden)))

    def cat(vs: list[Value], dim: int) -> Value:
        return t.op("tensor.concatenate", *vs, dimension=dim) if len(vs) > 1 else vs[0]
    y, yh, yc = cat(ys, 1), cat(hs, 0), cat(cs, 0)
    if layout:
        y = t.op("tensor.transpose", y, permutation=(2, 0, 1, 3))   # [batch, seq, dir, hidden]
        yh = t.op("tensor.transpose", yh, permutation=(1, 0, 2))
        yc = t.op("tensor.transpose", yc, permutation=(1, 0, 2))
    return [y, yh, yc] if has_c else [y, yh]


def _gate(t: T, v: Value, k: int, hidden: int) -> Value:
    return _slice(t, v, 1, k * hidden, (k + 1) * hidden)


def _clipped(t: T, v: Value, clip: float | None) -> Value:
    if clip is None:
        return v
    return t.op("tensor.clamp", t.scalar(-clip, v), v, t.scalar(clip, v))


def _hidden_proj(t: T, h: Value, rt: Value, rb: Value | None) -> Value:
    p = matmul(t, h, rt)
    return p if rb is None else t.op("tensor.add", p, t.broadcast_to(rb, p.type.shape))


# ---- the cells ------------------------------------------------------------------------------------

def _rnn_cell(t: T, node: Any, xk: Value, h: Value, c: Value, rt: Value, rb: Value | None,
              hidden: int, acts: list[Act], clip: float | None, d: int, ins: list) -> tuple[Value, None]:
    pre = t.op("tensor.add", xk, _hidden_proj(t, h, rt, rb))
    return acts[0](_clipped(t, pre, clip)), None


def _gru_cell(t: T, node: Any, xk: Value, h: Value, c: Value, rt: Value, rb: Value | None,
              hidden: int, acts: list[Act], clip: float | None, d: int, ins: list) -> tuple[Value, None]:
    f, g = acts
    # gates z, r, h; the h gate's recurrent term depends on linear_before_reset
    r_zr = _slice(t, rt, 1, 0, 2 * hidden)
    r_h = _slice(t, rt, 1, 2 * hidden, 3 * hidden)
    rb_zr = _slice(t, rb, 0, 0, 2 * hidden) if rb is not None else None
    rb_h = _slice(t, rb, 0, 2 * hidden, 3 * hidden) if rb is not None else None
    zr = t.op("tensor.add", _slice(t, xk, 1, 0, 2 * hidden), _hidden_proj(t, h, r_zr, rb_zr))
    z = f(_clipped(t, _gate(t, zr, 0, hidden), clip))
    r = f(_clipped(t, _gate(t, zr, 1, hidden), clip))
    if t.attr(node, "linear_before_reset", 0):
        hh = t.op("tensor.mul", r, _hidden_proj(t, h, r_h, rb_h))
    else:
        hh = _hidden_proj(t, t.op("tensor.mul", r, h), r_h, rb_h)
    cand = g(_clipped(t, t.op("tensor.add", _gate(t, xk, 2, hidden), hh), clip))
    # H = (1 - z) * cand + z * H = cand + z * (H - cand)
    return t.op("tensor.add", cand, t.op("tensor.mul", z, t.op("tensor.sub", h, cand))), None


def _lstm_cell(t: T, node: Any, xk: Value, h: Value, c: Value, rt: Value, rb: Value | None,
               hidden: int, acts: list[Act], clip: float | None, d: int, ins: list) -> tuple[Value, Value]:
    f, g, hact = acts
    pre = t.op("tensor.add", xk, _hidden_proj(t, h, rt, rb))       # gates i, o, f, c
    p = _opt(ins, 7)
    peep = None
    if p is not None:
        pd = _reshape(t, _slice(t, p, 0, d, d + 1), (3 * hidden,))
        peep = [t.broadcast_to(_slice(t, pd, 0, k * hidden, (k + 1) * hidden), h.type.shape)
                for k in range(3)]                                   # i, o, f

    def gate(k: int, cell: Value | None = None, pk: int = 0) -> Value:
        v = _gate(t, pre, k, hidden)
        if peep is not None and cell is not None:
            v = t.op("tensor.add", v, t.op("tensor.mul", peep[pk], cell))
        return _clipped(t, v, clip)

    i = f(gate(0, c, 0))
    if t.attr(node, "input_forget", 0):
        fg = t.op("tensor.sub", t.scalar(1, i), i)
    else:
        fg = f(gate(2, c, 2))
    cand = g(gate(3))
    c_new = t.op("tensor.add", t.op("tensor.mul", fg, c), t.op("tensor.mul", i, cand))
    o = f(gate(1, c_new, 1))
    return t.op("tensor.mul", o, hact(c_new)), c_new


@rule("RNN")
def _rnn(t: T, node: Any, ins: list[Value | None]) -> list[Value]:
    return _recurrent(t, node, ins, 1, ["Tanh"], _rnn_cell, has_c=False)


@rule("GRU")
def _gru(t: T, node: Any, ins: list[Value | None]) -> list[Value]:
    return _recurrent(t, node, ins, 3, ["Sigmoid", "Tanh"], _gru_cell, has_c=False)


@rule("LSTM")
def _lstm(t: T, node: Any, ins: list[Value | None]) -> list[Value]:
    return _recurrent(t, node, ins, 4, ["Sigmoid", "Tanh", "Tanh"], _lstm_cell, has_c=True)
