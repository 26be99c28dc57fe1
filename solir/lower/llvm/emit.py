"""Kernel-level module -> llvmlite module. Each function becomes

    int32_t <name>(void *const *inputs, void *const *outputs, void *workspace)

which runs its kernels in order; a kernel whose schedule names a parallel loop is handed to
`solir_parallel_for` (the runtime's thread pool, linked into every artifact)."""

from __future__ import annotations

import re
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
from solir.lower.llvm.loops import Builder, I64, const64
from solir.targets import Target

I32 = ir.IntType(32)
ENTRY_TYPE = ir.FunctionType(I32, [PTR, PTR, PTR])
PARALLEL_FOR = "solir_parallel_for"


def emit(module: Module, target: Target, weights: bool = False) -> ir.Module:
    """The LLVM module; with `weights`, large constants are set aside for a file beside the
    library (Weights, module_weights) instead of being compiled into it."""
    llmod = ir.Module(name="solir")
    llmod.triple = target.triple
    llmod.vector_ldexp = target.vector_ldexp      # read by ElementEmitter (vmath's exp)
    table = Weights() if weights else None
    llmod.solir_weights = table
    for f in module.funcs:
        _emit_func(llmod, f, target, table)
    if table is not None:
        for call in table.calls:
            call.operands[3] = const64(table.size)
    return llmod


def _emit_func(llmod: ir.Module, f: Func, target: Target, weights: Weights | None) -> None:
    if "workspace" not in f.attrs:
        raise PassError(f"@{f.name} has no memory plan", fix="run the 'plan-memory' pass first")
    fn = ir.Function(llmod, ENTRY_TYPE, f.name)
    inputs, outputs, workspace = fn.args
    inputs.name, outputs.name, workspace.name = "inputs", "outputs", "workspace"
    b = Builder(fn.append_basic_block("entry"))
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
    base = None
    if weights is not None and any(op.name == "tensor.constant" and
                                   op.attrs["value"].nbytes >= WEIGHTS_MIN_BYTES for op in ops):
        base = _weights_base(llmod, fn, b, weights)
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
            chunk = _shared(llmod, kname, emit_row_group(llmod, members, target, kname))
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
            value = op.attrs["value"]
            if base is not None and value.nbytes >= WEIGHTS_MIN_BYTES:
                ptrs[op.result] = b.gep(base, [const64(weights.add(value))],  # type: ignore[union-attr]
                                        source_etype=ir.IntType(8), inbounds=True,
                                        name=f"w{i}")
            else:
                ptrs[op.result] = _constant_global(llmod, f"{f.name}.const{i}", value)
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
        chunk = _shared(llmod, kname, emitter(llmod, op, target, kname))
        bufs = b.alloca(PTR, size=I32(len(op.operands) + 1), name=f"args{i}")
        for k, v in enumerate(list(op.operands) + [op.result]):
            b.store(ptrs[v], b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True))
        units = const64(UNITS[op.name](op))
        if op.attrs.get("parallel") is not None:
            b.call(pool, [chunk, bufs, units])
        else:
            b.call(chunk, [bufs, const64(0), units])
    b.ret(ir.Constant(I32, 0))


def _shared(llmod: ir.Module, kname: str, chunk: ir.Function) -> ir.Function:
    """The kernel just emitted as `kname` (its chunk function and the helpers named after
    it), or an identical one emitted before, whose functions serve both: a ResNet's
    repeated blocks have the same shapes, so many of its kernels came two to four times,
    each copy printed, parsed, optimized and compiled again. Identical is the IR text with
    the kernel's name and the local value names taken out; references to constants or
    weights keep their own names, so kernels that differ only in a constant stay apart."""
    mine = [g for name, g in llmod.globals.items()
            if isinstance(g, ir.Function) and g.blocks and (name == kname or name.startswith(kname + "."))]
    texts: dict[str, str] = llmod.__dict__.setdefault("solir_texts", {})
    for g in mine:                      # printed once: module_text and part_text reuse these
        texts[g.name] = str(g)
    text = _LOCAL.sub(_Numbering(), "\n".join(texts[g.name] for g in mine)
                      .replace(f'"{kname}', '"@KERNEL'))
    seen: dict[str, ir.Function] = llmod.__dict__.setdefault("solir_kernels", {})
    first = seen.setdefault(text, chunk)
    if first is chunk:
        return chunk
    for g in mine:
        del llmod.globals[g.name], texts[g.name]
    return first


