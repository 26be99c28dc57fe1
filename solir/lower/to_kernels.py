"""lower-to-kernels: every tensor op becomes a kernel.generic (or kernel.scatter) through its registry `lower`.
Only constants, merging reshapes (buffer views) and the return survive."""

from __future__ import annotations

from solir.errors import UnsupportedOpError
from solir.ir.core import Builder, Module, Op, Value
from solir.ir.ops.kernel import LOOP_NESTS
from solir.lower.pipeline import PassContext, pass_
from solir.lower.rewrite import rewrite_block

KEEP = {"tensor.constant", "return", "kernel.view", *LOOP_NESTS}


@pass_("lower-to-kernels")
def lower_to_kernels(module: Module, ctx: PassContext) -> Module:
    def lower(op: Op, b: Builder) -> list[Value] | None:
        if op.name in KEEP:
            return None
        if op.name == "tensor.reshape":
            from solir.ir.ops.shape import reshape_map
            if reshape_map(op.operands[0].type.shape, op.results[0].type.shape) is None:
                return None
        if op.opdef.lower is None:
            raise UnsupportedOpError(f"no lowering for '{op.name}' on target '{ctx.target.name}'",
                                     loc=op.loc,
                                     fix=f"give the '{op.name}' entry in solir/ir/ops/ a lowering "
                                         "or a decomposition")
        return op.opdef.lower(op, b)

    for f in module.funcs:
        rewrite_block(f.body, lower, max_rounds=1)
    return module
