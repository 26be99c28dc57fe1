"""Kernel-level module -> llvmlite module. Each function becomes

    int32_t <name>(void *const *inputs, void *const *outputs, void *workspace)

which runs its kernels in order; a kernel whose schedule names a parallel loop is handed to
`solir_parallel_for` (the runtime's thread pool, linked into every artifact)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llvmlite.ir as ir
import numpy as np

from solir.errors import PassError, UnsupportedOpError
from solir.ir.core import Func, Module, Value
from solir.lower.llvm.kernels import EMITTERS, UNITS
from solir.lower.llvm.kernels.generic import PTR
from solir.lower.llvm.kernels.rows import (emit_row_group, external_values, group_members,
                                           group_rows_count, loop_members)
from solir.lower.llvm.loops import I64, const64
from solir.targets import Target

I32 = ir.IntType(32)
ENTRY_TYPE = ir.FunctionType(I32, [PTR, PTR, PTR])
PARALLEL_FOR = "solir_parallel_for"


def emit(module: Module, target: Target, blob_dir: Path | None = None) -> ir.Module:
    """The LLVM module; with `blob_dir`, large constants go there as files (see
    _constant_global), which must exist until the object is emitted."""
    llmod = ir.Module(name="solir")
    llmod.triple = target.triple
    llmod.vector_ldexp = target.vector_ldexp      # read by ElementEmitter (vmath's exp)
    for f in module.funcs:
        _emit_func(llmod, f, target, blob_dir)
    return llmod


def _emit_func(llmod: ir.Module, f: Func, target: Target, blob_dir: Path | None) -> None:
    if "workspace" not in f.attrs:
        raise PassError(f"@{f.name} has no memory plan", fix="run the 'plan-memory' pass first")
    fn = ir.Function(llmod, ENTRY_TYPE, f.name)
    inputs, outputs, workspace = fn.args
    inputs.name, outputs.name, workspace.name = "inputs", "outputs", "workspace"
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    ptrs: dict[Value, ir.Value] = {}
    for k, a in enumerate(f.args):
        slot = b.gep(inputs, [const64(k)], source_etype=PTR, inbounds=True)
        ptrs[a] = b.load(slot, typ=PTR, name=a.name or f"in{k}")
    out_ptrs = []
    for k in range(len(f.results)):
        slot = b.gep(outputs, [const64(k)], source_etype=PTR, inbounds=True)
        out_ptrs.append(b.load(slot, typ=PTR, name=f"out{k}"))
    pool = _declare_parallel_for(llmod)
    ops = f.body.ops
    i = -1
    while i + 1 < len(ops):
        i += 1
        op = ops[i]
        if op.name == "return":
            break
        if "row_group" in op.attrs:
            members = group_members(ops, i)
            i += len(members) - 1
            for m in members:
                if m.name == "kernel.view":
                    if m.operands[0] in ptrs:         # (a view of a row buffer has no address here)
                        ptrs[m.result] = ptrs[m.operands[0]]
                elif not m.attrs.get("row_local"):
                    ptrs[m.result] = _placement(b, m, out_ptrs, workspace, i)
            kname = f"{f.name}.k{i}.rows_{_clean('+'.join(m.attrs.get('kernel') or '' for m in loop_members(members)))}"
            chunk = emit_row_group(llmod, members, target, kname)
            ext = external_values(members)
            bufs = b.alloca(PTR, size=I32(len(ext)), name=f"args{i}")
            for k, v in enumerate(ext):
                b.store(ptrs[v], b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True))
            rows = const64(group_rows_count(members))
            if op.attrs.get("row_parallel"):
                b.call(pool, [chunk, bufs, rows])
            else:
                b.call(chunk, [bufs, const64(0), rows])
            continue
        if op.name == "tensor.constant":
            ptrs[op.result] = _constant_global(llmod, f"{f.name}.const{i}", op.attrs["value"], blob_dir)
            continue
        if op.name == "kernel.view":
            ptrs[op.result] = ptrs[op.operands[0]]
            continue
        emitter = EMITTERS.get(op.name)
        if emitter is None:
            raise UnsupportedOpError(f"no emitter for '{op.name}' on target '{target.name}'",
                                     loc=op.loc, fix="lower it to kernel.generic first")
        ptrs[op.result] = _placement(b, op, out_ptrs, workspace, i)
        kname = f"{f.name}.k{i}.{_clean(op.attrs.get('kernel') or 'kernel')}"
        chunk = emitter(llmod, op, target, kname)
        bufs = b.alloca(PTR, size=I32(len(op.operands) + 1), name=f"args{i}")
        for k, v in enumerate(list(op.operands) + [op.result]):
            b.store(ptrs[v], b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True))
        units = const64(UNITS[op.name](op))
        if op.attrs.get("parallel") is not None:
            b.call(pool, [chunk, bufs, units])
        else:
            b.call(chunk, [bufs, const64(0), units])
    b.ret(ir.Constant(I32, 0))


def _placement(b: ir.IRBuilder, op: Any, out_ptrs: list[ir.Value], workspace: ir.Value,
               i: int) -> ir.Value:
    """Where a kernel's result lives: a function output or an offset in the workspace."""
    placement = op.attrs["buffers"][0]
    if placement.startswith("out"):
        return out_ptrs[int(placement[3:])]
    off = int(placement.split("+")[1])
    return b.gep(workspace, [const64(off)], source_etype=ir.IntType(8), inbounds=True,
                 name=op.result.name or f"t{i}")


def _declare_parallel_for(llmod: ir.Module) -> ir.Function:
    fn = llmod.globals.get(PARALLEL_FOR)
    if fn is None:
        fn = ir.Function(llmod, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64]), PARALLEL_FOR)
    return fn


BLOB_MIN_BYTES = 4096
BLOB_PREFIX = "solir_blob_"


def _constant_global(llmod: ir.Module, name: str, value: np.ndarray,
                     blob_dir: Path | None = None) -> ir.GlobalVariable:
    """A constant in the object's read-only data. Large ones (weights) are written to a file
    in `blob_dir` and pulled in by the assembler (`.incbin`, as module asm), so megabytes of
    weights never pass through LLVM IR text."""
    data = np.ascontiguousarray(value).tobytes()
    ty = ir.ArrayType(ir.IntType(8), len(data))
    if blob_dir is not None and len(data) >= BLOB_MIN_BYTES:
        asm = module_asm(llmod)
        sym = f"{BLOB_PREFIX}{len(asm)}"
        path = blob_dir / f"{sym}.bin"
        path.write_bytes(data)
        asm.append(f'.pushsection .rodata.{sym},"a"\n.balign 64\n.globl {sym}\n.hidden {sym}\n'
                   f'{sym}:\n.incbin "{path}"\n.popsection')
        g = ir.GlobalVariable(llmod, ty, name=sym)     # declared here, defined by the asm
        g.align = 64
        return g
    g = ir.GlobalVariable(llmod, ty, name=name)
    g.initializer = ir.Constant(ty, bytearray(data))
    g.global_constant = True
    g.linkage = "internal"
    g.align = 64
    return g


def module_asm(llmod: ir.Module) -> list[str]:
    """Module-level assembly for `llmod` (llvmlite has no API for it; machine.module_text
    prints it)."""
    if not hasattr(llmod, "solir_asm"):
        llmod.solir_asm = []  # type: ignore[attr-defined]
    return llmod.solir_asm  # type: ignore[attr-defined,no-any-return]


def _clean(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)[:40]

