"""group-rows: run consecutive loop nests that share their outer row loop as one kernel, a row
at a time (softmax, layernorm, any reduce-then-broadcast chain along the last axes).

Unfused, softmax is five passes over a 16 MiB matrix: max, exp, sum, divide, each reading or
writing it from memory. Grouped, the outer loop runs once over the rows and each member runs
its inner loops on one row while it is in L1; values made and used only inside the group
(`row_local`) live in a per-row stack buffer instead of the workspace, so they never reach
memory at all. Results are unchanged: every member computes each element exactly as before
(same loop order inside a row, same accumulation order).

A member qualifies when its outermost loop is dim 0 over the same R rows, parallel, not the
vector dim (a 1-d member loses its vector: it does one element per row), and it reads values
made earlier in the group only at its own row (map expression 0 is exactly d0 and no other
expression uses d0). A reshape that keeps the rows (`kernel.view` with the same dim 0) may
sit between members: it stays an alias, of the row buffer when its source is row-local.
"""

from __future__ import annotations

from solir.ir.core import Func, Module, Op, Value
from solir.lower.pipeline import PassContext, pass_

MAX_ROW_BYTES = 1 << 16          # row-local buffers per row (stack) above this: not grouped


def _rows(op: Op) -> int | None:
    a = op.attrs
    if op.name != "kernel.generic" or not a["dims"] or a["iterators"][0] != "p":
        return None
    order = a.get("order") or tuple(range(len(a["dims"])))
    if order[0] != 0:
        return None
    vec = a.get("vector")
    if vec and vec[0] == 0 and len(a["dims"]) > 1:
        return None
    return int(a["dims"][0])


def _reads_own_row(op: Op, k: int) -> bool:
    m = op.attrs["maps"][k]
    if m is None or m.divides or not m.exprs:
        return False
    first = m.exprs[0]
    if first.const != 0 or list(first.coeffs) != [1] + [0] * (m.n_dims - 1):
        return False
    return all(e.coeffs[0] == 0 for e in m.exprs[1:])


@pass_("group-rows")
def group_rows(module: Module, ctx: PassContext) -> Module:
    for f in module.funcs:
        _group(f)
    return module


def _row_view(op: Op, rows: int) -> bool:
    """A reshape that keeps dim 0 (the rows): each row of the view is the same row of its
    source, so a member may read a value made earlier in the group through it."""
    if op.name != "kernel.view":
        return False
    src, out = op.operands[0].type.shape, op.result.type.shape
    return bool(src) and bool(out) and src[0] == out[0] == rows


def _group(f: Func) -> None:
    ops = f.body.ops
    users: dict[Value, list[Op]] = {}
    for op in ops:
        for v in op.operands:
            users.setdefault(v, []).append(op)
    gid = 0
    i = 0
    while i < len(ops):
        rows = _rows(ops[i])
        if rows is None or rows < 2:
            i += 1
            continue
        members = [ops[i]]
        made = {ops[i].result}
        j = i + 1
        while j < len(ops):
            nxt = ops[j]
            if nxt.name == "tensor.constant":      # a member's data (BN's scale): hoisted
                ops.insert(i, ops.pop(j))
                i += 1
                j += 1
                continue
            if _row_view(nxt, rows) and nxt.operands[0] in made:
                members.append(nxt)          # transparent: emitted as an alias of its source
            elif _rows(nxt) == rows and all(v not in made or _reads_own_row(nxt, k)
                                            for k, v in enumerate(nxt.operands)):
                members.append(nxt)
            else:
                break
            made.add(nxt.result)
            j += 1
        while members[-1].name == "kernel.view":     # views after the last member stay out
            members.pop()
            j -= 1
        if len(members) > 1:
            _mark(members, users, gid, any(m.attrs.get("parallel") is not None for m in members))
            gid += 1
        i = j


def _mark(members: list[Op], users: dict[Value, list[Op]], gid: int, parallel: bool) -> None:
    inside = {id(m) for m in members}

    def used_inside_only(v: Value) -> bool:
        return all(id(u) in inside and (u.name != "kernel.view" or used_inside_only(u.result))
                   for u in users.get(v, [])) and bool(users.get(v))

    for m in members:
        m.attrs["row_group"] = gid
        if m.name == "kernel.view":
            continue
        m.attrs["row_parallel"] = parallel
        m.attrs.pop("parallel", None)
        vec = m.attrs.get("vector")
        if vec and vec[0] == 0:
            m.attrs.pop("vector", None)
        out = m.result
        row_bytes = out.type.nbytes // max(out.type.shape[0], 1)
        if used_inside_only(out) and row_bytes <= MAX_ROW_BYTES:
            m.attrs["row_local"] = True
