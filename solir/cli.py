"""The `solir` command: show, compile and run.

    solir show FILE.sir [--stage S]            IR at any stage, highlighted
    solir compile FILE.sir --target T -o DIR   write DIR/model.so, model.h, manifest.json
    solir run DIR --input name=x.npy           run an artifact
    solir demo                                 compile and run a small MLP, checked against jax
    solir targets | solir ops                  what solir knows
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from solir.errors import SolirError


def _console() -> Any:
    from rich.console import Console
    return Console(highlight=False)


def _load_source(path: str) -> Any:
    from solir.ir.parser import parse_module
    from solir.ir.verifier import verify_module
    p = Path(path)
    if not p.exists():
        raise SolirError(f"no such file: {path}")
    if p.suffix == ".sir":
        m = parse_module(p.read_text(), str(p))
        verify_module(m)
        return m
    if p.suffix == ".onnx":
        raise SolirError("ONNX input is not supported yet", fix="use a .sir module for now")
    raise SolirError(f"do not know how to read {p.suffix or 'this'} files",
                     fix="give a .sir text module")


def print_ir(text: str, console: Any) -> None:
    """Terminal colour is a layer over the printer's text, never a different printer."""
    from rich.syntax import Syntax
    if console.is_terminal:
        console.print(Syntax(text, "llvm", theme="monokai", background_color="default",
                             word_wrap=False))
    else:
        sys.stdout.write(text)


def cmd_show(args: argparse.Namespace) -> int:
    from solir.driver import Compilation
    from solir.targets import get_target
    comp = Compilation(_load_source(args.file), get_target(args.target))
    print_ir(comp.as_text(args.stage), _console())
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from solir.driver import Compilation
    from solir.targets import get_target
    console = _console()
    t0 = time.perf_counter()
    comp = Compilation(_load_source(args.file), get_target(args.target))
    out = Path(args.output)

    def progress(stage: str) -> None:
        if not args.quiet and not args.json:
            console.print(f"[dim]{time.perf_counter() - t0:6.2f}s[/dim] {stage}")

    m = comp.write_artifact(out, progress=progress)
    if args.json:
        print(json.dumps({"directory": str(out), "library": m.library, "target": m.target,
                          "workspace_bytes": m.workspace_bytes,
                          "seconds": round(time.perf_counter() - t0, 3)}))
    elif not args.quiet:
        console.print(f"wrote {out}/{m.library}, model.h, manifest.json "
                      f"(target {m.target}, workspace {m.workspace_bytes} bytes)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    from solir.runtime.load import load
    mod = load(args.artifact)
    given: dict[str, Any] = {}
    for item in args.input or []:
        name, _, path = item.partition("=")
        if not path:
            raise SolirError(f"--input {item!r} should be name=file.npy")
        given[name] = np.load(path)
    names = [t.name for t in mod.manifest.inputs]
    missing = [n for n in names if n not in given]
    if missing:
        raise SolirError(f"missing inputs: {', '.join(missing)}",
                         fix="pass each as --input " + " ".join(f"{n}=FILE.npy" for n in missing))
    outs = mod(*[given[n] for n in names])
    out_names = [t.name for t in mod.manifest.outputs]
    if args.output:
        np.savez(args.output, **dict(zip(out_names, outs)))
    for n, o in zip(out_names, outs):
        print(f"{n}: {o.dtype}{list(o.shape)}\n{o}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from solir.demo import main as demo_main
    return demo_main()


def cmd_targets(args: argparse.Namespace) -> int:
    from solir.targets import TARGETS, host_target
    host = host_target()
    print(f"{'host':8} {host.triple:28} {host.vector_bits:4}-bit  {host.description}")
    for t in TARGETS.values():
        runs = "" if not t.missing_features() else "  (cross-compile only here)"
        print(f"{t.name:8} {t.triple:28} {t.vector_bits:4}-bit  {t.description}{runs}")
    return 0


def cmd_ops(args: argparse.Namespace) -> int:
    from solir.ir.registry import all_ops
    for name, od in sorted(all_ops().items()):
        print(f"{name:32} {od.kind:12} {od.doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from solir.driver import STAGES
    p = argparse.ArgumentParser(prog="solir", description="solir: a tensor compiler for CPUs "
                                "and vector processors")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("show", help="print IR at a stage of the pipeline")
    s.add_argument("file")
    s.add_argument("--stage", default="tensor", choices=STAGES)
    s.add_argument("--target", default="host")
    s.set_defaults(fn=cmd_show)
    c = sub.add_parser("compile", help="compile to DIR/model.so + model.h + manifest.json")
    c.add_argument("file")
    c.add_argument("--target", default="host")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--quiet", action="store_true")
    c.add_argument("--json", action="store_true", help="one JSON line for scripts")
    c.set_defaults(fn=cmd_compile)
    r = sub.add_parser("run", help="run a compiled artifact on .npy inputs")
    r.add_argument("artifact")
    r.add_argument("--input", action="append", metavar="NAME=FILE.npy")
    r.add_argument("--output", metavar="OUT.npz")
    r.set_defaults(fn=cmd_run)
    sub.add_parser("demo", help="compile and run a small MLP, checked against jax.jit").set_defaults(fn=cmd_demo)
    sub.add_parser("targets", help="list targets").set_defaults(fn=cmd_targets)
    sub.add_parser("ops", help="list registered ops").set_defaults(fn=cmd_ops)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except SolirError as e:
        sys.stderr.write(f"solir: {type(e).__name__}: {e}\n")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
