"""fuse: splice producer kernels into their consumers.

A consumer reads its input i at `map_i(ivs)`; a producer computes element `e` of its result
from its own inputs at `pmap_k(e)`. Fusing substitutes e := map_i(ivs), so the consumer reads
the producer's inputs at `pmap_k(map_i(ivs))` and runs the producer's body inline. That one
rule folds broadcasts, transposes, slices and elementwise chains into each other and into
reductions. A producer is fused when nothing is recomputed (one consumer reading each of its
elements once) or when it only moves data (broadcast, convert, iota), where recomputing
beats a round trip through memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from solir.ir.attrs import AffineExpr, AffineMap
from solir.ir.core import Block, Builder, Module, Op, Value, make_op, users
from solir.ir.registry import all_ops
from solir.ir.types import TensorType
from solir.lower.pipeline import PassContext, pass_
from solir.lower.rewrite import clone_op, dce

MAX_BODY_OPS = 256
_MOVE_ONLY = {"kernel.yield", "kernel.index", "kernel.read", "tensor.constant", "tensor.convert",
              "tensor.select"}


def _is_generic(v: Value) -> bool:
    return getattr(v.owner, "name", "") == "kernel.generic"


def _domain(op: Op) -> int:
    return int(np.prod(op.attrs["dims"], dtype=np.int64))


def moves_data_only(op: Op) -> bool:
    """True when the body does no floating-point math (pure data movement / index math)."""
    for inner in op.regions[0].ops:
        if inner.name in _MOVE_ONLY:
            continue
        if all(not r.type.dtype.is_float for r in inner.results):
            continue
        return False
    return True


def _pads(op: Op) -> tuple[Any, ...]:
    return tuple(op.attrs.get("pads") or (None,) * len(op.operands))


def can_fuse(producer: Op, consumer: Op, i: int, n_users: int, returned: bool) -> bool:
    a = producer.attrs
    if len(producer.results) != 1 or set(a["iterators"]) - {"p"}:
        return False
    m = consumer.attrs["maps"][i]
    if m is None or m.divides or _pads(consumer)[i] is not None:
        return False
    if len(producer.regions[0].ops) + len(consumer.regions[0].ops) > MAX_BODY_OPS:
        return False
    if moves_data_only(producer):
        return True
    reads_once = _domain(consumer) <= _domain(producer) and (
        not consumer.attrs.get("combiner") or _reads_each_once(consumer, i))
    return n_users == 1 and not returned and reads_once


def _reads_each_once(consumer: Op, i: int) -> bool:
    """A reduction consumer reads each producer element once when its map touches every dim."""
    m = consumer.attrs["maps"][i]
    touched = {k for e in m.exprs for k, c in enumerate(e.coeffs) if c}
    return touched == set(range(len(consumer.attrs["dims"])))


def fuse_into(consumer: Op, i: int, producer: Op) -> Op:
    """A new generic computing `consumer` with input i replaced by producer's body."""
    cmaps, cpads = list(consumer.attrs["maps"]), list(_pads(consumer))
    pmaps, ppads = list(producer.attrs["maps"]), list(_pads(producer))
    via: AffineMap = cmaps[i]
    keep = [j for j in range(len(consumer.operands)) if j != i]
    inputs = [consumer.operands[j] for j in keep] + list(producer.operands)
    maps = [cmaps[j] for j in keep] + [pm.compose(via) if pm is not None else None for pm in pmaps]
    pads = [cpads[j] for j in keep] + ppads
    c_pos = {j: n for n, j in enumerate(keep)}
    p_pos = {k: len(keep) + k for k in range(len(producer.operands))}

    block = Block()
    args = [block.add_arg(v.type.__class__((), v.type.dtype), src.name)
            for v, src in zip(inputs, [consumer.regions[0].args[j] for j in keep]
                              + list(producer.regions[0].args))]
    b = Builder(block, consumer.loc)
    mapping: dict[Value, Value] = {}
    pbody = producer.regions[0]
    for k, a in enumerate(pbody.args):
        mapping[a] = args[p_pos[k]]
    index_cache: dict[int, Value] = {}
    for op in pbody.ops[:-1]:
        if op.name == "kernel.index":
            mapping[op.result] = _index_expr(b, via, op.attrs["dim"], index_cache)
            continue
        new = clone_op(op, mapping)
        if op.name == "kernel.read":
            new.attrs["input"] = p_pos[op.attrs["input"]]
        block.ops.append(new)
    produced = mapping[pbody.ops[-1].operands[0]]
    cbody = consumer.regions[0]
    for j, a in enumerate(cbody.args):
        mapping[a] = produced if j == i else args[c_pos[j]]
    for op in cbody.ops:
        new = clone_op(op, mapping)
        if op.name == "kernel.read":
            new.attrs["input"] = c_pos[op.attrs["input"]]
        block.ops.append(new)
    attrs = _with_inputs(consumer.attrs, maps, pads)
    attrs["kernel"] = _join_names(producer.attrs.get("kernel", ""), consumer.attrs.get("kernel", ""))
    return make_op(consumer.opdef, inputs, [r.type for r in consumer.results], attrs,
                   consumer.loc, [block], [r.name for r in consumer.results])


