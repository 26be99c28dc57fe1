"""Loops as context managers, so emitters read like the loops they emit."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

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
