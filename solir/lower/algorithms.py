"""select-algorithms: choose, per contraction, how it is computed (the ai3 idea). The choice
is an attribute (`algorithm`) on the tensor op, which its lowering reads; changing it never
changes what is computed, only how (tests/test_schedules.py checks every choice).

    tensor.conv         im2col    patches + the packed matmul microkernel (NCHW with unit
                                  column stride: the patches are gathered from the image
                                  while B panels are packed, never written whole)
                        loops     one loop nest over output x (channel, window): any layout,
                                  groups (depthwise), integer types
    tensor.dot_general  matmul    the packed register-blocked microkernel
                        loops     one loop nest with a reduction

The cost model picks by default; the user overrides per op with `Options.algorithms`
(`solir.jit(f, algorithms={...})`, `solir compile --algorithm KEY=NAME`), where KEY is
    conv / dot             every op of that kind
    conv:3                 the fourth conv (0-based, in program order; `solir show --stage
                           algorithms` lists them)
    'name' or name         the op from the ONNX node with that name
`solir show --stage algorithms` prints the choice for each op and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

from solir.errors import SolirError
from solir.ir.core import Module, Op
from solir.ir.types import DType
from solir.lower.pipeline import PassContext, pass_

KINDS = {"tensor.conv": "conv", "tensor.dot_general": "dot"}


@dataclass(frozen=True)
class Choice:
    name: str
    applies: Callable[[Op], str | None]      # None if it can compute the op, else why not
    doc: str


def _float_ungrouped(op: Op) -> str | None:
    out = op.results[0].type
    if out.dtype not in (DType.F32, DType.F64):
        return f"needs f32/f64, the op is {out.dtype}"
    if any(v.type.dtype != out.dtype for v in op.operands):
        return "needs operands of the result's dtype"
    if op.name == "tensor.conv" and op.attrs.get("feature_group_count", 1) != 1:
        return "a grouped conv (feature_group_count > 1)"
    if op.name == "tensor.conv":
        from solir.ir.ops.contract import conv_im2col_layout
        return conv_im2col_layout(op)
    return None


def _always(op: Op) -> str | None:
    return None


ALGORITHMS: dict[str, dict[str, Choice]] = {
    "conv": {
        "im2col": Choice("im2col", _float_ungrouped, "patches, then the packed matmul microkernel"),
        "loops": Choice("loops", _always, "one loop nest over outputs x (channel, window)"),
    },
    "dot": {
        "matmul": Choice("matmul", _float_ungrouped, "the packed register-blocked microkernel"),
        "loops": Choice("loops", _always, "one loop nest with a reduction"),
    },
}


def macs(op: Op) -> int:
    from solir.report import op_flops
    return op_flops(op) // 2


def _default(kind: str, op: Op) -> tuple[str, str]:
    """The cost model: (choice, why)."""
    fast = "im2col" if kind == "conv" else "matmul"
    why_not = ALGORITHMS[kind][fast].applies(op)
    if why_not is not None:
        return "loops", f"{fast} does not apply: {why_not}"
    n = macs(op)
    if n < 4096:
        return "loops", f"tiny ({n} multiply-adds): packing would cost more than it saves"
    if kind == "conv":
        return fast, f"{n / 1e6:.1f} M multiply-adds through the microkernel"
    return fast, f"{n / 1e6:.2f} M multiply-adds"


def parse_overrides(items: Any) -> tuple[tuple[str, str], ...]:
    """{'conv:3': 'loops'} or ['conv=im2col', ...] -> validated (key, name) pairs."""
    if not items:
        return ()
    pairs = list(items.items()) if isinstance(items, dict) else [
        tuple(s.split("=", 1)) if isinstance(s, str) else tuple(s) for s in items]
    out = []
    for pair in pairs:
        if len(pair) != 2 or not pair[0] or not pair[1]:
            raise SolirError(f"algorithm override {pair!r} should be KEY=NAME, e.g. conv:3=loops")
        key, name = str(pair[0]).strip(), str(pair[1]).strip()
        kind = key.split(":", 1)[0]
        names = {n for choices in ALGORITHMS.values() for n in choices}
        if kind in ALGORITHMS and name not in ALGORITHMS[kind]:
            raise SolirError(f"no algorithm '{name}' for {kind}",
                             fix=f"{kind} algorithms: {', '.join(ALGORITHMS[kind])}")
        if name not in names:
            raise SolirError(f"unknown algorithm '{name}'", fix="algorithms: " + ", ".join(
                f"{k}: {', '.join(v)}" for k, v in ALGORITHMS.items()))
        out.append((key, name))
    return tuple(out)


def _override(kind: str, index: int, op: Op, overrides: tuple[tuple[str, str], ...]) -> str | None:
    chosen = None
    loc = str(op.loc) if op.loc is not None else ""
    for key, name in overrides:        # later, more specific keys win
        if key == kind or key == f"{kind}:{index}" or f"'{key.strip(chr(39))}'" in loc:
            chosen = name
    return chosen


def contractions(module: Module) -> Iterator[tuple[str, int, Op]]:
    """(kind, index, op) for each contraction, numbered per kind in program order (the
    numbering `conv:3` overrides and `--stage algorithms` use)."""
    for f in module.funcs:
        counts: dict[str, int] = {}
        for op in f.body.ops:
            kind = KINDS.get(op.name)
            if kind is not None:
                counts[kind] = counts.get(kind, 0) + 1
                yield kind, counts[kind] - 1, op


@pass_("select-algorithms")
def select_algorithms(module: Module, ctx: PassContext) -> Module:
    overrides = ctx.options.algorithms
    for kind, index, op in contractions(module):
        forced = _override(kind, index, op, overrides)
        if forced is not None and forced in ALGORITHMS[kind]:
            why_not = ALGORITHMS[kind][forced].applies(op)
            if why_not is not None:
                raise SolirError(f"{kind}:{index} cannot use '{forced}': {why_not}",
                                 fix=f"choose one of {', '.join(ALGORITHMS[kind])}, or "
                                     "leave it to the cost model")
            op.attrs["algorithm"] = forced
            op.attrs["algorithm_why"] = "forced by the user"
        else:
            op.attrs["algorithm"], op.attrs["algorithm_why"] = _default(kind, op)
    return module


def algorithms_table(module: Module) -> str:
    """What `solir show --stage algorithms` prints: one line per contraction."""
    lines = [f"{'op':10} {'shape':34} {'MACs':>10}  {'algorithm':9} why"]
    for kind, index, op in contractions(module):
        shapes = " x ".join("x".join(map(str, v.type.shape)) for v in op.operands)
        where = ""
        loc = str(op.loc) if op.loc is not None else ""
        if "onnx node '" in loc:
            where = "  [" + loc.split("onnx node '", 1)[1].split("'", 1)[0] + "]"
        lines.append(f"{kind}:{index:<6} {shapes:34} {macs(op):>10}  "
                     f"{op.attrs.get('algorithm', '?'):9} {op.attrs.get('algorithm_why', '')}{where}")
    return "\n".join(lines) + "\n"


__all__ = ["ALGORITHMS", "algorithms_table", "contractions", "parse_overrides", "select_algorithms"]
