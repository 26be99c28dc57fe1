"""The one worklist driver for local rewrites, plus dead-code elimination and cloning."""

from __future__ import annotations

from typing import Callable

from solir.ir.core import Block, Builder, Op, Value, make_op

Rewrite = Callable[[Op, Builder], "list[Value] | None"]


def rewrite_block(block: Block, rewrite: Rewrite, max_rounds: int = 20) -> bool:
    """Apply `rewrite` to every op until nothing changes. A rewrite returns None to leave the
    op alone, or the values replacing its results (new ops go in through the builder)."""
    any_change = False
    for _ in range(max_rounds):
        changed = False
        mapping: dict[Value, Value] = {}
        new_ops: list[Op] = []
        scratch = Block()
        b = Builder(scratch)
        for op in block.ops:
            if mapping:
                op.operands = [mapping.get(v, v) for v in op.operands]
            scratch.ops = []
            b.loc = op.loc
            repl = rewrite(op, b)
            if repl is None:
                new_ops.append(op)
                continue
            new_ops.extend(scratch.ops)
            for old, new in zip(op.results, repl):
                if new is not old:
                    mapping[old] = new
                    if not new.name:
                        new.name = old.name
            changed = True
        block.ops = new_ops
        any_change |= changed
        if not changed:
            break
    return any_change


def dce(block: Block) -> None:
    live: set[Value] = set()
    kept: list[Op] = []
    for op in reversed(block.ops):
        needed = (op.name in ("return", "kernel.yield") or not op.opdef.pure
                  or any(r in live for r in op.results))
        if needed:
            kept.append(op)
            live.update(op.operands)
            for region in op.regions:
                for inner in region.walk():
                    live.update(inner.operands)
    block.ops = kept[::-1]


def clone_op(op: Op, mapping: dict[Value, Value]) -> Op:
    regions = [clone_block(r, mapping) for r in op.regions]
    new = make_op(op.opdef, [mapping.get(v, v) for v in op.operands], [r.type for r in op.results],
                  dict(op.attrs), op.loc, regions, [r.name for r in op.results])
    mapping.update(zip(op.results, new.results))
    return new


def clone_block(block: Block, mapping: dict[Value, Value]) -> Block:
    new = Block()
    for a in block.args:
        mapping[a] = new.add_arg(a.type, a.name)
    new.ops = [clone_op(op, mapping) for op in block.ops]
    return new
