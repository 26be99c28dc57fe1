"""Whole-vector rearrangements built from two-input shuffles: a matmul packing A's rows
interleaved, a loop nest reading a tensor across its vectors (generic.py's transposed reads)."""

from __future__ import annotations

import llvmlite.ir as ir


def interleave(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """`r` vectors of `n` lanes interleaved: r vectors whose concatenation holds
    rows[t][q] at q*r + t (a whole r x n block of a packed A panel)."""
    r, n = len(rows), rows[0].type.count
    i32 = ir.IntType(32)
    vs = rows + [ir.Constant(rows[0].type, None)] * ((1 << (r - 1).bit_length()) - r)
    while len(vs) > 1:          # concatenated: row t at t*n
        w = vs[0].type.count
        both = ir.Constant(ir.VectorType(i32, 2 * w), list(range(2 * w)))
        vs = [b.shuffle_vector(vs[i], vs[i + 1], both) for i in range(0, len(vs), 2)]
    whole = vs[0]
    undef = ir.Constant(whole.type, None)
    out = []
    for j in range(r):
        idx = [(g % r) * n + g // r for g in range(j * n, (j + 1) * n)]
        out.append(b.shuffle_vector(whole, undef, ir.Constant(ir.VectorType(i32, n), idx)))
    return out


def transpose(b: ir.IRBuilder, rows: list[ir.Value]) -> list[ir.Value]:
    """The columns of a square block of `n` vectors of `n` lanes (n a power of two): the
    off-diagonal half-blocks swap at each of log2(n) scales, one two-input shuffle per output
    vector each (which x86 lowers to unpck/shuf/vperm2 instructions)."""
    n = len(rows)
    v = list(rows)
    i32 = ir.IntType(32)
    d = n // 2
    while d >= 1:
        lo = ir.Constant(ir.VectorType(i32, n), [j if not j & d else n + j - d for j in range(n)])
        hi = ir.Constant(ir.VectorType(i32, n), [j + d if not j & d else n + j for j in range(n)])
        out = list(v)
        for i in range(n):
            if not i & d:
                out[i] = b.shuffle_vector(v[i], v[i + d], lo)
                out[i + d] = b.shuffle_vector(v[i], v[i + d], hi)
        v, d = out, d // 2
    return v
