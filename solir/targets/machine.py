"""LLVM setup in one place: Target -> target machine -> O3 pass pipeline -> object code."""

from __future__ import annotations

from typing import Any
import re

import llvmlite.binding as llvm
import llvmlite.ir as ir

from solir.errors import CompileError
from solir.targets import Target, llvm_job


def _fix_attrs(text: str, target: Target) -> str:
    """Function attributes llvmlite cannot spell (string key/values, vscale_range)."""
    extra = " ".join(f'"{k}"="{v}"' if k != "vscale_range" else f"vscale_range({v})"
                     for k, v in target.fn_attrs)
    if not extra:
        return text
    return re.sub(r"^(define [^\n]*)\n\{", lambda m: f"{m.group(1)} {extra}\n{{", text, flags=re.M)


def module_text(llmod: ir.Module, with_asm: bool = True) -> str:
    """The module's IR text, with its module-level assembly (emit.module_asm: constants
    pulled in with .incbin) and the hidden visibility of the symbols that assembly defines."""
    text = str(llmod)
    asm = getattr(llmod, "solir_asm", [])
    if not asm:
        return text
    text = re.sub(r'^(@"?solir_blob_\d+"?) = external global', r"\1 = external hidden global", text,
                  flags=re.M)
    return text + "\n" + _asm_lines(asm) if with_asm else text


def _asm_lines(asm: list[str]) -> str:
    lines = []
    for chunk in asm:
        for line in chunk.split("\n"):
            lines.append('module asm "' + line.replace("\\", "\\5C").replace('"', "\\22") + '"')
    return "\n".join(lines) + "\n"


def _spec(target: Target) -> dict[str, Any]:
    """What LLVM needs of a target, as plain data (llvm_job's children unpickle it)."""
    return {"triple": target.triple, "cpu": target.cpu, "features": target.features,
            "llvm_options": tuple(target.llvm_options)}


def target_machine(target: Target) -> llvm.TargetMachine:
    return llvm_job.target_machine(_spec(target))


def optimize(llmod: ir.Module, target: Target) -> llvm.ModuleRef:
    """Parse, verify and run LLVM's O3 pipeline for the target."""
    return _optimized(_fix_attrs(module_text(llmod), target), target)


def _optimized(text: str, target: Target, vectorize: bool = True) -> llvm.ModuleRef:
    try:
        return llvm_job.optimize(text, _spec(target), vectorize)
    except llvm_job.LLVMRejected as e:
        raise CompileError(f"LLVM rejected the generated module: {str(e)[:2000]}",
                           fix="this is a solir bug; please report it with `solir show --stage llvm`") from None


def compile_objects(llmod: ir.Module, target: Target, parts: int = 0) -> list[bytes]:
    """Object code for a target this machine links, as several objects compiled at once in
    child processes (llvmlite serializes LLVM calls within a process): LLVM's optimizer and
    code generator are most of a large model's compile time. The module is cut into
    independent modules (split_module), `parts` of them (0: one per core, at most 4), and
    the weights' .incbin is assembled beside them by the system assembler (`cc -c`), which
    writes tens of MB of data straight to disk; the linker joins them again."""
    import os
    if not target.can_link_here or target.llvm_options:
        return [_codegen(llmod, target, "obj")]  # type: ignore[list-item]
    n = parts or min(4, len(os.sched_getaffinity(0)))
    text = module_text(llmod, with_asm=False)
    asm = getattr(llmod, "solir_asm", [])
    texts = split_module(text, n)
    if len(texts) == 1:
        whole = text + "\n" + _asm_lines(asm) if asm else text
        return [_object(_optimized(_fix_attrs(whole, target), target), target)]  # type: ignore[list-item]
    return _in_children([(t, target, "obj") for t in texts], asm=asm)


def compile_object(llmod: ir.Module, target: Target) -> bytes:
    return _codegen(llmod, target, "obj")  # type: ignore[return-value]


_DEFINE = re.compile(r'^define (internal )?(.*?)@"([^"]+)"(\(.*)$', re.S)


SPLIT_MIN_LINES = 10000      # smaller modules compile as fast in one piece as in children
_GLOBAL = re.compile(r'^(@"[^"]+") = internal (constant|global) (\[\d+ x i8\])')


