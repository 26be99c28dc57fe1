"""fuse-epilogues: an elementwise kernel right after a matmul runs inside the matmul, on each
tile of C while the microkernel still holds it in registers.

A conv or dense layer's bias, BatchNorm scale and shift, and activation used to be a pass of
their own over C: MobileNet's first pointwise conv (K = 32) writes a 3.2 MB C and the
BN+ReLU pass then reads and writes it again, twice the memory traffic of the product itself.
Fused, C is written once, already transformed. A C that fits in half of L2 is left alone:
the separate pass then reads it from L2 at little cost, and each fused matmul compiles a
microkernel of its own. Except a C in channel blocks (an NCHWc pointwise conv, `blocked`),
fused at any size: MobileNet-v1's 28x28, 14x14 and 7x7 pointwise layers each had a BN +
ReLU pass of their own, one more kernel (at 2 threads one more fork and join) on a layer
whose C is small (benchmarks/README.md, session 23, has the gain).

The consumer qualifies when it reads C (seen through reshapes nothing else reads) element
for element in C's order, computes one value of C's dtype per element from C's element,
constants and other tensors read with no computed indices, and every other tensor's element
is an affine function of C's (batch, row, column): a per-row vector (a conv's per-channel
BN), a per-column one (a dense layer's bias), a scalar, or a whole matrix read contiguously
along the row (a residual). Those tensors become the matmul's epilogue operands, viewed 1-d,
with `epilogue_maps` from (batch, i, j) to their elements (solir/ir/ops/matmul.py).
"""

from __future__ import annotations

import numpy as np

from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Block, Func, Module, Op, Value, make_op, users
from solir.ir.ops.matmul import c_shape
from solir.ir.registry import all_ops
from solir.ir.types import TensorType
from solir.lower.pipeline import PassContext, pass_
from solir.lower.rewrite import clone_op, dce
from solir.lower.schedule import flat_coeffs

_VIEWS = ("tensor.reshape", "kernel.view")


