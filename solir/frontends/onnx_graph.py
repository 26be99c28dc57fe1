"""ONNX ModelProto -> tensor-level IR: the graph walk. Per-operator rules live in
`onnx_ops.py` (one table entry per op_type); this file reads the model, checks it, makes
types, and folds values computable at compile time (shape subgraphs such as
Shape -> Gather -> Concat -> Reshape become constants as they are translated).

Each op's Loc names the node, its op_type and the model, so an error reads
    at onnx node 'conv1' (Conv, opset 17) in resnet.onnx
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from solir.errors import ParseError, SolirError, UnsupportedOpError
from solir.frontends import rule_registrar
from solir.ir.core import Block, Builder, Func, Loc, Module, Value
from solir.ir.types import DType, TensorType

MIN_OPSET = 1     # rules read both the attribute and the input forms of ops (axes, split...)


def _max_opset() -> int:
    import onnx.defs
    return int(onnx.defs.onnx_opset_version())   # the newest the installed onnx defines


MAX_OPSET = _max_opset()
FOLD_LIMIT = 1 << 16          # fold ops on constants whose result has at most this many elements
SPLAT_FOLD_LIMIT = 1 << 10    # ...but broadcasts only when small (shape values), not splats

# ONNX TensorProto.DataType -> solir dtype
_DTYPES = {1: DType.F32, 11: DType.F64, 10: DType.F16, 16: DType.BF16, 3: DType.I8,
           6: DType.I32, 7: DType.I64, 9: DType.I1}
_DTYPE_NAMES = {2: "uint8", 4: "uint16", 5: "int16", 8: "string", 12: "uint32", 13: "uint64",
                14: "complex64", 15: "complex128", 17: "float8e4m3fn", 18: "float8e4m3fnuz",
                19: "float8e5m2", 20: "float8e5m2fnuz", 21: "uint4", 22: "int4", 23: "float4e2m1"}

Rule = Callable[["OnnxTranslator", Any, list[Value | None]], Sequence[Value]]
RULES: dict[str, Rule] = {}

rule = rule_registrar(RULES)


def onnx_dtype(code: int, loc: Loc | None = None) -> DType:
    if code in _DTYPES:
        return _DTYPES[code]
    raise UnsupportedOpError(f"ONNX data type {_DTYPE_NAMES.get(code, code)} is not supported",
                             loc=loc, fix="solir supports float32/64, float16, bfloat16, int8/32/64 "
                                          "and bool tensors")


def load_model(model: Any) -> tuple[Any, str]:
    """A ModelProto from a path, bytes or a ModelProto; and a name for error messages."""
    import onnx
    from google.protobuf.message import DecodeError
    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<model>"
    if isinstance(model, (bytes, bytearray)):
        data, where = bytes(model), "<bytes>"
    else:
        p = Path(model)
        if not p.exists():
            raise SolirError(f"no such file: {p}")
        data, where = p.read_bytes(), str(p)
    try:
        m = onnx.ModelProto()
        m.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as e:
        raise ParseError(f"{where} is not a valid ONNX model (protobuf decoding failed: {e})",
                         fix="check that the file is complete (not truncated) and is an .onnx "
                             "model") from None
    if not m.graph.node and not m.graph.output:
        raise ParseError(f"{where} holds no ONNX graph", fix="is this an ONNX model file?")
    return m, where


def from_onnx(model: Any, *, input_shapes: dict[str, Sequence[int]] | None = None,
              constant_inputs: dict[str, np.ndarray] | None = None, name: str | None = None) -> Module:
    """Translate an ONNX model (path, bytes or ModelProto) into a one-function Module.
    `input_shapes` fixes symbolic dims (e.g. the batch) of graph inputs; `constant_inputs`
    binds graph inputs to values (they are then not arguments of the function)."""
    proto, where = load_model(model)
    t = OnnxTranslator(proto, where, input_shapes or {}, constant_inputs)
    return Module([t.translate(name)])


class NeedsConstant(UnsupportedOpError):
    """A graph input whose value decides a shape (axes, a target shape, pads...). The backend
    answers by specializing the model on that input's value."""

    def __init__(self, message: str, input_name: str, **kw: Any):
        super().__init__(message, **kw)
        self.input_name = input_name


