"""jaxpr -> tensor-level IR. Translation only: each primitive maps to tensor ops through one
table entry; nothing is optimized here. Sub-jaxprs in equation params (jit/pjit, custom_jvp_call,
custom_vjp_call, closed_call, remat) are inlined, found by duck typing since JAX renamed pjit
to jit and merged ClosedJaxpr into Jaxpr across versions."""

from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np

from solir.errors import SolirError, UnsupportedOpError
from solir.frontends import rule_registrar
from solir.ir.core import Block, Builder, Func, Loc, Module, Value
from solir.ir.types import DType, TensorType

Rule = Callable[["_Translator", Any, list[Value]], Sequence[Value]]
RULES: dict[str, Rule] = {}

rule = rule_registrar(RULES)


def from_jaxpr(closed: Any, name: str = "main", source: str = "") -> Module:
    """Translate a ClosedJaxpr (from jax.make_jaxpr) into a one-function Module."""
    t = _Translator(source)
    return Module([t.translate(closed, _clean_name(name))])


def _clean_name(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", name or "main")
    return name if not name[0].isdigit() else "f_" + name


def _dtype(dt: Any, loc: Loc) -> DType:
    try:
        return DType.from_numpy(np.dtype(dt))
    except SolirError as e:
        raise UnsupportedOpError(e.message, loc=loc, fix=e.fix) from None


def _aval_type(aval: Any, loc: Loc) -> TensorType:
    return TensorType(tuple(int(d) for d in aval.shape), _dtype(aval.dtype, loc))


def _parts(closed: Any) -> tuple[Any, list[Any]]:
    """(jaxpr, consts) of a ClosedJaxpr, or of a bare Jaxpr (no consts)."""
    if hasattr(closed, "jaxpr") and hasattr(closed, "consts"):
        return closed.jaxpr, list(closed.consts)
    return closed, []


class _Translator:
    def __init__(self, source: str):
        self.source = source
        self.b: Builder = None  # type: ignore[assignment]
        self.eqn_index = 0
        self.callers: list[str] = []   # source lines of the calls being inlined (outermost first)
        self.eqn: Any = None

    # -- driver ----------------------------------------------------------------------------------
    def translate(self, closed: Any, name: str) -> Func:
        jaxpr, consts = _parts(closed)
        block = Block()
        self.b = Builder(block)
        env: dict[Any, Value] = {}
        for k, v in enumerate(jaxpr.invars):
            env[v] = block.add_arg(_aval_type(v.aval, Loc(f"argument {k}")), f"arg{k}")
        outs = self.run(jaxpr, consts, env)
        self.b.loc = Loc(f"the result of {name}")
        self.b.op("return", outs, result_types=[])
        return Func(name, block)

    def run(self, jaxpr: Any, consts: list[Any], env: dict[Any, Value]) -> list[Value]:
        for v, c in zip(jaxpr.constvars, consts):
            env[v] = self.constant(np.asarray(c))
        for eqn in jaxpr.eqns:
            self.eqn_index += 1
            self.eqn = eqn
            prim = eqn.primitive.name
            self.b.loc = self.loc_of(eqn)
            ins = [self.read(a, env) for a in eqn.invars]
            fn = RULES.get(prim)
            if fn is None:
                sub = _sub_jaxpr(eqn.params)
                if sub is None:
                    raise UnsupportedOpError(
                        f"jax primitive '{prim}' is not supported", loc=self.b.loc,
                        fix="rewrite it with supported jax.numpy/lax operations, or add a rule to "
                            "solir/frontends/jaxpr.py")
                where, call = self._where(eqn), prim
                if isinstance(eqn.params.get("name"), str):
                    call = f"{prim}({eqn.params['name']})"
                self.callers.append(f"'{call}' at {where}" if where else f"'{call}'")
                try:
                    outs = self.inline(sub, ins)
                finally:
                    self.callers.pop()
            else:
                outs = list(fn(self, eqn, ins))
            for var, val in zip(eqn.outvars, outs):
                want = _aval_type(var.aval, self.b.loc)
                if val.type != want:
                    raise UnsupportedOpError(f"translating '{prim}' gave {val.type}, jax says {want}",
                                             loc=self.b.loc, fix="this is a solir frontend bug")
                env[var] = val
        return [self.read(a, env) for a in jaxpr.outvars]

    def inline(self, closed: Any, ins: list[Value]) -> list[Value]:
        jaxpr, consts = _parts(closed)
        return self.run(jaxpr, consts, dict(zip(jaxpr.invars, ins)))

    @staticmethod
    def _where(eqn: Any) -> str:
        try:
            from jax._src import source_info_util
            return source_info_util.summarize(eqn.source_info)
        except Exception:  # noqa: BLE001 (private API; a missing line is not an error)
            return ""

    def loc_of(self, eqn: Any) -> Loc:
        """Where an equation came from: its own user source line if jax kept one, and the
        calls it was inlined from (an op inside `jnp.sort` reports the user's call of it)."""
        where = self._where(eqn)
        text = f"jaxpr equation {self.eqn_index} '{eqn.primitive.name}'"
        if where:
            text += f" at {where}"
        if self.callers:
            text += " inside " + " inside ".join(reversed(self.callers))
        return Loc(text)

    def read(self, atom: Any, env: dict[Any, Value]) -> Value:
        if hasattr(atom, "val") and not hasattr(atom, "count") and type(atom).__name__ == "Literal":
            return self.constant(np.asarray(atom.val, dtype=atom.aval.dtype))
        return env[atom]

    # -- helpers used by rules ---------------------------------------------------------------------
    def constant(self, value: np.ndarray) -> Value:
        arr = np.array(value, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        _dtype(arr.dtype, self.b.loc)
        return self.b.op("tensor.constant", [], {"value": arr}).result

    def op(self, name: str, *operands: Value, **attrs: Any) -> Value:
        return self.b.op(name, list(operands), attrs).result

    def broadcast_to(self, v: Value, shape: tuple[int, ...]) -> Value:
        """Numpy-style broadcasting, which jaxprs apply implicitly to literals and size-1 dims."""
        if v.type.shape == shape or v.type.rank > len(shape):
            return v  # equal, or a mismatch the op's type rule will report
        offset = len(shape) - v.type.rank
        if any(n not in (1, shape[offset + k]) for k, n in enumerate(v.type.shape)):
            return v
        return self.op("tensor.broadcast_in_dim", v, shape=shape,
                       broadcast_dimensions=tuple(range(offset, len(shape))))

    def out_type(self, eqn: Any, k: int = 0) -> TensorType:
        return _aval_type(eqn.outvars[k].aval, self.b.loc)


def _sub_jaxpr(params: dict[str, Any]) -> Any:
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = params.get(key)
        if sub is not None and hasattr(_parts(sub)[0], "eqns"):
            return sub
    return None


# ---- elementwise ----------------------------------------------------------------------------------

_ELEMENTWISE = {
    "add": "add", "add_any": "add", "sub": "sub", "mul": "mul", "div": "div", "rem": "rem",
    "max": "max", "min": "min", "pow": "pow", "atan2": "atan2", "neg": "neg", "abs": "abs",
    "sign": "sign", "floor": "floor", "ceil": "ceil", "exp": "exp", "exp2": "exp2", "log": "log",
    "log1p": "log1p", "expm1": "expm1", "tanh": "tanh", "logistic": "logistic", "sqrt": "sqrt",
    "rsqrt": "rsqrt", "cbrt": "cbrt", "erf": "erf", "erfc": "erfc", "erf_inv": "erf_inv",
    "sin": "sin", "cos": "cos", "tan": "tan", "is_finite": "is_finite", "eq": "eq", "ne": "ne",
    "lt": "lt", "le": "le", "gt": "gt", "ge": "ge", "and": "and", "or": "or", "xor": "xor",
    "not": "not", "square": "square",
}


def _elementwise(name: str) -> Rule:
    def translate(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
        shape = t.out_type(eqn).shape
        return [t.op(f"tensor.{name}", *[t.broadcast_to(v, shape) for v in ins])]
    return translate


for _prim, _op in _ELEMENTWISE.items():
    RULES[_prim] = _elementwise(_op)


@rule("integer_pow")
def _integer_pow(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    return [t.op("tensor.integer_pow", ins[0], y=int(eqn.params["y"]))]


@rule("round")
def _round(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    method = int(eqn.params.get("rounding_method", 0))
    return [t.op("tensor.round", ins[0], method="even" if method == 1 else "away")]


@rule("convert_element_type")
def _convert(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    dt = _dtype(eqn.params["new_dtype"], t.b.loc)
    return [ins[0] if ins[0].type.dtype == dt else t.op("tensor.convert", ins[0], dtype=dt)]


@rule("select_n")
def _select_n(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    shape = t.out_type(eqn).shape
    pred, cases = ins[0], [t.broadcast_to(c, shape) for c in ins[1:]]
    if len(cases) == 1:
        return [cases[0]]
    pred = t.broadcast_to(pred, shape)
    if pred.type.dtype not in (DType.I1, DType.I32):
        pred = t.op("tensor.convert", pred, dtype=DType.I32)
    return [t.b.op("tensor.select", [pred, *cases]).result]


@rule("clamp")
def _clamp(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    shape = t.out_type(eqn).shape
    return [t.b.op("tensor.clamp", [t.broadcast_to(v, shape) for v in ins]).result]


@rule("copy", "copy_p", "stop_gradient", "optimization_barrier")
def _identity(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    return ins


@rule("reduce_precision")
def _reduce_precision(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    finfo = np.finfo(ins[0].type.dtype.numpy)
    if eqn.params["mantissa_bits"] >= finfo.nmant and eqn.params["exponent_bits"] >= finfo.nexp:
        return ins
    raise UnsupportedOpError("reduce_precision to fewer bits than the dtype has", loc=t.b.loc)


# ---- shapes ----------------------------------------------------------------------------------------

@rule("broadcast_in_dim")
def _broadcast(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    if len(ins) > 1:
        raise UnsupportedOpError("broadcast_in_dim with dynamic shapes", loc=t.b.loc)
    return [t.op("tensor.broadcast_in_dim", ins[0], shape=tuple(eqn.params["shape"]),
                 broadcast_dimensions=tuple(int(d) for d in eqn.params["broadcast_dimensions"]))]


@rule("reshape", "squeeze", "expand_dims")
def _reshape(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    if eqn.params.get("dimensions") not in (None, ()) and eqn.primitive.name == "reshape":
        raise UnsupportedOpError("reshape with a dimensions (transpose) argument", loc=t.b.loc,
                                 fix="transpose explicitly before reshaping")
    return [t.op("tensor.reshape", ins[0], shape=t.out_type(eqn).shape)]


@rule("transpose")
def _transpose(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    return [t.op("tensor.transpose", ins[0], permutation=tuple(eqn.params["permutation"]))]


@rule("rev")
def _rev(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    return [t.op("tensor.rev", ins[0], dimensions=tuple(eqn.params["dimensions"]))]


@rule("iota")
def _iota(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    out = t.out_type(eqn)
    return [t.op("tensor.iota", shape=out.shape, dimension=int(eqn.params["dimension"]),
                 dtype=out.dtype)]


@rule("slice")
def _slice(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    p = eqn.params
    return [t.op("tensor.slice", ins[0], start=tuple(p["start_indices"]),
                 limit=tuple(p["limit_indices"]), strides=tuple(p["strides"] or ()) or None)]


@rule("split")
def _split(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    axis, x = eqn.params["axis"], ins[0]
    outs, start = [], 0
    for size in eqn.params["sizes"]:
        lo = [0] * x.type.rank
        hi = list(x.type.shape)
        lo[axis], hi[axis] = start, start + size
        outs.append(t.op("tensor.slice", x, start=tuple(lo), limit=tuple(hi), strides=None))
        start += size
    return outs


@rule("concatenate")
def _concatenate(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    return [t.b.op("tensor.concatenate", ins, {"dimension": int(eqn.params["dimension"])}).result]


@rule("pad")
def _pad(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    cfg = eqn.params["padding_config"]
    return [t.op("tensor.pad", ins[0], ins[1], low=tuple(c[0] for c in cfg),
                 high=tuple(c[1] for c in cfg), interior=tuple(c[2] for c in cfg))]


@rule("dynamic_slice")
def _dynamic_slice(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    return [t.b.op("tensor.dynamic_slice", ins, {"sizes": tuple(eqn.params["slice_sizes"])}).result]


@rule("dynamic_update_slice")
def _dynamic_update_slice(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    return [t.b.op("tensor.dynamic_update_slice", ins).result]


@rule("gather")
def _gather(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    p = eqn.params
    dn = p["dimension_numbers"]
    mode = str(p.get("mode", "clip")).lower()
    fill = p.get("fill_value")
    attrs = {
        "offset_dims": tuple(dn.offset_dims), "collapsed_slice_dims": tuple(dn.collapsed_slice_dims),
        "start_index_map": tuple(dn.start_index_map),
        "operand_batching_dims": tuple(getattr(dn, "operand_batching_dims", ())),
        "start_indices_batching_dims": tuple(getattr(dn, "start_indices_batching_dims", ())),
        "slice_sizes": tuple(p["slice_sizes"]),
        "mode": "fill" if "fill" in mode else "clip",
    }
    if fill is not None:
        attrs["fill_value"] = float(fill) if ins[0].type.dtype.is_float else int(fill)
    return [t.b.op("tensor.gather", ins, attrs).result]


_SCATTER = {"scatter": "set", "scatter-add": "add", "scatter_add": "add", "scatter-mul": "mul",
            "scatter_mul": "mul", "scatter-min": "min", "scatter_min": "min",
            "scatter-max": "max", "scatter_max": "max"}


@rule(*_SCATTER)
def _scatter(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    p = eqn.params
    dn = p["dimension_numbers"]
    if eqn.primitive.name == "scatter" and p.get("update_jaxpr") is not None:
        raise UnsupportedOpError("scatter with a custom update computation (x.at[i].apply)",
                                 loc=t.b.loc, fix="use .at[i].set/add/multiply/min/max")
    attrs = {
        "update_window_dims": tuple(dn.update_window_dims),
        "inserted_window_dims": tuple(dn.inserted_window_dims),
        "scatter_dims_to_operand_dims": tuple(dn.scatter_dims_to_operand_dims),
        "operand_batching_dims": tuple(getattr(dn, "operand_batching_dims", ())),
        "scatter_indices_batching_dims": tuple(getattr(dn, "scatter_indices_batching_dims", ())),
        "combiner": _SCATTER[eqn.primitive.name],
        "mode": "clip" if "clip" in str(p.get("mode", "")).lower() else "drop",
    }
    return [t.b.op("tensor.scatter", ins, attrs).result]


@rule("select_and_scatter_add")
def _select_and_scatter_add(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    p = eqn.params
    select = {"ge": "max", "gt": "max", "le": "min", "lt": "min"}.get(p["select_prim"].name)
    if select is None:
        raise UnsupportedOpError(f"select_and_scatter_add selecting with {p['select_prim'].name}",
                                 loc=t.b.loc)
    return [t.op("tensor.select_and_scatter_add", ins[0], ins[1], select=select,
                 window=tuple(p["window_dimensions"]), strides=tuple(p["window_strides"]),
                 padding=tuple(tuple(pp) for pp in p["padding"]))]


# ---- reductions -------------------------------------------------------------------------------------

for _kind in ("sum", "max", "min", "prod", "and", "or"):
    def _make(kind: str) -> Rule:
        def translate(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
            return [t.op(f"tensor.reduce_{kind}", ins[0], axes=tuple(eqn.params["axes"]))]
        return translate
    RULES[f"reduce_{_kind}"] = _make(_kind)


@rule("argmax", "argmin")
def _arg(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    axes = tuple(eqn.params["axes"])
    return [t.op(f"tensor.{eqn.primitive.name}", ins[0], axis=int(axes[0]),
                 index_dtype=_dtype(eqn.params["index_dtype"], t.b.loc))]


@rule("cumsum", "cumprod", "cummax", "cummin")
def _cumulative(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    axis, x = int(eqn.params["axis"]), ins[0]
    name = f"tensor.{eqn.primitive.name}"
    if not eqn.params.get("reverse"):
        return [t.op(name, x, axis=axis)]
    flipped = t.op("tensor.rev", x, dimensions=(axis,))
    return [t.op("tensor.rev", t.op(name, flipped, axis=axis), dimensions=(axis,))]


_WINDOW = {"reduce_window_sum": "add", "reduce_window_max": "max", "reduce_window_min": "min"}


@rule(*_WINDOW)
def _reduce_window(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    return [_window(t, eqn, ins[0], _WINDOW[eqn.primitive.name])]


def _window(t: _Translator, eqn: Any, x: Value, combiner: str) -> Value:
    p = eqn.params
    return t.op("tensor.reduce_window", x, combiner=combiner,
                window=tuple(p["window_dimensions"]), strides=tuple(p["window_strides"]),
                padding=tuple(tuple(pp) for pp in p["padding"]),
                base_dilation=tuple(p["base_dilation"]), window_dilation=tuple(p["window_dilation"]))


@rule("reduce_window")
def _reduce_window_generic(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    body, _ = _parts(eqn.params["jaxpr"])
    prims = [e.primitive.name for e in body.eqns]
    combiner = {("add",): "add", ("max",): "max", ("min",): "min"}.get(tuple(prims))
    if combiner is None or len(ins) != 2:
        raise UnsupportedOpError(f"reduce_window with body {prims}", loc=t.b.loc,
                                 fix="use a sum, max or min window reduction")
    return [_window(t, eqn, ins[0], combiner)]


# ---- contractions ----------------------------------------------------------------------------------

@rule("dot_general")
def _dot_general(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    out = t.out_type(eqn)
    lhs, rhs = ins
    attrs: dict[str, Any] = {"lhs_contract": tuple(lc), "rhs_contract": tuple(rc),
                             "lhs_batch": tuple(lb), "rhs_batch": tuple(rb)}
    if out.dtype != lhs.type.dtype or lhs.type.dtype != rhs.type.dtype:
        attrs["dtype"] = out.dtype
    return [t.b.op("tensor.dot_general", [lhs, rhs], attrs).result]


@rule("conv_general_dilated")
def _conv(t: _Translator, eqn: Any, ins: list[Value]) -> list[Value]:
    p = eqn.params
    dn = p["dimension_numbers"]
    out = t.out_type(eqn)
    attrs: dict[str, Any] = {
        "lhs_spec": tuple(dn.lhs_spec), "rhs_spec": tuple(dn.rhs_spec), "out_spec": tuple(dn.out_spec),
        "strides": tuple(p["window_strides"]), "padding": tuple(tuple(x) for x in p["padding"]),
        "lhs_dilation": tuple(p["lhs_dilation"]), "rhs_dilation": tuple(p["rhs_dilation"]),
        "feature_group_count": int(p["feature_group_count"]),
        "batch_group_count": int(p["batch_group_count"]),
    }
    if out.dtype != ins[0].type.dtype:
        attrs["dtype"] = out.dtype
    return [t.b.op("tensor.conv", ins, attrs).result]