@pass_("fuse-epilogues")
def fuse_epilogues(module: Module, ctx: PassContext) -> Module:
    """Move the elementwise consumer of each matmul into the matmul's tile write-back."""
    if not ctx.options.fuse:
        return module
    given = ctx.options.epilogue_bytes
    for f in module.funcs:
        _fuse(f, given if given >= 0 else ctx.target.l2_kib * 1024 // 2, max(given, 0))
    return module


def _fuse(f: Func, min_bytes: int, min_blocked: int) -> None:
    """Fuse where C has at least `min_bytes`, or `min_blocked` if C is in channel blocks."""
    changed = True
    while changed:
        changed = False
        uses = users(f.body)
        returned = set(f.body.ops[-1].operands)
        for op in list(f.body.ops):
            if (op.name != "kernel.matmul" or op.regions
                    or op.results[0].type.nbytes < (min_blocked if op.attrs.get("blocked")
                                                    else min_bytes)):
                continue
            found = _consumer(op, uses, returned)
            if found is None:
                continue
            consumer, i = found
            made = _fused(op, consumer, i)
            if made is None:
                continue
            pos = f.body.ops.index(consumer)
            f.body.ops[pos:pos + 1] = made
            old, new = consumer.results[0], made[-1].results[0]
            for later in f.body.ops[pos + len(made):]:
                later.operands = [new if v is old else v for v in later.operands]
            f.body.ops.remove(op)
            dce(f.body)
            changed = True
            break


def _consumer(op: Op, uses: dict[Value, list[Op]], returned: set[Value]) -> tuple[Op, int] | None:
    """The generic reading `op`'s result (through reshapes read by nothing else) and the
    input position it reads it at."""
    v = op.results[0]
    while True:
        if v in returned:
            return None
        readers = uses.get(v, [])
        if len({id(u) for u in readers}) != 1:
            return None
        user = readers[0]
        if user.name in _VIEWS:
            v = user.results[0]
            continue
        if user.name != "kernel.generic" or [w is v for w in user.operands].count(True) != 1:
            return None
        return user, [w is v for w in user.operands].index(True)


def _groups(dims: list[int], sizes: tuple[int, ...]) -> list[list[int]] | None:
    """The generic's dims split into groups whose extents multiply to C's dims ([batch, M,
    N], or [batch, N/L, M, L] blocked), in order; None when the dims straddle a boundary."""
    groups: list[list[int]] = [[] for _ in sizes]
    g, need, have = len(sizes) - 1, sizes[-1], 1
    for d in reversed(range(len(dims))):
        while have == need and g > 0 and dims[d] != 1:
            g, need, have = g - 1, sizes[g - 1], 1
        groups[g].append(d)
        have *= dims[d]
        if have > need:
            return None
    if have != need or any(sizes[k] != 1 for k in range(g)):
        return None
    return [list(reversed(x)) for x in groups]


def _group_coeff(coeffs: list[int], dims: list[int], group: list[int]) -> int | None:
    """c when the offset's terms over `group` are c times the group's row-major index."""
    stride, c = 1, None
    for d in reversed(group):
        if dims[d] != 1:
            if c is None:
                if coeffs[d] % stride:
                    return None
                c = coeffs[d] // stride
            if coeffs[d] != c * stride:
                return None
        stride *= dims[d]
    return c or 0


def _fused(mm: Op, g: Op, i: int) -> list[Op] | None:
    a = g.attrs
    c_type: TensorType = mm.results[0].type
    out = g.results[0].type
    dims = list(a["dims"])
    body = g.regions[0]
    if (set(a["iterators"]) != {"p"} or a.get("combiner") or a.get("pads") or len(g.results) != 1
            or out.dtype != c_type.dtype or int(np.prod(dims)) != c_type.size
            or any(o.name in ("kernel.index", "kernel.read") for o in body.ops)
            or any(m is None or m.divides for m in a["maps"])):
        return None
    groups = _groups(dims, c_type.shape)
    L = int(mm.attrs.get("blocked") or 0)     # C is [batch, N/L, M, L]: j = block L + lane
    _, m_, n_ = c_shape(mm)
    strides = [int(np.prod(dims[d + 1:])) for d in range(len(dims))]
    coeffs, const = flat_coeffs(a["maps"][i], g.operands[i].type)
    if coeffs != strides or const != 0:                      # not C in C's own order
        return None
    new_operands, maps = [], []
    reshape = all_ops()["tensor.reshape"]
    made: list[Op] = []
    for k, v in enumerate(g.operands):
        if k == i:
            continue
        if v.type.dtype != c_type.dtype:
            return None
        cs, c0 = flat_coeffs(a["maps"][k], v.type)
        whole = _group_coeff(cs, dims, list(range(len(dims))))
        # read in C's order (a residual; blocked, only one block is C's row-major order), or
        # a scalar
        if whole is not None and (not L or whole == 0 or c_type.shape[1] == 1):
            per = [whole * m_ * n_, whole * n_, whole]
        elif groups is not None:       # a per-row or per-column vector
            per = [_group_coeff(cs, dims, grp) for grp in groups]   # type: ignore[misc]
            if L:   # (batch, block, row, lane) -> (batch, row, column): a block is L columns
                # (with one block, C's block dim has no extent to check)
                if per[3] is None or (c_type.shape[1] > 1 and per[1] != per[3] * L):
                    return None
                per = [per[0], per[2], per[3]]
        else:
            return None
        if any(c is None for c in per) or per[2] not in (0, 1):
            return None
        if v.type.rank != 1:
            view = make_op(reshape, [v], [TensorType((v.type.size,), v.type.dtype)],
                           {"shape": (v.type.size,)}, g.loc, [], [v.name])
            made.append(view)
            v = view.results[0]
        new_operands.append(v)
        maps.append(AffineMap(3, (AffineExpr(tuple(per), c0),)))    # type: ignore[arg-type]
    block = Block()
    mapping: dict[Value, Value] = {body.args[i]: block.add_arg(body.args[i].type, body.args[i].name)}
    for k, arg in enumerate(body.args):
        if k != i:
            mapping[arg] = block.add_arg(arg.type, arg.name)
    block.ops = [clone_op(o, mapping) for o in body.ops]
    attrs = dict(mm.attrs)
    attrs["epilogue_maps"] = tuple(maps)
    attrs["kernel"] = f"{mm.attrs.get('kernel') or 'matmul'}+{a.get('kernel') or 'epilogue'}"
    fused = make_op(mm.opdef, list(mm.operands) + new_operands, [c_type], attrs, mm.loc, [block],
                    [mm.results[0].name])
    made.append(fused)
    back = make_op(reshape, [fused.results[0]], [out], {"shape": out.shape}, g.loc, [],
                   [g.results[0].name])
    made.append(back)
    return made