def _with_inputs(attrs: dict[str, Any], maps: list[Any], pads: list[Any]) -> dict[str, Any]:
    """A generic's attributes with new per-input maps and pads (pads omitted when all None)."""
    out = dict(attrs)
    out["maps"] = tuple(maps)
    out.pop("pads", None)
    if any(p is not None for p in pads):
        out["pads"] = tuple(pads)
    return out


def _join_names(first: str, second: str) -> str:
    parts: list[str] = []
    for p in (first.split("+") + second.split("+")):
        if p and p not in parts:
            parts.append(p)
    name = "+".join(parts)
    return name if len(name) <= 60 else name[:57] + "..."


def _index_expr(b: Builder, via: AffineMap, dim: int, cache: dict[int, Value]) -> Value:
    """The producer's loop index `dim`, as i64 arithmetic on the consumer's loop indices."""
    e = via.exprs[dim]

    def const(v: int) -> Value:
        return b.op("tensor.constant", [], {"value": np.array(v, np.int64)}).result

    total: Value | None = None
    for k, c in enumerate(e.coeffs):
        if not c:
            continue
        if k not in cache:
            cache[k] = b.op("kernel.index", [], {"dim": k}).result
        term = cache[k] if c == 1 else b("tensor.mul", cache[k], const(c))
        total = term if total is None else b("tensor.add", total, term)
    if total is None:
        return const(e.const)
    return b("tensor.add", total, const(e.const)) if e.const else total


def _through_unit_reshape(op: Op, i: int, uses: dict[Value, list[Op]],
                          returned: set[Value]) -> tuple[Op, Value] | None:
    """When input i of `op` is a reshape that only adds or drops unit dims ([c, h, w] as
    [1, c, h, w]) of a generic's result, read by `op` alone: `op` as if it read the generic's
    result directly (its map i rewritten to the generic's dims), and that result. A unit
    dim's index is 0, so the rewrite drops the map's expressions for the view's unit dims and
    reads 0 along the source's."""
    v = op.operands[i]
    owner = v.owner
    if getattr(owner, "name", "") != "tensor.reshape" or not _is_generic(owner.operands[0]):
        return None
    src = owner.operands[0]
    if v in returned or len({id(u) for u in uses.get(v, [])}) != 1:
        return None
    m = op.attrs["maps"][i]
    if m is None or m.divides:
        return None
    s_shape, d_shape = src.type.shape, v.type.shape
    if [n for n in s_shape if n != 1] != [n for n in d_shape if n != 1]:
        return None
    kept = iter(e for e, n in zip(m.exprs, d_shape) if n != 1)
    exprs = tuple(AffineExpr.constant(m.n_dims, 0) if n == 1 else next(kept) for n in s_shape)
    maps = list(op.attrs["maps"])
    maps[i] = AffineMap(m.n_dims, exprs)
    operands = list(op.operands)
    operands[i] = src
    view = make_op(op.opdef, operands, [r.type for r in op.results],
                   _with_inputs(op.attrs, maps, list(_pads(op))), op.loc, op.regions,
                   [r.name for r in op.results])
    return view, src


def fuse_block(block: Block) -> None:
    returned = set(block.ops[-1].operands)
    pos = len(block.ops) - 1
    while pos >= 0:
        op = block.ops[pos]
        if op.name != "kernel.generic":
            pos -= 1
            continue
        uses = users(block)
        fused = None
        for i, v in enumerate(op.operands):
            consumer = op
            if not _is_generic(v):
                seen_through = _through_unit_reshape(op, i, uses, returned)
                if seen_through is None:
                    continue
                consumer, v = seen_through
            n_users = len({id(u) for u in uses.get(v, [])})
            if can_fuse(v.owner, consumer, i, n_users, v in returned):  # type: ignore[arg-type]
                fused = fuse_into(consumer, i, v.owner)  # type: ignore[arg-type]
                break
        if fused is None:
            pos -= 1
            continue
        block.ops[pos] = fused
        mapping = dict(zip(op.results, fused.results))
        for later in block.ops[pos + 1:]:
            later.operands = [mapping.get(v, v) for v in later.operands]
        dce(block)
        returned = set(block.ops[-1].operands)
        pos = block.ops.index(fused)


