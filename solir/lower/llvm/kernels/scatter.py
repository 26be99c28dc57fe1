"""Emits one kernel.scatter: copy the initial tensor into the output, then run the loop nest
serially (updates to one element may collide, so neither threads nor lanes), combining each
yielded value into the element at its yielded indices when it is valid and in bounds."""

from __future__ import annotations

import llvmlite.ir as ir

from solir.ir.core import Op, Value
from solir.ir.types import DType
from solir.lower.llvm.element import ElementEmitter, storage_type
from solir.lower.llvm.kernels.generic import PTR, _GenericEmitter
from solir.lower.llvm.loops import I64, const64
from solir.targets import Target


def emit_scatter(llmod: ir.Module, op: Op, target: Target, name: str) -> ir.Function:
    return _ScatterEmitter(llmod, op, target, name).emit()


class _ScatterEmitter(_GenericEmitter):
    def __init__(self, llmod: ir.Module, op: Op, target: Target, name: str):
        super().__init__(llmod, op, target, name)
        self.vdim, self.width, self.par, self.acc_depth = None, 1, None, None

    def emit(self) -> ir.Function:
        b = self.b
        bufs = self.fn.args[0]
        self.ptrs = []
        for k in range(len(self.op.operands) + 1):
            slot = b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True)
            self.ptrs.append(b.load(slot, typ=PTR))
        nbytes = self.out.type.nbytes
        if nbytes:
            memcpy = self.llmod.globals.get("llvm.memcpy.p0.p0.i64") or ir.Function(
                self.llmod, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, ir.IntType(1)]),
                "llvm.memcpy.p0.p0.i64")
            b.call(memcpy, [self.ptrs[-1], self.ptrs[0], const64(nbytes), ir.Constant(ir.IntType(1), 0)])
        self.nest(0, 1)
        b.ret_void()
        return self.fn

    def point(self, lanes: int) -> None:
        b = self.b
        e = ElementEmitter(self.llmod, b, 1)
        env: dict[Value, ir.Value] = {}
        for k, arg in enumerate(self.body.args):
            if self.maps[k] is not None:
                env[arg] = self.load_input(e, k, 1, arg.name)
        for bop in self.body.ops[:-1]:
            env[bop.results[0]] = self.body_op(e, bop, env, 1)
        value, valid, *idx = (env[v] for v in self.body.ops[-1].operands)
        flat: ir.Value = const64(0)
        for i, size in zip(idx, self.out.type.shape):
            inside = b.and_(b.icmp_signed(">=", i, const64(0)), b.icmp_signed("<", i, const64(size)))
            valid = b.and_(valid, inside)
            flat = b.add(b.mul(flat, const64(size)), i)
        dt: DType = self.out.type.dtype
        st = storage_type(dt)
        with b.if_then(valid):
            addr = b.gep(self.ptrs[-1], [flat], source_etype=st, inbounds=True)
            if self.comb != "set":
                old = self.to_compute(b.load(addr, typ=st, align=dt.itemsize), dt, 1, "old")
                value = self.combine(e, dt, old, value)
            b.store(self.to_storage(value, dt, 1), addr, align=dt.itemsize)
