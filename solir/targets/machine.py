"""LLVM setup in one place: Target -> target machine -> O3 pass pipeline -> object code."""

from __future__ import annotations

from typing import Any, Iterable
import contextlib
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


def module_text(llmod: ir.Module) -> str:
    """The module's IR text (large constants are not in it: see emit.Weights), as llvmlite
    prints it, with the kernels' functions as emission printed them already."""
    lines = _head(llmod) + [_text(llmod, g) for g in llmod.global_values]
    return "\n".join(lines + llmod._get_metadata_lines())


def _head(llmod: ir.Module) -> list[str]:
    """A module text's first lines, as llvmlite prints them: its name, triple, data layout
    and identified types."""
    return (['; ModuleID = "%s"' % llmod.name, 'target triple = "%s"' % llmod.triple,
             'target datalayout = "%s"' % llmod.data_layout, '']
            + [t.get_declaration() for t in llmod.get_identified_types().values()])


def _text(llmod: ir.Module, g: Any) -> str:
    """A global's text: as emission printed it already (a kernel's functions), else now."""
    return llmod.__dict__.get("solir_texts", {}).get(g.name) or str(g)


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
    independent modules (split_parts), a few per worker so that the workers finish
    together, and `parts` workers (0: one per core, at most 4) take them as this process
    writes their IR text: the children start on the first parts while the rest are still
    being printed."""
    import os
    if not target.can_link_here or target.llvm_options:
        return [_codegen(llmod, target, "obj")]  # type: ignore[list-item]
    workers = parts or min(4, len(os.sched_getaffinity(0)))
    groups = split_parts(llmod, workers * PARTS_PER_WORKER) if workers > 1 else None
    if groups is None:
        return [_object(_optimized(_fix_attrs(module_text(llmod), target), target), target)]  # type: ignore[list-item]
    texts = (part_text(llmod, g, first=k == 0) for k, g in enumerate(groups))
    return _in_children(texts, target, "obj", workers=workers)


def compile_object(llmod: ir.Module, target: Target) -> bytes:
    return _codegen(llmod, target, "obj")  # type: ignore[return-value]


SPLIT_MIN_INSTRUCTIONS = 8000   # smaller modules compile as fast in one piece as in children
PARTS_PER_WORKER = 3            # parts differ in cost per instruction: more parts, even finish
_GLOBAL = re.compile(r'^(@"[^"]+") = internal (constant|global) (\[\d+ x i8\]|ptr)')


def split_parts(llmod: ir.Module, parts: int) -> list[set[str]] | None:
    """The module's defined functions in `parts` groups of about equal size (instructions),
    kept together by kernel (a kernel's chunk function with its own helpers, named after
    it; each shared `solir.` helper is a group of its own). None when there is too little
    to share or a global part_text cannot declare."""
    funcs = [f for f in llmod.functions if f.blocks]
    sizes = {f.name: sum(len(bb.instructions) for bb in f.blocks) for f in funcs}
    if parts < 2 or len(funcs) < 2 * parts or sum(sizes.values()) < SPLIT_MIN_INSTRUCTIONS:
        return None
    for g in llmod.global_values:
        if not isinstance(g, ir.Function) and not _GLOBAL.match(str(g)):
            return None
    clusters: dict[str, list[str]] = {}
    for f in funcs:
        key = ".".join(f.name.split(".")[:2]) if not f.name.startswith("solir.") else f.name
        clusters.setdefault(key, []).append(f.name)
    load = [0] * parts
    groups: list[set[str]] = [set() for _ in range(parts)]
    for members in sorted(clusters.values(), key=lambda ms: -sum(sizes[n] for n in ms)):
        p = load.index(min(load))
        groups[p].update(members)
        load[p] += sum(sizes[n] for n in members)
    return [g for g in groups if g]


def part_text(llmod: ir.Module, owned: set[str], first: bool) -> str:
    """The IR text of a module that defines the functions in `owned`
    and declares the rest. Internal functions become hidden (another part may call them);
    the first part defines the global constants (hidden) and the others declare them."""
    lines = _head(llmod)
    for g in llmod.global_values:
        if isinstance(g, ir.Function):
            if not g.blocks:
                lines.append(str(g))
            elif g.name in owned:
                lines.append(_define_hidden(_text(llmod, g)))
            else:
                proto: list[str] = []
                g.descr_prototype(proto)
                lines.append("declare " + _define_hidden(proto[0].strip())[len("define "):])
            continue
        text = str(g)
        m = _GLOBAL.match(text)
        assert m is not None              # split_parts allows no other globals
        if first:
            lines.append(text.replace(" = internal ", " = hidden ", 1))
        else:
            lines.append(f"{m.group(1)} = external hidden {m.group(2)} {m.group(3)}")
    lines += llmod._get_metadata_lines()
    return "\n".join(lines)


_DEFINE = re.compile(r'^define (internal )?(.*?)@"([^"]+)"(\(.*)$', re.S)


def _define_hidden(text: str) -> str:
    return _DEFINE.sub(lambda m: f'define {"hidden " if m.group(1) else ""}{m.group(2)}'
                                 f'@"{m.group(3)}"{m.group(4)}', text, count=1)


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
    return _in_children([module_text(llmod)], target, kind, vectorize=False)[0]


def _in_children(texts: Iterable[str], target: Target, kind: str, workers: int = 1,
                 vectorize: bool = True) -> list[Any]:
    """Each IR text compiled ("obj" | "asm") by one of `workers` child processes, which
    take the texts in turn as `texts` yields them (llvm_job's framed protocol): a backend
    that aborts takes only its child down, and children run in parallel. The results come
    in the order of `texts`."""
    import queue
    import subprocess
    import sys
    import tempfile
    import threading
    from concurrent.futures import ThreadPoolExecutor

    jobs: queue.Queue[tuple[int, str] | None] = queue.Queue()
    results: dict[int, Any] = {}
    spec = _spec(target)

    def work() -> None:
        # stderr to a file: a pipe nobody reads while the child works could fill and block it
        err = tempfile.TemporaryFile()
        child = subprocess.Popen([sys.executable, llvm_job.__file__], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=err)
        assert child.stdin is not None and child.stdout is not None
        try:
            while (job := jobs.get()) is not None:
                k, text = job
                watchdog = threading.Timer(CHILD_TIMEOUT_S, child.kill)   # a hung backend
                watchdog.start()
                try:
                    llvm_job.write_frame(child.stdin, (_fix_attrs(text, target), spec, kind,
                                                       vectorize))
                    reply = llvm_job.read_frame(child.stdout)
                finally:
                    watchdog.cancel()
                if reply is None:
                    _child_failed(child, err, target)
                results[k] = reply
        except (BrokenPipeError, OSError):
            _child_failed(child, err, target)
        finally:
            for _ in range(workers):      # a failed worker lets the others stop too
                jobs.put(None)
            _close(child)
            err.close()

    with ThreadPoolExecutor(workers) as pool:   # threads wait; the children work
        running = [pool.submit(work) for _ in range(workers)]
        n = 0
        for n, text in enumerate(texts, 1):       # printed here while the children compile
            jobs.put((n - 1, text))
            if any(r.done() for r in running):     # a child failed: stop feeding it
                break
        for _ in range(workers):
            jobs.put(None)
        for r in running:
            r.result()
        if len(results) != n:
            raise CompileError(f"LLVM's {target.arch} backend stopped before compiling every part "
                               f"of the module on target '{target.name}'")
        return [results[k] for k in range(n)]


CHILD_TIMEOUT_S = 600           # per part: a child still at it after this is killed


def _close(child: Any) -> None:
    with contextlib.suppress(OSError):     # its end of the pipe may be gone already
        child.stdin.close()
    child.wait()


def _child_failed(child: Any, stderr: Any, target: Target) -> None:
    _close(child)
    stderr.seek(0)
    err = stderr.read().decode(errors="replace").strip().splitlines()
    detail = "; ".join(line for line in err[-6:] if line.strip())[:1500]
    if child.returncode == 2 and detail.startswith("LLVM rejected"):
        raise CompileError(detail, fix="this is a solir bug; please report it with "
                                       "`solir show --stage llvm`")
    if not detail:
        detail = (f"killed after {CHILD_TIMEOUT_S} s" if child.returncode == -9
                  else f"exit status {child.returncode}")
    raise CompileError(f"LLVM's {target.arch} backend failed on target '{target.name}': "
                       f"{detail}",
                       fix="this is a solir or LLVM bug; other targets are unaffected")


def optimized_ir(llmod: ir.Module, target: Target) -> str:
    return str(optimize(llmod, target))