@pass_("fuse")
def fuse(module: Module, ctx: PassContext) -> Module:
    """Merge chains of elementwise/broadcast kernels, and reductions' producers, into one."""
    if not ctx.options.fuse:
        return module
    for f in module.funcs:
        fuse_block(f.body)
    return module


@pass_("canonicalize-kernels")
def canonicalize_kernels(module: Module, ctx: PassContext) -> Module:
    """Inside each kernel: merge duplicate inputs, drop unused ones, share equal body ops."""
    for f in module.funcs:
        mapping: dict[Value, Value] = {}
        ops: list[Op] = []
        for op in f.body.ops:
            op.operands = [mapping.get(v, v) for v in op.operands]
            if op.name != "kernel.generic":
                ops.append(op)
                continue
            made = _coalesce(_drop_unit_dims(_tidy_generic(op)))
            out = op.results[0]
            if made[-1].results[0].type != out.type:     # reshaped: viewed back
                made.append(_view(made[-1].results[0], out.type.shape, op.loc, out.name))
            ops += made
            mapping.update(zip(op.results, made[-1].results))
        f.body.ops = ops
        dce(f.body)
    return module


def _view(v: Value, shape: tuple[int, ...], loc: Any, name: str) -> Op:
    """`v` reshaped (a view: no copy)."""
    return make_op(all_ops()["tensor.reshape"], [v], [TensorType(tuple(shape), v.type.dtype)],
                   {"shape": tuple(shape)}, loc, [], [name])


def _redimensioned(op: Op, operands: list[Value], dims: list[int], maps: list[Any]) -> Op:
    """An all-parallel generic `op` over new `dims` (its result shaped like them)."""
    attrs = {**op.attrs, "dims": tuple(dims), "maps": tuple(maps), "iterators": "p" * len(dims)}
    return make_op(op.opdef, operands, [TensorType(tuple(dims), op.results[0].type.dtype)],
                   attrs, op.loc, [op.regions[0]], [op.results[0].name])


def _drop_unit_dims(op: Op) -> Op:
    """An elementwise kernel over [1, c, h, w] runs over [c, h, w] (a dim of extent 1 only
    ever has index 0; canonicalize_kernels views the result back): its first loop is then
    the channels, which threads split and group-rows runs a channel at a time. Its operands
    are read as before."""
    a = op.attrs
    dims = list(a["dims"])
    keep = [k for k, n in enumerate(dims) if n != 1]
    if (set(a["iterators"]) != {"p"} or len(keep) == len(dims) or not keep
            or any(o.name == "kernel.index" for o in op.regions[0].ops)):
        return op
    maps = [None if m is None else AffineMap(len(keep), tuple(
        AffineExpr(tuple(e.coeffs[k] for k in keep), e.const, e.div) for e in m.exprs))
        for m in a["maps"]]
    return _redimensioned(op, list(op.operands), [dims[k] for k in keep], maps)


SHORT_ROW = 256     # an elementwise kernel's innermost extent below this is merged outward


def _coalesce(op: Op) -> list[Op]:
    """An elementwise kernel whose innermost dims are short and contiguous in every operand
    runs over them as one dim: [1, 64, 56, 56] becomes [1, 64, 3136], so its vector loop has
    3136 elements and one tail instead of 56 and a tail per image row (and a 7x7 image gets
    vectors at all). Operands are viewed merged (tensor.reshape, no copy); canonicalize_kernels
    views the result back. Returns the ops replacing `op`, the kernel last ([op] when nothing
    merges)."""
    a = op.attrs
    dims = list(a["dims"])
    if (set(a["iterators"]) != {"p"} or len(dims) < 2 or a.get("pads")
            or any(o.name in ("kernel.index", "kernel.read") for o in op.regions[0].ops)):
        return [op]
    maps = list(a["maps"])
    shapes = [list(v.type.shape) for v in op.operands]
    while len(dims) >= 2 and dims[-1] < SHORT_ROW:
        d = len(dims) - 2
        plan = [_merge_at(m, shape, d, dims[d + 1]) for m, shape in zip(maps, shapes)]
        if any(p is False for p in plan):
            break
        for k, i in enumerate(plan):
            exprs = list(maps[k].exprs)
            if i is not None:
                shapes[k][i:i + 2] = [shapes[k][i] * shapes[k][i + 1]]
                del exprs[i + 1]
            exprs = [AffineExpr(e.coeffs[:d + 1] + e.coeffs[d + 2:], e.const, e.div) for e in exprs]
            maps[k] = AffineMap(len(dims) - 1, tuple(exprs))
        dims[d:d + 2] = [dims[d] * dims[d + 1]]
    if len(dims) == len(a["dims"]):
        return [op]
    made: list[Op] = []
    operands = []
    for v, shape in zip(op.operands, shapes):
        if tuple(shape) == v.type.shape:
            operands.append(v)
            continue
        made.append(_view(v, shape, op.loc, v.name))
        operands.append(made[-1].results[0])
    return made + [_redimensioned(op, operands, dims, maps)]


