"""IR nodes: Value, Op, Block, Func, Module. Types and attributes are frozen; ops and values
compare by identity (two adds are two ops)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from solir.ir.types import TensorType

if TYPE_CHECKING:
    from solir.ir.registry import OpDef


@dataclass(frozen=True)
class Loc:
    """Where an op came from: a jaxpr equation, an ONNX node, or a line of a .sir file."""

    description: str

    def __str__(self) -> str:
        return self.description


UNKNOWN = Loc("")


@dataclass(eq=False)
class Value:
    type: TensorType
    name: str = ""                   # a hint the printer keeps (`%x`, `%acc`)
    owner: "Op | Block | None" = None
    index: int = 0

    def __repr__(self) -> str:
        return f"<Value %{self.name or '?'}: {self.type}>"


@dataclass(eq=False)
class Block:
    args: list[Value] = field(default_factory=list)
    ops: list["Op"] = field(default_factory=list)

    def add_arg(self, type: TensorType, name: str = "") -> Value:
        v = Value(type, name, self, len(self.args))
        self.args.append(v)
        return v

    def walk(self) -> Iterator["Op"]:
        for op in self.ops:
            yield op
            for region in op.regions:
                yield from region.walk()


@dataclass(eq=False)
class Op:
    opdef: "OpDef"
    operands: list[Value]
    results: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    loc: Loc = UNKNOWN
    regions: list[Block] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.opdef.name

    @property
    def result(self) -> Value:
        assert len(self.results) == 1, f"{self.name} has {len(self.results)} results"
        return self.results[0]

    def __repr__(self) -> str:
        return f"<Op {self.name} {[str(r.type) for r in self.results]}>"


@dataclass(eq=False)
class Func:
    name: str
    body: Block
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def args(self) -> list[Value]:
        return self.body.args

    @property
    def return_op(self) -> Op:
        return self.body.ops[-1]

    @property
    def results(self) -> list[Value]:
        return self.return_op.operands

    @property
    def result_types(self) -> list[TensorType]:
        return [v.type for v in self.results]


@dataclass(eq=False)
class Module:
    funcs: list[Func] = field(default_factory=list)

    def func(self, name: str | None = None) -> Func:
        if name is None:
            return self.funcs[0]
        for f in self.funcs:
            if f.name == name:
                return f
        raise KeyError(name)

    def __str__(self) -> str:
        from solir.ir.printer import print_module

        return print_module(self)


def make_op(opdef: "OpDef", operands: Sequence[Value], result_types: Sequence[TensorType],
            attrs: dict[str, Any] | None = None, loc: Loc = UNKNOWN,
            regions: Sequence[Block] = (), names: Sequence[str] = ()) -> Op:
    op = Op(opdef, list(operands), [], dict(attrs or {}), loc, list(regions))
    for i, t in enumerate(result_types):
        op.results.append(Value(t, names[i] if i < len(names) else "", op, i))
    return op


class Builder:
    """Appends ops to a block; infers result types from the registry's type rules."""

    def __init__(self, block: Block, loc: Loc = UNKNOWN):
        self.block = block
        self.loc = loc

    def op(self, name: str, operands: Sequence[Value], attrs: dict[str, Any] | None = None,
           result_types: Sequence[TensorType] | None = None, name_hint: str = "",
           regions: Sequence[Block] = (), loc: Loc | None = None) -> Op:
        from solir.ir.registry import get_op

        opdef = get_op(name)
        attrs = dict(attrs or {})
        if result_types is None:
            result_types = opdef.infer_types([v.type for v in operands], attrs, loc or self.loc)
        op = make_op(opdef, operands, result_types, attrs, loc or self.loc, regions,
                     [name_hint] * len(result_types))
        self.block.ops.append(op)
        return op

    def __call__(self, name: str, *operands: Value, name_hint: str = "", **attrs: Any) -> Value:
        return self.op(name, operands, attrs, name_hint=name_hint).result


def replace_uses(block: Block, mapping: dict[Value, Value]) -> None:
    """Rewrite every operand in `block` (and nested regions) through `mapping`."""
    if not mapping:
        return
    for op in block.walk():
        op.operands = [mapping.get(v, v) for v in op.operands]


def users(block: Block) -> dict[Value, list[Op]]:
    out: dict[Value, list[Op]] = {}
    for op in block.ops:
        for v in op.operands:
            out.setdefault(v, []).append(op)
    return out
