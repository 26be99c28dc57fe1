"""LLVM setup in one place: Target -> target machine -> O3 pass pipeline -> object code."""

from __future__ import annotations

import functools
import re

import llvmlite.binding as llvm
import llvmlite.ir as ir

from solir.errors import CompileError
from solir.targets import Target


@functools.cache
def _init() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    llvm.initialize_native_asmparser()    # module asm (.incbin of large constants), host only


def _fix_attrs(text: str, target: Target) -> str:
    """Function attributes llvmlite cannot spell (string key/values, vscale_range)."""
    extra = " ".join(f'"{k}"="{v}"' if k != "vscale_range" else f"vscale_range({v})"
                     for k, v in target.fn_attrs)
    if not extra:
        return text
    return re.sub(r"^(define [^\n]*)\n\{", lambda m: f"{m.group(1)} {extra}\n{{", text, flags=re.M)


def module_text(llmod: ir.Module) -> str:
    """The module's IR text, with its module-level assembly (emit.module_asm: constants
    pulled in with .incbin) and the hidden visibility of the symbols that assembly defines."""
    text = str(llmod)
    asm = getattr(llmod, "solir_asm", [])
    if not asm:
        return text
    lines = []
    for chunk in asm:
        for line in chunk.split("\n"):
            lines.append('module asm "' + line.replace("\\", "\\5C").replace('"', "\\22") + '"')
    text = re.sub(r'^(@"?solir_blob_\d+"?) = external global', r"\1 = external hidden global", text,
                  flags=re.M)
    return text + "\n" + "\n".join(lines) + "\n"


def target_machine(target: Target) -> llvm.TargetMachine:
    _init()
    t = llvm.Target.from_triple(target.triple)
    return t.create_target_machine(cpu=target.cpu, features=target.features, opt=3,
                                   reloc="pic", codemodel="default")


def optimize(llmod: ir.Module, target: Target) -> llvm.ModuleRef:
    """Parse, verify and run LLVM's O3 pipeline for the target."""
    _init()
    tm = target_machine(target)
    text = _fix_attrs(module_text(llmod), target)
    try:
        mod = llvm.parse_assembly(text)
        mod.verify()
    except RuntimeError as e:
        raise CompileError(f"LLVM rejected the generated module: {str(e).strip()[:2000]}",
                           fix="this is a solir bug; please report it with `solir show --stage llvm`") from None
    mod.triple = target.triple
    mod.data_layout = str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return mod


def compile_object(llmod: ir.Module, target: Target) -> bytes:
    return _codegen(llmod, target, "obj")  # type: ignore[return-value]


def assembly(llmod: ir.Module, target: Target) -> str:
    return _codegen(llmod, target, "asm")  # type: ignore[return-value]


def _codegen(llmod: ir.Module, target: Target, kind: str) -> bytes | str:
    """Object code or assembly. Backends for other architectures can abort the process on
    IR they do not support (LLVM's UNREACHABLE), so cross targets run in a child process."""
    if not target.can_link_here or target.llvm_options:
        return _codegen_isolated(llmod, target, kind)
    mod = optimize(llmod, target)
    tm = target_machine(target)
    try:
        return tm.emit_object(mod) if kind == "obj" else tm.emit_assembly(mod)
    except RuntimeError as e:
        raise CompileError(f"LLVM could not generate code for target '{target.name}': {e}") from None


def _codegen_isolated(llmod: ir.Module, target: Target, kind: str) -> bytes | str:
    import pickle
    import subprocess
    import sys

    payload = pickle.dumps((module_text(llmod), target, kind))
    proc = subprocess.run([sys.executable, "-m", "solir.targets.machine"], input=payload,
                          capture_output=True, timeout=600)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = "; ".join(line for line in err[-6:] if line.strip())[:1500]
        raise CompileError(f"LLVM's {target.arch} backend failed on target '{target.name}': {detail}",
                           fix="this is a solir or LLVM bug; other targets are unaffected")
    out = pickle.loads(proc.stdout)
    return out


def _child_main() -> None:
    import pickle
    import sys

    text, target, kind = pickle.loads(sys.stdin.buffer.read())
    _init()
    for option in target.llvm_options:   # process-wide, hence only in this child process
        llvm.set_option("", option)
    mod = llvm.parse_assembly(_fix_attrs(text, target))
    mod.verify()
    tm = target_machine(target)
    mod.triple = target.triple
    mod.data_layout = str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    out = tm.emit_object(mod) if kind == "obj" else tm.emit_assembly(mod)
    sys.stdout.buffer.write(pickle.dumps(out))


if __name__ == "__main__":
    _child_main()


def optimized_ir(llmod: ir.Module, target: Target) -> str:
    return str(optimize(llmod, target))
