"""The tensor- and kernel-level IR: types, nodes, the op registry, text, verifier, interpreter."""

from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Block, Builder, Func, Loc, Module, Op, Value
from solir.ir.types import DType, TensorType

__all__ = ["AffineExpr", "AffineMap", "Block", "Builder", "DType", "Func", "Loc", "Module", "Op",
           "TensorType", "Value"]
