"""The op registry: one OpDef per op holds its operands, attributes, type rule, verifier,
numpy reference and lowering. Printer, parser, verifier, interpreter, passes and the LLVM
emitter all look ops up here, so adding an op touches one file in `solir/ir/ops/`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

from solir.errors import UnsupportedOpError, VerifyError
from solir.ir.core import Loc
from solir.ir.types import TensorType

if TYPE_CHECKING:
    from solir.ir.core import Builder, Op, Value

InferFn = Callable[[list[TensorType], dict[str, Any]], list[TensorType]]
# Kinds of op, for passes that treat families alike.
ELEMENTWISE, STRUCTURAL, REDUCTION, CONTRACTION, KERNEL, OTHER = (
    "elementwise", "structural", "reduction", "contraction", "kernel", "other")


@dataclass
class OpDef:
    name: str
    operands: tuple[str, ...]            # a leading '*' marks a variadic tail: ("*inputs",)
    infer: InferFn
    attrs: tuple[str, ...] = ()           # required attribute names
    optional_attrs: dict[str, Any] = field(default_factory=dict)  # name -> default
    verify: Callable[["Op"], str | None] | None = None
    reference: Callable[..., Any] | None = None   # (attrs, *arrays) -> array | tuple
    # Tensor level -> kernel level: builds a kernel.generic (or other ops) in its place.
    lower: Callable[["Op", "Builder"], list["Value"]] | None = None
    # Rewrites the op into simpler tensor ops before fusion (composites such as erf_inv).
    decompose: Callable[["Op", "Builder"], list["Value"]] | None = None
    # Emits one element (scalar or vector) of an elementwise op inside a kernel body.
    emit: Callable[..., Any] | None = None
    kind: str = OTHER
    doc: str = ""
    has_region: bool = False
    pure: bool = True

    @property
    def variadic(self) -> bool:
        return bool(self.operands) and self.operands[-1].startswith("*")

    def infer_types(self, types: list[TensorType], attrs: dict[str, Any],
                    loc: Loc | None = None) -> list[TensorType]:
        self.check_arity(len(types), loc)
        for a in self.attrs:
            if a not in attrs:
                raise VerifyError(f"'{self.name}' needs attribute '{a}'", loc=loc)
        try:
            return self.infer(types, attrs)
        except (VerifyError, UnsupportedOpError):
            raise
        except (ValueError, IndexError, KeyError, TypeError, AssertionError) as e:
            shown = ", ".join(str(t) for t in types)
            raise VerifyError(f"'{self.name}' cannot take operands ({shown}): {e}", loc=loc) from None

    def check_arity(self, n: int, loc: Loc | None = None) -> None:
        fixed = len(self.operands) - (1 if self.variadic else 0)
        if (n != fixed and not self.variadic) or n < fixed:
            want = f"at least {fixed}" if self.variadic else str(fixed)
            raise VerifyError(f"'{self.name}' expects {want} operands, got {n}", loc=loc)


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    assert opdef.name not in _REGISTRY, f"op {opdef.name} registered twice"
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str, loc: Loc | None = None) -> OpDef:
    _load_ops()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedOpError(f"unknown op '{name}'", loc=loc,
                                 fix="see `solir ops` for the registered ops") from None


def all_ops() -> dict[str, OpDef]:
    _load_ops()
    return dict(_REGISTRY)


_loaded = False


def _load_ops() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        import solir.ir.ops  # noqa: F401  (registers every op family)


def attrs_with_defaults(op: "Op") -> dict[str, Any]:
    return {**op.opdef.optional_attrs, **op.attrs}


# ---- type-rule helpers shared by families -------------------------------------------------

def same_as_first(types: Sequence[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    return [types[0]]


def all_same_type(types: Sequence[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
    for t in types[1:]:
        if t != types[0]:
            raise VerifyError(f"expected operands of one type, got {', '.join(map(str, types))}")
    return [types[0]]
