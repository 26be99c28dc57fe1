"""The `solir` command: show, compile and run.

    solir show MODEL [--stage S]               IR at any stage, highlighted, and a summary
    solir compile MODEL --target T -o DIR      write DIR/model.so, model.h, manifest.json
    solir run DIR --input name=x.npy           run an artifact
    solir demo                                 compile and run a small MLP, checked against jax
    solir targets | solir ops                  what solir knows

MODEL is an ONNX model (.onnx) or a solir text module (.sir).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from solir.errors import SolirError


def _console() -> Any:
    from rich.console import Console
    return Console(highlight=False)


@dataclasses.dataclass
class Source:
    """An input file, read: the tensor-level module, and for ONNX the model and its facts."""
    module: Any
    onnx_model: Any = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


def _shapes(items: list[str] | None) -> dict[str, list[int]]:
    """--input-shape NAME=1x3x224x224 (repeatable)."""
    out = {}
    for item in items or []:
        name, _, dims = item.rpartition("=")
        try:
            out[name] = [int(d) for d in dims.lower().split("x")] if dims else []
        except ValueError:
            raise SolirError(f"--input-shape {item!r} should be NAME=DxDxD (e.g. x=1x3x224x224)") from None
        if not name:
            raise SolirError(f"--input-shape {item!r} should be NAME=DxDxD (e.g. x=1x3x224x224)")
    return out


def onnx_info(model: Any, path: Path) -> dict[str, Any]:
    import hashlib
    opset = {o.domain or "ai.onnx": int(o.version) for o in model.opset_import}
    return {"format": "onnx", "name": model.graph.name or path.stem,
            "producer": f"{model.producer_name} {model.producer_version}".strip() or "unknown",
            "opset": opset.get("ai.onnx"), "ir_version": int(model.ir_version),
            "source": str(path), "source_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _load_source(path: str, input_shapes: dict[str, list[int]] | None = None) -> Source:
    from solir.ir.parser import parse_module
    from solir.ir.verifier import verify_module
    p = Path(path)
    if not p.exists():
        raise SolirError(f"no such file: {path}")
    if p.suffix == ".sir":
        m = parse_module(p.read_text(), str(p))
        verify_module(m)
        return Source(m, info={"format": "sir", "name": p.stem, "source": str(p)})
    if p.suffix == ".onnx":
        from solir.frontends.onnx import from_onnx, load_model
        model, _ = load_model(p)
        return Source(from_onnx(model, input_shapes=input_shapes or {}, name=None),
                      model, onnx_info(model, p))
    raise SolirError(f"do not know how to read {p.suffix or 'this'} files",
                     fix="give a .onnx model or a .sir text module")


def print_ir(text: str, console: Any) -> None:
    """Terminal colour is a layer over the printer's text, never a different printer."""
    from rich.syntax import Syntax
    if console.is_terminal:
        console.print(Syntax(text, "llvm", theme="monokai", background_color="default",
                             word_wrap=False))
    else:
        sys.stdout.write(text)


def _options(args: argparse.Namespace) -> Any:
    from solir.lower.algorithms import parse_overrides
    from solir.lower.pipeline import Options
    from solir.runtime.load import default_num_threads
    tune = bool(getattr(args, "autotune", False))
    return Options(algorithms=parse_overrides(args.algorithm or []), autotune=tune,
                   tune_threads=default_num_threads() if tune else 0)


def onnx_text(model: Any) -> str:
    """The graph in ONNX's own text syntax, initializers listed by type instead of value."""
    import onnx
    import onnx.printer
    from onnx.helper import tensor_dtype_to_string
    g = onnx.GraphProto()
    g.CopyFrom(model.graph)
    inits = list(g.initializer)
    del g.initializer[:]
    lines = [f"# {model.graph.name}: ir_version {model.ir_version}, opsets "
             + ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
             + (f", from {model.producer_name} {model.producer_version}".rstrip() if model.producer_name else "")]
    for init in inits:
        dt = tensor_dtype_to_string(init.data_type).removeprefix("TensorProto.").lower()
        lines.append(f"#   initializer {init.name}: {dt}{list(init.dims)}")
    return "\n".join(lines) + "\n" + onnx.printer.to_text(g) + "\n"


