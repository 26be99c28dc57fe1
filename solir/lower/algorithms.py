"""select-algorithms: choose, per contraction, how it is computed (the ai3 idea). The choice
is an attribute (`algorithm`) on the tensor op, which its lowering reads; changing it never
changes what is computed, only how (tests/test_schedules.py checks every choice).

    tensor.conv         im2col    patches + the packed matmul microkernel (NCHW with
                                  column stride 1 or 2: the patches are gathered from the
                                  image while B panels are packed, never written whole)
                        im2col_rows  NCHW convs the other way round, C^T = P W^T: output
                                  positions are the product's rows (small images, where
                                  they are too few for the register tile's wide columns)
                        winograd  F(4x4, 3x3): input transform, 36 matrix products with
                                  C-long reductions (the microkernel), output transform;
                                  3x3 stride-1 NCHW convs (solir/ir/ops/winograd.py)
                        winograd2 F(2x2, 3x3): the same with 16 products (smaller tiles
                                  for small images, a little more accurate)
                        depthwise one filter per channel (NCHW): a 1-d stencil over each
                                  zero-padded plane, vectors along the whole plane
                                  (solir/ir/ops/depthwise.py)
                        nchwc     over the blocked NCHWc layout (solir/ir/ops/nchwc.py):
                                  1x1 stride-1 convs as the microkernel with the output
                                  positions as rows and channels as vectors, depthwise convs
                                  as one loop nest on whole channel vectors, a stem on
                                  fewer than 16 input channels (read as NCHW) as a direct
                                  loop nest that writes channel blocks; the
                                  nchwc-layout pass cancels the layout changes between
                                  neighbouring such convs (a chain runs in NCHWc)
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
`solir show --stage algorithms` prints the choice for each op and why. With `autotune`
(`solir compile --autotune`, `solir.jit(f, autotune=True)`) the candidates are timed on this
machine instead, once per op shape, target and thread count (solir/lower/autotune.py).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from solir.errors import SolirError, SolirWarning
from solir.ir.core import Module, Op, users
from solir.ir.types import DType
from solir.lower.pipeline import PassContext, pass_
from solir.targets import Target

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


def _rows(op: Op) -> str | None:
    why = _float_ungrouped(op)
    if why is None and (op.attrs["out_spec"][1] != 1 or op.attrs["rhs_spec"][0] != 0):
        return "needs output features before the spatial dims and the kernel's first (NCHW, OIHW)"
    return why


def _depthwise(op: Op) -> str | None:
    from solir.ir.ops.depthwise import depthwise_applies
    return depthwise_applies(op)


def _nchwc_kind(op: Op) -> tuple[str | None, str]:
    from solir.ir.ops.nchwc import nchwc_kind
    from solir.lower.layout import block_size
    return nchwc_kind(op, block_size(op.results[0].type.dtype.itemsize))


def _nchwc(op: Op) -> str | None:
    kind, why = _nchwc_kind(op)
    return None if kind else why


def _winograd(op: Op) -> str | None:
    from solir.ir.ops.contract import conv_params
    from solir.ir.ops.winograd import winograd_applies
    lhs, rhs = op.operands
    return winograd_applies(conv_params(lhs.type, rhs.type, op.attrs), lhs.type, rhs.type,
                            op.results[0].type)


ALGORITHMS: dict[str, dict[str, Choice]] = {
    "conv": {
        "im2col": Choice("im2col", _float_ungrouped, "patches, then the packed matmul microkernel"),
        "im2col_rows": Choice("im2col_rows", _rows, "patches as the product's rows, C^T = P W^T, "
                              "then a transpose (small images)"),
        "winograd": Choice("winograd", _winograd, "Winograd F(4x4,3x3) around the microkernel"),
        "winograd2": Choice("winograd2", _winograd, "Winograd F(2x2,3x3) around the microkernel"),
        "depthwise": Choice("depthwise", _depthwise, "a stencil over each channel's padded "
                            "plane (one filter per channel)"),
        "nchwc": Choice("nchwc", _nchwc, "over blocked NCHWc channels (1x1, depthwise, or a "
                        "stem on few input channels), "
                        "layout changes cancelled between neighbouring such convs"),
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


# What one element written by a Winograd transform (V in, M out) costs, in microkernel
# multiply-adds: the transforms stream memory at a few elements per cycle where the
# microkernel does 32 multiply-adds per cycle (2 FMA pipes x 16 lanes).
TRANSFORM_ELEMENT = 8
# ... and one element im2col_rows writes (the patches, transposed from the image, and the
# product transposed back): strided gathers, several times a streaming write. Fitted to the
# autotuner's timings: a 1x1 conv on 14x14 with 512 channels is 20% slower this way, one
# with 1024 channels on 7x7 10% faster.
ROWS_ELEMENT = 48
# ... and one element of the weights: read once per call, from memory when a model's weights
# exceed the caches (ResNet-18 has 45 MB), at ~5 bytes per cycle. Winograd's U is t^2/9 times
# the kernel (4x for F(4x4)): at 16 the model took F(4x4) at 14x14 and F(2x2) at 7x7 in
# ResNet-18, no faster at 1 or 2 threads than F(2x2) and im2col_rows there, with 100 MB of
# weights to stream per call instead of 83 MB.
WEIGHT_ELEMENT = 24


def conv_costs(op: Op, target: Target) -> dict[str, float]:
    """Effective multiply-adds of each fast conv algorithm that applies: the microkernel's
    products with their rows padded to whole register tiles and their columns to whole
    vectors of the last panel, at least half a panel (a 7x7 image is 49 columns, computed as
    64, or 49 rows, computed as 54; 196 columns cost 224), plus what the algorithm writes
    besides (patch matrices, Winograd's transforms, a transpose) and the weights it reads."""
    from solir.ir.ops.contract import conv_params, patches_gathered
    from solir.ir.ops.winograd import tiles_for
    from solir.lower.schedule import matmul_blocking
    lhs, rhs = op.operands
    out = op.results[0].type
    p = conv_params(lhs.type, rhs.type, op.attrs)
    size = out.dtype.itemsize

    lanes = target.lanes(size)

    def product(batch: int, m: int, n: int, k: int) -> float:
        tiles = matmul_blocking(target, size, m, n, k)
        mr, nr = tiles["mr"], tiles["nr"]
        # the last panel runs a microkernel of whole vectors, but one that narrow does fewer
        # FMAs per load: it counts as at least half a panel
        edge = n % nr and max(-(-(n % nr) // lanes) * lanes, nr // 2)
        cols = n // nr * nr + edge
        return batch * (-(-m // mr) * mr) * cols * k

    costs: dict[str, float] = {}
    n_img, k_out = p["n"], p["o"]
    cols = int(np.prod(out.shape)) // (n_img * k_out)            # output positions per image
    reduction = rhs.type.size // k_out
    weights = WEIGHT_ELEMENT * rhs.type.size
    if ALGORITHMS["conv"]["im2col"].applies(op) is None:
        written = 0 if patches_gathered(p) else TRANSFORM_ELEMENT * n_img * cols * reduction
        costs["im2col"] = product(n_img, k_out, cols, reduction) + weights + written
    if _rows(op) is None:
        costs["im2col_rows"] = (product(1, n_img * cols, k_out, reduction) + weights
                                + ROWS_ELEMENT * n_img * cols * (reduction + k_out))
    if _winograd(op) is None:
        _, _, oh, ow = out.shape
        c_in = rhs.type.shape[1]
        for name, m in (("winograd", 4), ("winograd2", 2)):
            ty, tx = tiles_for((oh, ow), m)
            t2, cols = (m + 2) ** 2, n_img * ty * tx
            costs[name] = (product(t2, k_out, cols, c_in)
                           + TRANSFORM_ELEMENT * t2 * cols * (c_in + k_out)
                           + WEIGHT_ELEMENT * t2 * k_out * c_in)
    return costs


def _default_depthwise(op: Op) -> tuple[str, str]:
    """One filter per channel: at stride 1 the plane stencil keeps whole vectors busy where
    the conv's own loop nest works along rows; strided, the stencil first splits the image
    into its stride's phase planes (a pass of its own), and the loop nest, which reads the
    image in place with strided loads, is about as fast: on MobileNet-v1's four stride-2
    layers each won on two shapes, and the whole model's time did not move (session 15)."""
    from solir.ir.ops.contract import conv_params
    lhs, rhs = op.operands
    p = conv_params(lhs.type, rhs.type, op.attrs)
    if p["strides"] == (1, 1):
        return "depthwise", "one filter per channel, stride 1: a stencil over each padded plane"
    return "loops", (f"one filter per channel at stride {p['strides'][0]}x{p['strides'][1]}: "
                     "the loop nest along rows (the stencil's phases add taps)")


def _default(kind: str, op: Op, target: Target) -> tuple[str, str]:
    """The cost model: (choice, why)."""
    if kind == "conv" and _depthwise(op) is None:
        return _default_depthwise(op)
    fast = "im2col" if kind == "conv" else "matmul"
    why_not = ALGORITHMS[kind][fast].applies(op)
    if why_not is not None:          # (Winograd needs what im2col needs, and more)
        return "loops", f"{fast} does not apply: {why_not}"
    n = macs(op)
    if n < 4096:
        return "loops", f"tiny ({n} multiply-adds): packing would cost more than it saves"
    if kind == "conv":
        costs = conv_costs(op, target)
        best = min(costs, key=costs.__getitem__)
        others = ", ".join(f"{k} {v / 1e6:.3g}" for k, v in costs.items() if k != best)
        return best, (f"{costs[best] / 1e6:.3g} M effective multiply-adds"
                      + (f" (against {others})" if others else ""))
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


def _autotune(kind: str, index: int, op: Op, ctx: PassContext,
              users: dict[Any, list[Op]]) -> tuple[str, str] | None:
    """The measured choice (solir/lower/autotune.py) among the algorithms that can compute
    the op, None where there is nothing to choose from."""
    from solir.lower import autotune
    n = macs(op)
    if n < 4096:
        return None
    names = autotune.candidates(kind, op, n)
    if len(names) < 2:
        return None
    return autotune.tune(kind, index, op, names, ctx.target, ctx.options.tune_threads, ctx.progress,
                         autotune.epilogue(op, users))


@pass_("select-algorithms")
def select_algorithms(module: Module, ctx: PassContext) -> Module:
    overrides = ctx.options.algorithms
    tuning = ctx.options.autotune
    if tuning and ctx.target.missing_features():
        warnings.warn(f"solir: --autotune times code on this machine, which cannot run target "
                      f"'{ctx.target.name}' (it lacks {', '.join(ctx.target.missing_features())}); "
                      "the cost model chooses", SolirWarning, stacklevel=2)
        tuning = False
    uses: dict[Any, list[Op]] = {}       # (values are unique across functions)
    for f in module.funcs if tuning else ():
        uses.update(users(f.body))
    chosen = []                          # by the cost model (not forced, not timed)
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
            tuned = _autotune(kind, index, op, ctx, uses) if tuning else None
            op.attrs["algorithm"], op.attrs["algorithm_why"] = tuned or _default(kind, op, ctx.target)
            if tuned is None and kind == "conv":
                chosen.append(op)
    _nchwc_chains(module, chosen)
    return module


NCHWC_WHY = ("a chain of 1x1 and depthwise convs in NCHWc channel blocks: channels as the "
             "vectors, the weights as the packed operand, the layout changed at the chain's "
             "ends only")
NCHWC_DIRECT_WHY = ("the first conv of a chain in NCHWc channel blocks: its few input channels "
                    "read in NCHW, the output channels as the vectors, written in blocks "
                    "(no patches, no layout change after it)")


def _nchwc_chains(module: Module, chosen: list[Op]) -> None:
    """The cost model's convs that nchwc applies to and that are next to another one (the
    input made by one through elementwise ops, or the result read by one): a MobileNet's
    pointwise and depthwise layers. Alone, a conv would pay for two layout changes."""
    from solir.ir.registry import ELEMENTWISE, get_op
    ok = {id(op): kind for op in chosen if (kind := _nchwc_kind(op)[0])}
    if len(ok) < 2:
        return
    for f in module.funcs:
        uses = users(f.body)

        def through(v: Any, down: bool, depth: int = 0) -> bool:
            """A qualifying conv reached from v through elementwise ops."""
            if depth > 8:
                return False
            ops = uses.get(v, []) if down else [v.owner] if isinstance(v.owner, Op) else []
            for o in ops:
                if o.name == "tensor.conv":
                    if id(o) in ok and (not down or o.operands[0] is v):
                        return True
                    continue
                if get_op(o.name).kind == ELEMENTWISE and len(o.results) == 1 and \
                        o.results[0].type.shape == v.type.shape:
                    nxt = [o.results[0]] if down else [w for w in o.operands
                                                        if w.type.shape == v.type.shape]
                    if any(through(w, down, depth + 1) for w in nxt):
                        return True
            return False
        for op in f.body.ops:
            if id(op) in ok and (through(op.operands[0], False) or through(op.results[0], True)):
                op.attrs["algorithm"] = "nchwc"
                direct = ok[id(op)] == "direct"
                op.attrs["algorithm_why"] = NCHWC_DIRECT_WHY if direct else NCHWC_WHY


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
