"""plan-memory: place every intermediate buffer in one workspace arena, reusing space once a
buffer is dead. Offsets are fixed at compile time, so a call allocates nothing."""

from __future__ import annotations

from solir.ir.core import Module, Value
from solir.ir.ops.kernel import LOOP_NESTS
from solir.lower.bufferize import storage_root
from solir.lower.pipeline import PassContext, pass_

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@pass_("plan-memory")
def plan_memory(module: Module, ctx: PassContext) -> Module:
    for f in module.funcs:
        ops = f.body.ops
        outputs = {storage_root(v): k for k, v in enumerate(f.results)}
        # a row group (rows.py) runs its members interleaved, row by row: treat the group as
        # one step, so its buffers stay live to its end and none is reused inside it
        start, end = list(range(len(ops))), list(range(len(ops)))
        for i, op in enumerate(ops):
            g = op.attrs.get("row_group")
            if g is not None and i > 0 and ops[i - 1].attrs.get("row_group") == g:
                start[i] = start[i - 1]
        for i in reversed(range(len(ops) - 1)):
            g = ops[i].attrs.get("row_group")
            if g is not None and ops[i + 1].attrs.get("row_group") == g:
                end[i] = end[i + 1]
        last_use: dict[Value, int] = {}
        for i, op in enumerate(ops):
            for v in op.operands:
                last_use[storage_root(v)] = end[i]
        free: list[tuple[int, int]] = []     # (offset, size), sorted by offset
        live: list[tuple[int, Value, int, int]] = []   # (last use, value, offset, size)
        top = 0
        for i, op in enumerate(ops):
            # release buffers whose last reader ran before this op
            still = []
            for last, v, off, size in live:
                if last < start[i]:
                    free.append((off, size))
                else:
                    still.append((last, v, off, size))
            live = still
            free = _coalesce(free)
            if op.name not in LOOP_NESTS:
                continue
            placements = []
            for r in op.results:
                if op.attrs.get("row_local"):       # lives in its row group's row buffer
                    placements.append("row")
                    continue
                if r in outputs:
                    placements.append(f"out{outputs[r]}")
                    continue
                size = _align(max(r.type.nbytes, 1))
                off = _take(free, size)
                if off is None:
                    off, top = top, top + size
                live.append((max(last_use.get(r, i), end[i]), r, off, size))
                placements.append(f"workspace+{off}")
            op.attrs["buffers"] = tuple(placements)
        f.attrs["workspace"] = top
    return module


def _take(free: list[tuple[int, int]], size: int) -> int | None:
    best = None
    for k, (off, s) in enumerate(free):
        if s >= size and (best is None or s < free[best][1]):
            best = k
    if best is None:
        return None
    off, s = free.pop(best)
    if s > size:
        free.append((off + size, s - size))
    return off


def _coalesce(free: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, size in sorted(free):
        if out and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + size)
        else:
            out.append((off, size))
    return out