def cmd_show(args: argparse.Namespace) -> int:
    from solir.driver import Compilation
    from solir.lower.pipeline import TENSOR_PIPELINE
    from solir.report import onnx_summary, print_summary, summarize
    from solir.targets import get_target
    console = _console()
    if args.stage == "onnx":
        if Path(args.file).suffix != ".onnx":
            raise SolirError("--stage onnx needs an .onnx model")
        from solir.frontends.onnx import load_model
        model, _ = load_model(args.file)
        print_ir(onnx_text(model), console)
        if not args.no_summary:
            print_summary(onnx_summary(model), console)
        return 0
    src = _load_source(args.file, _shapes(args.input_shape))
    comp = Compilation(src.module, get_target(args.target), _options(args))
    if args.autotune and args.stage not in ("tensor", *TENSOR_PIPELINE[:3]):
        t0 = time.perf_counter()      # tuning takes a while: say what it does, on stderr

        def tuning(stage: str) -> None:
            if stage.startswith("autotune"):
                sys.stderr.write(f"{time.perf_counter() - t0:6.2f}s {stage}\n")
        comp.lower(progress=tuning)
    print_ir(comp.as_text(args.stage), console)
    if not args.no_summary:
        kernel = comp.lower() if args.stage != "tensor" else None
        print_summary(summarize(src.module, kernel), console)
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from solir.driver import Compilation
    from solir.report import summarize
    from solir.targets import get_target
    console = _console()
    t0 = time.perf_counter()
    chatty = not args.quiet and not args.json

    def progress(stage: str) -> None:
        if chatty:
            console.print(f"[dim]{time.perf_counter() - t0:6.2f}s[/dim] {stage}")

    progress(f"reading {args.file}")
    src = _load_source(args.file, _shapes(args.input_shape))
    comp = Compilation(src.module, get_target(args.target), _options(args))
    out = Path(args.output)
    m = comp.write_artifact(out, progress=progress, model=src.info)
    summary = summarize(src.module, comp.lower())
    if args.json:
        print(json.dumps({"directory": str(out), "library": m.library, "target": m.target,
                          "workspace_bytes": m.workspace_bytes, "artifact_sha256": m.library_hash,
                          "weights": m.weights, "weights_bytes": m.weights_bytes,
                          "inputs": [dataclasses.asdict(t) for t in m.inputs],
                          "outputs": [dataclasses.asdict(t) for t in m.outputs],
                          "model": src.info, "flops": summary["flops"],
                          "parameter_bytes": summary["parameter_bytes"],
                          "seconds": round(time.perf_counter() - t0, 3)}))
    elif not args.quiet:
        progress("done")
        weights = f"{m.weights} ({m.weights_bytes} bytes), " if m.weights else ""
        console.print(f"wrote {out}/{m.library}, {weights}model.h, manifest.json (target {m.target}, "
                      f"{summary['kernels']} loop nests, workspace {m.workspace_bytes} bytes)")
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
    if args.onnx:
        from solir.frontends.onnx import MAX_OPSET, MIN_OPSET, SUPPORTED_OPS
        print(f"ONNX operators solir reads (opsets {MIN_OPSET} to {MAX_OPSET}):")
        for k in range(0, len(SUPPORTED_OPS), 8):
            print("  " + " ".join(SUPPORTED_OPS[k:k + 8]))
        return 0
    from solir.ir.registry import all_ops
    for name, od in sorted(all_ops().items()):
        print(f"{name:32} {od.kind:12} {od.doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from solir.driver import STAGES
    p = argparse.ArgumentParser(prog="solir", description="solir: a tensor compiler for CPUs "
                                "and vector processors")
    sub = p.add_subparsers(dest="command", required=True)
    shape_help = "fix a graph input's shape (symbolic dims), e.g. x=1x3x224x224; repeatable"
    from solir.lower.algorithms import ALGORITHMS
    algo_help = ("force an algorithm: conv=loops (every conv), conv:3=winograd (the 4th), "
                 "NODE=NAME (an ONNX node); " + "; ".join(
                     f"{kind}: {', '.join(names)}" for kind, names in ALGORITHMS.items())
                 + "; see --stage algorithms; repeatable")
    tune_help = ("time each contraction's candidate algorithms on this machine (at "
                 "SOLIR_NUM_THREADS threads, else all cores) instead of trusting the cost model; "
                 "the winners are remembered in the cache, per op shape, target and thread count")
    s = sub.add_parser("show", help="print a model (.onnx or .sir) at a stage of the pipeline, "
                       "with a summary table")
    s.add_argument("file")
    s.add_argument("--stage", default="tensor", choices=["onnx", *STAGES],
                   help="onnx (the graph as read), tensor, a pass name, algorithms (the choice "
                        "per contraction and why), loops, llvm, llvm-opt, asm")
    s.add_argument("--target", default="host")
    s.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    s.add_argument("--no-summary", action="store_true", help="print the IR only")
    s.add_argument("--algorithm", action="append", metavar="KEY=NAME", help=algo_help)
    s.add_argument("--autotune", action="store_true", help=tune_help)
    s.set_defaults(fn=cmd_show)
    c = sub.add_parser("compile", help="compile a model (.onnx or .sir) to DIR/model.so + "
                       "model.h + manifest.json")
    c.add_argument("file")
    c.add_argument("--target", default="host", help="see `solir targets`")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--input-shape", action="append", metavar="NAME=DIMS", help=shape_help)
    c.add_argument("--algorithm", action="append", metavar="KEY=NAME", help=algo_help)
    c.add_argument("--autotune", action="store_true", help=tune_help)
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
    o = sub.add_parser("ops", help="list the IR's ops (or, with --onnx, the ONNX operators read)")
    o.add_argument("--onnx", action="store_true")
    o.set_defaults(fn=cmd_ops)
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
