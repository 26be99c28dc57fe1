"""Loops as context managers, so emitters read like the loops they emit."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import llvmlite.ir as ir

I64 = ir.IntType(64)


def const64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


@contextmanager
def for_range(b: ir.IRBuilder, lo: ir.Value | int, hi: ir.Value | int, step: int = 1,
              name: str = "i") -> Iterator[ir.Value]:
    """`for (name = lo; name < hi; name += step)`; creates name.cond/.body/.end blocks."""
    lo = const64(lo) if isinstance(lo, int) else lo
    hi = const64(hi) if isinstance(hi, int) else hi
    fn = b.block.function
    pre = b.block
    cond = fn.append_basic_block(f"{name}.cond")
    body = fn.append_basic_block(f"{name}.body")
    end = fn.append_basic_block(f"{name}.end")
    b.branch(cond)
    b.position_at_end(cond)
    iv = b.phi(I64, name=name)
    iv.add_incoming(lo, pre)
    b.cbranch(b.icmp_signed("<", iv, hi), body, end)
    b.position_at_end(body)
    yield iv
    nxt = b.add(iv, const64(step), name=f"{name}.next")
    iv.add_incoming(nxt, b.block)
    b.branch(cond)
    b.position_at_end(end)


def carried_loop(b: ir.IRBuilder, lo: ir.Value, hi: ir.Value, step: int, init: list[ir.Value],
                  body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]], name: str) -> list[ir.Value]:
    """for (iv = lo; iv + step <= hi; iv += step) vals = body(iv, vals); returns the final vals.
    (Iterates while a whole step fits; callers handle the remainder.)"""
    fn = b.block.function
    pre = b.block
    cond = fn.append_basic_block(f"{name}.cond")
    body_bb = fn.append_basic_block(f"{name}.body")
    end = fn.append_basic_block(f"{name}.end")
    b.branch(cond)
    b.position_at_end(cond)
    iv = b.phi(I64, name=name)
    iv.add_incoming(lo, pre)
    phis = []
    for k, v in enumerate(init):
        p = b.phi(v.type, name=f"{name}.acc{k}")
        p.add_incoming(v, pre)
        phis.append(p)
    b.cbranch(b.icmp_signed("<=", b.add(iv, const64(step)), hi), body_bb, end)
    b.position_at_end(body_bb)
    new = body(iv, list(phis))
    iv.add_incoming(b.add(iv, const64(step)), b.block)
    for p, v in zip(phis, new):
        p.add_incoming(v, b.block)
    b.branch(cond)
    b.position_at_end(end)
    return list(phis)