class OnnxTranslator:
    def __init__(self, model: Any, where: str, input_shapes: dict[str, Sequence[int]],
                 constant_inputs: dict[str, np.ndarray] | None = None):
        self.model = model
        self.where = where
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}
        self.constant_inputs = constant_inputs or {}
        self.opset = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
        self.version = self.opset.get("ai.onnx", MAX_OPSET)
        self.block = Block()
        self.b = Builder(self.block, Loc(f"onnx model {where}"))
        self.node: Any = None

    # -- the graph walk ---------------------------------------------------------------------------
    def translate(self, name: str | None = None) -> Func:
        import onnx.numpy_helper as nh
        g = self.model.graph
        if not MIN_OPSET <= self.version <= MAX_OPSET:
            raise UnsupportedOpError(f"{self.where} uses ONNX opset {self.version}; solir reads "
                                     f"opsets {MIN_OPSET} to {MAX_OPSET}",
                                     fix="convert it with onnx.version_converter.convert_version")
        env: dict[str, Value] = {}
        inits = {i.name for i in g.initializer}
        for init in g.initializer:
            self.b.loc = Loc(f"onnx initializer '{init.name}' in {self.where}")
            try:
                arr = nh.to_array(init)
            except Exception as e:  # noqa: BLE001 (onnx raises assorted errors on bad data)
                raise ParseError(f"initializer '{init.name}' cannot be read: {e}", loc=self.b.loc,
                                 fix="its raw data does not match its dims and data type") from None
            onnx_dtype(init.data_type, self.b.loc)
            env[init.name] = self.constant(arr, name=init.name)
        args: list[Value] = []
        for vi in g.input:
            if vi.name in inits:
                continue
            if vi.name in self.constant_inputs:
                env[vi.name] = self.constant(self.constant_inputs[vi.name], name=vi.name)
                continue
            arg = self.block.add_arg(self.value_type(vi), _clean(vi.name))
            env[vi.name] = arg
            args.append(arg)
        for k, node in enumerate(self._ordered_nodes(env)):
            self.node = node
            label = node.name or f"#{k}"
            self.b.loc = Loc(f"onnx node '{label}' ({node.op_type}, opset {self.version}) in {self.where}")
            if node.domain not in ("", "ai.onnx"):
                raise UnsupportedOpError(f"operator {node.domain}.{node.op_type} (domain "
                                         f"'{node.domain}') is not supported", loc=self.b.loc)
            fn = RULES.get(node.op_type)
            if fn is None:
                raise UnsupportedOpError(f"ONNX operator {node.op_type} (opset {self.version}) is "
                                         "not supported", loc=self.b.loc,
                                         fix="see `solir ops --onnx` for the supported operators")
            ins = [env[i] if i else None for i in node.input]
            outs = list(fn(self, node, ins))
            for out_name, v in zip(node.output, outs):
                if out_name:
                    env[out_name] = v
        results = []
        for vi in g.output:
            if vi.name not in env:
                raise ParseError(f"graph output '{vi.name}' is produced by no node",
                                 loc=Loc(f"onnx graph of {self.where}"))
            results.append(env[vi.name])
        self.b.loc = Loc(f"onnx graph outputs of {self.where}")
        self.b.op("return", results, result_types=[])
        # the ONNX names, for the manifest, model.h and `solir run --input NAME=...`
        names = {"input_names": tuple(vi.name for vi in g.input if vi.name not in inits
                                      and vi.name not in self.constant_inputs),
                 "output_names": tuple(vi.name for vi in g.output)}
        return Func(_clean(name or g.name or "model"), self.block, names)

    def _ordered_nodes(self, env: dict[str, Value]) -> list[Any]:
        """The nodes in an order where each input is defined first (ONNX requires graphs to be
        sorted, but some exporters are not); dangling inputs and cycles are errors."""
        nodes = list(self.model.graph.node)
        known = set(env)
        ordered, pending = [], nodes
        while pending:
            ready = [n for n in pending if all(not i or i in known for i in n.input)]
            if not ready:
                produced = {o for n in pending for o in n.output}
                for n in pending:
                    missing = [i for i in n.input if i and i not in known and i not in produced]
                    if missing:
                        raise ParseError(f"node '{n.name or n.op_type}' ({n.op_type}) reads "
                                         f"'{missing[0]}', which no node, input or initializer "
                                         "defines", loc=Loc(f"onnx graph of {self.where}"))
                cyc = ", ".join(f"'{n.name or n.op_type}'" for n in pending[:5])
                raise ParseError(f"the graph has a cycle through nodes {cyc}",
                                 loc=Loc(f"onnx graph of {self.where}"))
            for n in ready:
                known.update(o for o in n.output if o)
            ordered += ready
            ready_ids = {id(n) for n in ready}
            pending = [n for n in pending if id(n) not in ready_ids]
        return ordered

    def value_type(self, vi: Any) -> TensorType:
        loc = Loc(f"onnx graph input '{vi.name}' in {self.where}")
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise UnsupportedOpError(f"graph input '{vi.name}' is not a tensor (sequences, maps "
                                     "and optionals are not supported)", loc=loc)
        dtype = onnx_dtype(tt.elem_type, loc)
        if vi.name in self.input_shapes:
            return TensorType(self.input_shapes[vi.name], dtype)
        if not tt.HasField("shape"):
            raise UnsupportedOpError(f"graph input '{vi.name}' has no shape", loc=loc,
                                     fix=f"pass input_shapes={{'{vi.name}': [...]}}")
        dims = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                sym = d.dim_param or "?"
                raise UnsupportedOpError(f"graph input '{vi.name}' has a symbolic dim '{sym}'",
                                         loc=loc, fix=f"fix its shape: `--input-shape {vi.name}=DxD...`"
                                         f" on the command line, input_shapes={{'{vi.name}': [...]}}"
                                         " in from_onnx (solir.onnx.prepare takes it from the "
                                         "first inputs)")
        return TensorType(tuple(dims), dtype)

    # -- helpers used by rules ----------------------------------------------------------------------
    def attr(self, node: Any, name: str, default: Any = None) -> Any:
        import onnx.helper as oh
        for a in node.attribute:
            if a.name == name:
                v = oh.get_attribute_value(a)
                if isinstance(v, bytes):
                    return v.decode()
                if isinstance(v, list) and v and isinstance(v[0], bytes):
                    return [x.decode() for x in v]
                return v
        return default

    def constant(self, value: Any, name: str = "") -> Value:
        arr = np.array(value, order="C")
        if arr.dtype == np.uint8 or arr.dtype.kind == "U":
            raise UnsupportedOpError(f"constant of dtype {arr.dtype}", loc=self.b.loc)
        return self.b.op("tensor.constant", [], {"value": arr}, name_hint=_clean(name)).result

    def const_value(self, v: Value | None) -> np.ndarray | None:
        if v is not None and getattr(v.owner, "name", "") == "tensor.constant":
            return v.owner.attrs["value"]  # type: ignore[union-attr]
        return None

    def need_const(self, v: Value | None, what: str) -> np.ndarray:
        """A value the IR needs at compile time (a shape, axes, pads...)."""
        c = self.const_value(v)
        source = self._upstream_input(v) if c is None and v is not None else None
        if source is not None:
            raise NeedsConstant(f"{what} depends on graph input '{self._input_name(source)}'; it "
                                "must be known at compile time", input_name=self._input_name(source),
                                loc=self.b.loc,
                                fix="solir compiles static shapes: make it an initializer, or run "
                                    "through solir.onnx, which specializes on its value")
        if c is None:
            raise UnsupportedOpError(f"{what} must be known at compile time (it is computed from "
                                     "graph inputs here)", loc=self.b.loc,
                                     fix="solir compiles static shapes; make it an initializer or "
                                         "a constant")
        return c

    def _upstream_input(self, v: Value) -> Value | None:
        """A graph input (function argument) that `v` is computed from, if any."""
        seen: set[int] = set()
        stack = [v]
        while stack:
            u = stack.pop()
            if id(u) in seen:
                continue
            seen.add(id(u))
            if u.owner is self.block:
                return u
            if u.owner is not None and hasattr(u.owner, "operands"):
                stack.extend(u.owner.operands)  # type: ignore[union-attr]
        return None

    def _input_name(self, v: Value) -> str:
        names = [vi.name for vi in self.model.graph.input
                 if vi.name not in {i.name for i in self.model.graph.initializer}
                 and vi.name not in self.constant_inputs]
        return names[v.index]

    def op(self, name: str, *operands: Value, **attrs: Any) -> Value:
        """Build one tensor op; on constant operands (and a small result) fold it at once."""
        op = self.b.op(name, list(operands), attrs)
        limit = SPLAT_FOLD_LIMIT if name == "tensor.broadcast_in_dim" else FOLD_LIMIT
        if operands and all(self.const_value(v) is not None for v in operands) \
                and op.result.type.size <= limit and op.opdef.reference is not None:
            from solir.ir.interpreter import _run_op
            [val] = _run_op(op, [self.const_value(v) for v in operands], {})
            self.block.ops.pop()
            return self.constant(np.asarray(val, dtype=op.result.type.dtype.numpy))
        return op.result

    def broadcast_to(self, v: Value, shape: tuple[int, ...]) -> Value:
        if v.type.shape == shape:
            return v
        offset = len(shape) - v.type.rank
        if offset < 0 or any(n not in (1, shape[offset + k]) for k, n in enumerate(v.type.shape)):
            raise UnsupportedOpError(f"cannot broadcast {v.type} to {list(shape)}", loc=self.b.loc)
        return self.op("tensor.broadcast_in_dim", v, shape=shape,
                       broadcast_dimensions=tuple(range(offset, len(shape))))

    def broadcast(self, *vs: Value) -> list[Value]:
        """Numpy (multidirectional) broadcasting of all operands to one shape."""
        try:
            shape = tuple(int(d) for d in np.broadcast_shapes(*(v.type.shape for v in vs)))
        except ValueError:
            raise UnsupportedOpError("operands of shapes " + ", ".join(str(list(v.type.shape)) for v in vs)
                                     + " do not broadcast", loc=self.b.loc) from None
        return [self.broadcast_to(v, shape) for v in vs]

    def scalar(self, value: Any, like: Value) -> Value:
        """A constant of `like`'s dtype broadcast to its shape."""
        c = self.constant(np.array(value, dtype=like.type.dtype.numpy))
        return self.broadcast_to(c, like.type.shape)

    def convert(self, v: Value, dtype: DType) -> Value:
        return v if v.type.dtype == dtype else self.op("tensor.convert", v, dtype=dtype)


def _clean(name: str) -> str:
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return out if out and not out[0].isdigit() else "v" + out
