"""LLVM's optimizer and code generator on IR text, with nothing of solir but this file.

solir.targets.machine calls these in its own process, and runs this file as a script in
child processes to compile parts of a large module at once (llvmlite serializes LLVM
within a process). A child imports llvmlite and nothing else: a tenth of a second, where
importing solir (and numpy with it) took four times that, per child, on every cold compile.

A child takes jobs until its stdin closes: each is a frame (8-byte little-endian length, then
a pickle) of (IR text, spec, "obj" | "asm", vectorize), and the child answers each with a
frame of the object bytes or assembly text. `spec` is a plain dict (triple, cpu, features,
llvm_options), so that unpickling needs no solir class. On IR LLVM rejects, the child says
why on stderr and exits with status 2."""

from __future__ import annotations

import functools
import pickle
import sys
from typing import Any, BinaryIO

import llvmlite.binding as llvm


@functools.cache
def init() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_asmparser()    # inline asm in IR text, host only


def target_machine(spec: dict[str, Any]) -> llvm.TargetMachine:
    init()
    t = llvm.Target.from_triple(spec["triple"])
    return t.create_target_machine(cpu=spec["cpu"], features=spec["features"], opt=3,
                                   reloc="pic", codemodel="default")


class LLVMRejected(Exception):
    """The IR text did not parse or verify (a solir bug: the caller says so)."""


def optimize(text: str, spec: dict[str, Any], vectorize: bool = True) -> llvm.ModuleRef:
    """Parse, verify and run LLVM's O3 pipeline for the target."""
    tm = target_machine(spec)
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise LLVMRejected(str(e).strip()) from None
    mod.triple = spec["triple"]
    mod.data_layout = str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = vectorize
    pto.slp_vectorization = vectorize
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def emit(mod: llvm.ModuleRef, spec: dict[str, Any], asm: bool = False) -> bytes | str:
    tm = target_machine(spec)
    return tm.emit_assembly(mod) if asm else tm.emit_object(mod)


def write_frame(out: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(len(data).to_bytes(8, "little"))
    out.write(data)
    out.flush()


def read_frame(inp: BinaryIO) -> Any:
    """The next frame's object, or None at the end of the stream (or a cut-off frame)."""
    head = inp.read(8)
    if len(head) < 8:
        return None
    size = int.from_bytes(head, "little")
    data = inp.read(size)
    return pickle.loads(data) if len(data) == size else None


def main() -> None:
    init()
    options_set = False
    while (job := read_frame(sys.stdin.buffer)) is not None:
        text, spec, kind, vectorize = job
        if not options_set:
            for option in spec.get("llvm_options", ()):   # process-wide, hence only in a child
                llvm.set_option("", option)
            options_set = True
        try:
            mod = optimize(text, spec, vectorize)
        except LLVMRejected as e:
            sys.stderr.write(f"LLVM rejected the generated module: {e}\n")
            sys.exit(2)
        write_frame(sys.stdout.buffer, emit(mod, spec, asm=kind != "obj"))


if __name__ == "__main__":
    main()
