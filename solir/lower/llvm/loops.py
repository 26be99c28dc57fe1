"""Loops as context managers, so emitters read like the loops they emit."""

from __future__ import annotations

import operator
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import llvmlite.ir as ir

I64 = ir.IntType(64)


def const64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def as64(v: ir.Value | int) -> ir.Value:
    """An i64 value: a Python int as a constant, a value as it is."""
    return const64(v) if isinstance(v, int) else v


def _int(v: ir.Value) -> int | None:
    """An integer constant's value (None for anything else)."""
    if isinstance(v, ir.Constant) and isinstance(v.type, ir.IntType) and isinstance(v.constant, int):
        return v.constant
    return None


class Builder(ir.IRBuilder):
    """llvmlite's builder, folding the integer arithmetic of index expressions as it goes:
    an emitter writes `row * ldc + v * lanes` uniformly, and where row or v is 0 or 1, or
    both sides are constants, no instruction is made. Tile code is mostly such expressions,
    and each one made costs printing, parsing and LLVM's simplification passes at every
    cold compile."""

    def _fold(self, lhs: ir.Value, rhs: ir.Value, fn: Callable[[int, int], int], unit: int,
              commutative: bool = True, absorbing: int | None = None) -> ir.Value | None:
        """lhs fn rhs where it needs no instruction: both constants (folded, wrapped as LLVM
        would), a `unit` operand (the other one; on the left only if `commutative`), an
        `absorbing` one (x * 0); else None."""
        a, c = _int(lhs), _int(rhs)
        if a is not None and c is not None and lhs.type == rhs.type:
            return ir.Constant(lhs.type, _wrap(fn(a, c), lhs.type))
        if c == unit:
            return lhs
        if commutative and a == unit:
            return rhs
        if absorbing is not None and absorbing in (a, c):
            return ir.Constant(lhs.type, absorbing)
        return None

    def add(self, lhs: ir.Value, rhs: ir.Value, name: str = "", flags: Sequence[str] = ()) -> ir.Value:
        v = self._fold(lhs, rhs, operator.add, 0)
        return super().add(lhs, rhs, name, flags) if v is None else v

    def sub(self, lhs: ir.Value, rhs: ir.Value, name: str = "", flags: Sequence[str] = ()) -> ir.Value:
        v = self._fold(lhs, rhs, operator.sub, 0, commutative=False)
        return super().sub(lhs, rhs, name, flags) if v is None else v

    def mul(self, lhs: ir.Value, rhs: ir.Value, name: str = "", flags: Sequence[str] = ()) -> ir.Value:
        v = self._fold(lhs, rhs, operator.mul, 1, absorbing=0)
        return super().mul(lhs, rhs, name, flags) if v is None else v


def _wrap(v: int, ty: ir.IntType) -> int:
    """v in the type's two's complement range, as LLVM's constant folding would wrap it."""
    bits = ty.width
    v &= (1 << bits) - 1
    return v - (1 << bits) if bits > 1 and v >= 1 << (bits - 1) else v


class Loop:
    """An open loop: its induction variable, its carried values (phis; after the loop, their
    final values) and `next`, the values the body carries to the next iteration."""

    def __init__(self, iv: ir.Value, vals: list[ir.Value]):
        self.iv, self.vals = iv, vals
        self.next: list[ir.Value] = vals


@contextmanager
def loop(b: ir.IRBuilder, lo: ir.Value | int, hi: ir.Value | int, step: int = 1, name: str = "i",
         init: Sequence[ir.Value] = (), whole_steps: bool = False,
         vectorize: bool = True, unroll: bool = True) -> Iterator[Loop]:
    """`for (iv = lo; iv < hi; iv += step)` (or `iv + step <= hi` with whole_steps) with
    values carried from one iteration to the next; creates name.cond/.body/.end blocks.
    `vectorize=False` tells LLVM's loop vectorizer to leave the loop alone (where it would
    otherwise turn strided stores into scatters, which are slow on every x86 we target);
    `unroll=False` keeps a cold loop (an edge, a rare layout) one small loop, not unrolled
    copies that cost compile time (loop strength reduction is superlinear in their uses)."""
    lo, hi = as64(lo), as64(hi)
    fn = b.block.function
    pre = b.block
    cond = fn.append_basic_block(f"{name}.cond")
    body = fn.append_basic_block(f"{name}.body")
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
    go = b.icmp_signed("<=", b.add(iv, const64(step)), hi) if whole_steps else b.icmp_signed("<", iv, hi)
    b.cbranch(go, body, end)
    b.position_at_end(body)
    lp = Loop(iv, phis)
    yield lp
    iv.add_incoming(b.add(iv, const64(step), name=f"{name}.next"), b.block)
    for p, v in zip(phis, lp.next):
        p.add_incoming(v, b.block)
    latch = b.branch(cond)
    if not (vectorize and unroll):
        latch.set_metadata("llvm.loop", _loop_hints(b.module, vectorize, unroll))
    b.position_at_end(end)
    lp.vals = phis


def _loop_hints(mod: ir.Module, vectorize: bool, unroll: bool) -> ir.MDValue:
    """A loop ID (a node whose first operand is itself) that disables vectorization and/or
    unrolling."""
    ident = ir.MDValue(mod, [], name=str(len(mod.metadata)))
    hints = []
    if not vectorize:
        hints.append(mod.add_metadata([ir.MetaDataString(mod, "llvm.loop.vectorize.enable"),
                                       ir.Constant(ir.IntType(1), 0)]))
    if not unroll:
        hints.append(mod.add_metadata([ir.MetaDataString(mod, "llvm.loop.unroll.disable")]))
    ident.operands = (ident, *hints)
    return ident


@contextmanager
def for_range(b: ir.IRBuilder, lo: ir.Value | int, hi: ir.Value | int, step: int = 1,
              name: str = "i", vectorize: bool = True, unroll: bool = True) -> Iterator[ir.Value]:
    """`for (name = lo; name < hi; name += step)`."""
    with loop(b, lo, hi, step, name, vectorize=vectorize, unroll=unroll) as lp:
        yield lp.iv


def carried_loop(b: ir.IRBuilder, lo: ir.Value, hi: ir.Value, step: int, init: list[ir.Value],
                 body: Callable[[ir.Value, list[ir.Value]], list[ir.Value]], name: str) -> list[ir.Value]:
    """for (iv = lo; iv + step <= hi; iv += step) vals = body(iv, vals); returns the final vals.
    (Iterates while a whole step fits; callers handle the remainder.)"""
    with loop(b, lo, hi, step, name, init, whole_steps=True) as lp:
        lp.next = body(lp.iv, list(lp.vals))
    return lp.vals