def _merge_at(m: AffineMap, shape: list[int], d: int, inner: int) -> int | None | bool:
    """How an operand reads domain dims d and d+1 (extent `inner`): None if it reads neither,
    the index i of its own dims (i, i+1) if those are exactly (d, d+1) with dim i+1 as long
    as the domain's, False if merging the two would make its access non-affine."""
    uses = [i for i, e in enumerate(m.exprs) if e.coeffs[d] or e.coeffs[d + 1]]
    if not uses:
        return None
    unit = lambda e, k: (e.const == 0 and e.div == 1    # noqa: E731
                         and all(c == (1 if j == k else 0) for j, c in enumerate(e.coeffs)))
    if len(uses) != 2 or uses[1] != uses[0] + 1:
        return False
    i = uses[0]
    if unit(m.exprs[i], d) and unit(m.exprs[i + 1], d + 1) and shape[i + 1] == inner:
        return i
    return False


def _splat_value(v: Value) -> np.ndarray | None:
    """The single value of a constant whose elements are all equal, as a 0-d array."""
    owner = v.owner
    if getattr(owner, "name", "") != "tensor.constant":
        return None
    arr = owner.attrs["value"]      # type: ignore[union-attr]
    if arr.size == 0:
        return None
    first = arr.reshape(-1)[:1]
    if not np.array_equal(arr, np.broadcast_to(first.reshape(()), arr.shape), equal_nan=True):
        return None
    return first.reshape(())


def _tidy_generic(op: Op) -> Op:
    body = op.regions[0]
    read_inputs = {o.attrs["input"] for o in body.ops if o.name == "kernel.read"}
    used = {v for o in body.ops for v in o.operands}
    maps, pads = op.attrs["maps"], _pads(op)
    key_to_new: dict[Any, int] = {}
    new_inputs, new_maps, new_pads, new_args = [], [], [], []
    arg_map: dict[Value, Value] = {}
    input_map: dict[int, int] = {}
    block = Block()
    splats: list[Op] = []
    for j, (v, m, p, a) in enumerate(zip(op.operands, maps, pads, body.args)):
        if a not in used and j not in read_inputs:
            continue
        value = _splat_value(v)
        if value is not None and m is not None and p is None and j not in read_inputs:
            # a constant with one value everywhere becomes a constant in the body
            const = make_op(all_ops()["tensor.constant"], [], [a.type], {"value": value}, op.loc,
                            [], [a.name])
            splats.append(const)
            arg_map[a] = const.results[0]
            continue
        key = (id(v), str(m), repr(p)) if j not in read_inputs else ("read", j)
        if key in key_to_new:
            arg_map[a] = new_args[key_to_new[key]]
            input_map[j] = key_to_new[key]
            continue
        key_to_new[key] = len(new_inputs)
        input_map[j] = len(new_inputs)
        new_inputs.append(v)
        new_maps.append(m)
        new_pads.append(p)
        new_args.append(block.add_arg(a.type, a.name))
        arg_map[a] = new_args[-1]
    # share equal body ops (index computations repeated by fusion)
    seen: dict[Any, Value] = {}
    block.ops.extend(splats)
    for inner in body.ops:
        new = clone_op(inner, arg_map)
        if inner.name == "kernel.read":
            new.attrs["input"] = input_map[inner.attrs["input"]]
        key = None
        if inner.results and inner.name != "kernel.read":
            attrs = tuple((k, repr(v.tolist() if isinstance(v, np.ndarray) else v))
                          for k, v in sorted(new.attrs.items()))
            key = (inner.name, tuple(id(v) for v in new.operands), attrs)
        if key is not None and key in seen:
            arg_map[inner.results[0]] = seen[key]
            continue
        if key is not None:
            seen[key] = new.results[0]
        block.ops.append(new)
    dce(block)
    attrs = _with_inputs(op.attrs, new_maps, new_pads)
    return make_op(op.opdef, new_inputs, [r.type for r in op.results], attrs, op.loc, [block],
                   [r.name for r in op.results])