_LOCAL = re.compile(r'%"[^"]*"|%[-a-zA-Z$._0-9]+')      # an LLVM local name


class _Numbering:
    """Local names (value hints, which differ between identical kernels) numbered by first
    use: two texts that differ only in them compare equal."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, m: re.Match[str]) -> str:
        return self.seen.setdefault(m.group(0), f"%v{len(self.seen)}")


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


WEIGHTS_MIN_BYTES = 4096      # smaller constants stay in the library's read-only data
WEIGHTS_ALIGN = 64
WEIGHTS_SLOT = "solir.weights"
WEIGHTS_FN = "solir_weights"


class Weights:
    """A module's large constants (a model's weights), laid out one after another in a file
    beside its library (`model.weights`). The entry function asks the runtime for the file's
    address (solir_weights: mapped on first use) and finds each constant at its offset, so
    weights never pass through LLVM, the assembler or the linker."""

    def __init__(self) -> None:
        self.arrays: list[tuple[int, np.ndarray]] = []
        self.size = 0
        self.calls: list[ir.CallInstr] = []     # told the final size when emission ends

    def add(self, value: np.ndarray) -> int:
        offset = -(-self.size // WEIGHTS_ALIGN) * WEIGHTS_ALIGN
        value = np.ascontiguousarray(value)
        self.arrays.append((offset, value))
        self.size = offset + value.nbytes
        return offset

    def write(self, path: Path) -> str:
        """Write the file; its sha256, computed on the way."""
        import hashlib
        digest = hashlib.sha256()
        at = 0
        with open(path, "wb") as f:
            for offset, value in self.arrays:
                for chunk in (bytes(offset - at), memoryview(value.reshape(-1).view(np.uint8))):
                    f.write(chunk)
                    digest.update(chunk)
                at = offset + value.nbytes
        return digest.hexdigest()


def module_weights(llmod: ir.Module) -> Weights | None:
    """The weights emit() set aside for `llmod`'s file, None if it has none."""
    w = getattr(llmod, "solir_weights", None)
    return w if w is not None and w.size else None


def _weights_base(llmod: ir.Module, fn: ir.Function, b: ir.IRBuilder,
                  weights: Weights) -> ir.Value:
    """At the top of entry function `fn`: the weights' address, returning 1 if the runtime
    cannot map them."""
    slot = llmod.globals.get(WEIGHTS_SLOT)
    if slot is None:
        slot = ir.GlobalVariable(llmod, PTR, name=WEIGHTS_SLOT)
        slot.initializer = ir.Constant(PTR, None)
        slot.linkage = "internal"
        ir.Function(llmod, ir.FunctionType(PTR, [PTR, PTR, I64]), WEIGHTS_FN)
    call = b.call(llmod.globals[WEIGHTS_FN], [slot, fn, const64(0)], name="weights")
    weights.calls.append(call)
    missing = fn.append_basic_block("no_weights")
    body = fn.append_basic_block("body")
    b.cbranch(b.icmp_unsigned("==", call, ir.Constant(PTR, None)), missing, body)
    b.position_at_end(missing)
    b.ret(ir.Constant(I32, 1))
    b.position_at_end(body)
    return call


def _constant_global(llmod: ir.Module, name: str, value: np.ndarray) -> ir.GlobalVariable:
    """A constant in the object's read-only data."""
    data = np.ascontiguousarray(value).tobytes()
    ty = ir.ArrayType(ir.IntType(8), len(data))
    g = ir.GlobalVariable(llmod, ty, name=name)
    g.initializer = ir.Constant(ty, bytearray(data))
    g.global_constant = True
    g.linkage = "internal"
    g.align = 64
    return g


def _clean(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)[:40]