def split_module(text: str, parts: int) -> list[str]:
    """The IR text of a module (without module asm) as `parts` modules of about equal size.
    Functions are kept together by kernel (a kernel's chunk function with its own helpers,
    named after it); internal functions become hidden, each part declares those it calls
    from the others; the first part defines the global constants (hidden) and the others
    declare them. [text] when there is too little to share."""
    lines = text.split("\n")
    head: list[str] = []
    globals_: list[str] = []
    funcs: list[tuple[str, str, list[str]]] = []      # (name, header, body lines)
    tail: list[str] = []                               # declares
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("define "):
            j = lines.index("}", i)
            m = _DEFINE.match(line)
            if m is None:
                return [text]
            funcs.append((m.group(3), line, lines[i:j + 1]))
            i = j + 1
            continue
        if line.startswith("module asm"):
            return [text]                      # module asm goes to the assembler, not here
        if line.startswith("@"):
            globals_.append(line)
        elif line.startswith("declare "):
            tail.append(line)
        else:
            head.append(line)
        i += 1
    if parts < 2 or len(funcs) < 2 * parts or len(lines) < SPLIT_MIN_LINES:
        return [text]
    clusters: dict[str, list[int]] = {}
    for k, (name, _, _) in enumerate(funcs):
        key = ".".join(name.split(".")[:2]) if not name.startswith("solir.") else name
        clusters.setdefault(key, []).append(k)
    load = [0] * parts
    owner = [0] * len(funcs)
    for members in sorted(clusters.values(), key=lambda ms: -sum(len(funcs[k][2]) for k in ms)):
        p = load.index(min(load))
        for k in members:
            owner[k] = p
            load[p] += len(funcs[k][2])
    declared = []
    for g in globals_:
        if " external " in g:
            declared.append(g)
            continue
        m = _GLOBAL.match(g)                   # @"x" = internal constant [n x i8] c"..."
        if m is None:
            return [text]
        declared.append(f"{m.group(1)} = external hidden {m.group(2)} {m.group(3)}")
    defined = [g.replace(" = internal ", " = hidden ", 1) for g in globals_]
    out = []
    for p in range(parts):
        body = head + (defined if p == 0 else declared)
        for k, (name, header, flines) in enumerate(funcs):
            hidden = _DEFINE.sub(lambda m: f'define {"hidden " if m.group(1) else ""}{m.group(2)}'
                                           f'@"{m.group(3)}"{m.group(4)}', header, count=1)
            if owner[k] == p:
                body += [hidden] + flines[1:]
            else:
                body.append("declare " + hidden[len("define "):])
        out.append("\n".join(body + tail))
    return out


def _assemble(asm: list[str]) -> bytes:
    """An object of the module asm (the weights' .incbin), by the system assembler."""
    import subprocess
    import tempfile
    from pathlib import Path
    from solir.runtime.build import cc
    with tempfile.TemporaryDirectory(prefix="solir-data-") as tmp:
        src, obj = Path(tmp) / "data.s", Path(tmp) / "data.o"
        src.write_text("\n".join(asm) + "\n")
        proc = subprocess.run([cc(), "-c", str(src), "-o", str(obj)], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise CompileError(f"assembling the model's constants failed: {proc.stderr.strip()[:1500]}")
        return obj.read_bytes()


def assembly(llmod: ir.Module, target: Target) -> str:
    return _codegen(llmod, target, "asm")  # type: ignore[return-value]


def _codegen(llmod: ir.Module, target: Target, kind: str) -> bytes | str:
    """Object code or assembly. Backends for other architectures can abort the process on
    IR they do not support (LLVM's UNREACHABLE), so cross targets run in a child process."""
    if not target.can_link_here or target.llvm_options:
        return _codegen_isolated(llmod, target, kind)
    mod = optimize(llmod, target)
    return _object(mod, target) if kind == "obj" else _object(mod, target, asm=True)


def _object(mod: llvm.ModuleRef, target: Target, asm: bool = False) -> bytes | str:
    try:
        return llvm_job.emit(mod, _spec(target), asm)
    except RuntimeError as e:
        raise CompileError(f"LLVM could not generate code for target '{target.name}': {e}") from None


def _codegen_isolated(llmod: ir.Module, target: Target, kind: str) -> bytes | str:
    return _in_children([(module_text(llmod), target, kind)], vectorize=False)[0]


def _in_children(jobs: list[tuple[str, Target, str]], vectorize: bool = True,
                 asm: list[str] | None = None) -> list[Any]:
    """Each (IR text, target, "obj" | "asm") compiled by a child process of its own, all at
    once: a backend that aborts takes only its child down, and children run in parallel.
    With `asm` (module asm chunks), one more object, by the system assembler, comes last."""
    import pickle
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    def run(job: tuple[str, Target, str]) -> Any:
        text, target, kind = job
        proc = subprocess.run([sys.executable, llvm_job.__file__],
                              input=pickle.dumps((_fix_attrs(text, target), _spec(target), kind,
                                                  vectorize)), capture_output=True, timeout=600)
        if proc.returncode != 0:
            target = job[1]
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            detail = "; ".join(line for line in err[-6:] if line.strip())[:1500]
            raise CompileError(f"LLVM's {target.arch} backend failed on target '{target.name}': "
                               f"{detail}", fix="this is a solir or LLVM bug; other targets are "
                               "unaffected")
        return pickle.loads(proc.stdout)
    if len(jobs) == 1 and not asm:
        return [run(jobs[0])]
    with ThreadPoolExecutor(len(jobs) + 1) as pool:  # threads wait; the children work
        data = pool.submit(_assemble, asm) if asm else None
        return list(pool.map(run, jobs)) + ([data.result()] if data is not None else [])


def optimized_ir(llmod: ir.Module, target: Target) -> str:
    return str(optimize(llmod, target))
