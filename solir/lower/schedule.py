"""schedule and vectorize: the order loops run in, which one is split across threads, and
which one is computed in vector lanes. Kept as attributes apart from the algorithm (Halide's
split): changing them never changes results, only speed.

  order    = loop dims outermost first: parallel dims, then scan/reduction dims
  parallel = the outermost loop, when there is enough work to share between threads
  vector   = [dim, lanes]: the innermost axis contiguous in memory (the output's last dim, or
             a reduction over the inputs' last dim), at the target's vector width
"""

from __future__ import annotations

from solir.ir.attrs import AffineMap
from solir.ir.core import Module, Op
from solir.ir.types import TensorType
from solir.lower.pipeline import PassContext, pass_


def flat_coeffs(m: AffineMap, t: TensorType) -> tuple[list[int], int]:
    """Element offset of an access as `sum(coeffs[d] * iv[d]) + const` (maps without division)."""
    strides, s = [], 1
    for n in reversed(t.shape):
        strides.append(s)
        s *= n
    strides.reverse()
    coeffs = [0] * m.n_dims
    const = 0
    for stride, e in zip(strides, m.exprs):
        for d, c in enumerate(e.coeffs):
            coeffs[d] += stride * c
        const += stride * e.const
    return coeffs, const


def _domain(op: Op) -> int:
    n = 1
    for d in op.attrs["dims"]:
        n *= d
    return n


@pass_("schedule")
def schedule(module: Module, ctx: PassContext) -> Module:
    for f in module.funcs:
        for op in f.body.ops:
            if op.name == "kernel.generic":
                _schedule(op, ctx)
    return module


def _schedule(op: Op, ctx: PassContext) -> None:
    dims, its = op.attrs["dims"], op.attrs["iterators"]
    parallel = [d for d, it in enumerate(its) if it == "p"]
    inner = [d for d, it in enumerate(its) if it != "p"]
    # Bring the first parallel dim with more than one iteration to the front (batch-1 models).
    for k, d in enumerate(parallel):
        if dims[d] > 1:
            parallel = [d] + parallel[:k] + parallel[k + 1:]
            break
    op.attrs["order"] = tuple(parallel + inner)
    big = _domain(op) >= ctx.options.parallel_min_work
    if ctx.options.parallel and parallel and dims[parallel[0]] > 1 and big:
        op.attrs["parallel"] = parallel[0]
    else:
        op.attrs.pop("parallel", None)


@pass_("vectorize")
def vectorize(module: Module, ctx: PassContext) -> Module:
    for f in module.funcs:
        for op in f.body.ops:
            if op.name == "kernel.generic":
                op.attrs.pop("vector", None)
                if ctx.options.vectorize:
                    choice = choose_vector_dim(op, ctx)
                    if choice is not None:
                        op.attrs["vector"] = choice
    return module


def choose_vector_dim(op: Op, ctx: PassContext) -> tuple[int, int] | None:
    """The vector axis and width, or None to stay scalar."""
    dims, its, order = op.attrs["dims"], op.attrs["iterators"], op.attrs["order"]
    comb = op.attrs.get("combiner")
    out = op.results[0].type
    widest = max([out.dtype.itemsize] + [v.type.dtype.itemsize for v in op.operands] + [4])
    lanes = ctx.target.lanes(min(widest, 8))
    if lanes < 2:
        return None
    candidates = []
    par = [d for d in order if its[d] == "p"]
    if par:
        # The output's innermost dim; reduction loops (if any) run inside it, per lane-vector.
        candidates.append(max(par))
    if comb not in (None, "argmax", "argmin") and "s" not in its and its[order[-1]] == "r":
        candidates.append(order[-1])             # an innermost reduction over contiguous data
    best: tuple[int, int] | None = None
    for d in candidates:
        if dims[d] < lanes or not _vectorizable_along(op, d):
            continue
        cost = _gathers_along(op, d)
        if best is None or cost < best[0]:
            best = (cost, d)
    return None if best is None else (best[1], lanes)


def _vectorizable_along(op: Op, d: int) -> bool:
    pads = op.attrs.get("pads") or (None,) * len(op.operands)
    for m, pad in zip(op.attrs["maps"], pads):
        if m is None or (pad is None and not m.divides):
            continue
        if any(e.coeffs[d] for e in m.exprs):
            return False        # bounds-checked reads along the vector axis stay scalar for now
    return True


def _gathers_along(op: Op, d: int) -> int:
    n = 0
    for v, m in zip(op.operands, op.attrs["maps"]):
        if m is None:
            continue
        coeffs, _ = flat_coeffs(m, v.type)
        if coeffs[d] not in (0, 1):
            n += 1
    return n
