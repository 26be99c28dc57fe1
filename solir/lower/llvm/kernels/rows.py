"""Emits a row group (solir/lower/rows.py) as one chunk function over rows:

    for r in [begin, end):                   <- the thread pool's units
        member 1's loops inside row r
        member 2's loops inside row r ...

Members are emitted by the generic loop-nest emitter with dim 0 fixed to r. A row-local value
gets a stack buffer holding one row, addressed through a base shifted back by r rows so that
the member's usual `d0 * row + rest` offsets land inside it. Large buffers outside the group
are prefetched a row ahead (_next_row_prefetches).
"""

from __future__ import annotations

import llvmlite.ir as ir

from solir.ir.core import Op, Value
from solir.lower.llvm.element import ElementEmitter
from solir.lower.llvm.kernels.generic import CHUNK_FN_TYPE, PTR, _GenericEmitter
from solir.lower.llvm.loops import Builder, const64, for_range
from solir.targets import Target

I8 = ir.IntType(8)


def group_members(ops: list[Op], start: int) -> list[Op]:
    gid = ops[start].attrs["row_group"]
    end = start
    while end < len(ops) and ops[end].attrs.get("row_group") == gid:
        end += 1
    return ops[start:end]


def local_values(members: list[Op]) -> set[Value]:
    """Values in row buffers: row-local results and the views of them."""
    local = {m.result for m in members if m.attrs.get("row_local")}
    for m in members:
        if m.name == "kernel.view" and m.operands[0] in local:
            local.add(m.result)
    return local


def loop_members(members: list[Op]) -> list[Op]:
    """The members that are loop nests (the others are views, aliases of their source)."""
    return [m for m in members if m.name != "kernel.view"]


def external_values(members: list[Op]) -> list[Value]:
    """Buffers the group reads or writes that live outside it, in a fixed order."""
    local = local_values(members)
    out: list[Value] = []
    for m in loop_members(members):
        for v in list(m.operands) + [m.result]:
            if v not in local and v not in out:
                out.append(v)
    return out


def emit_row_group(llmod: ir.Module, members: list[Op], target: Target, name: str) -> ir.Function:
    fn = ir.Function(llmod, CHUNK_FN_TYPE, name)
    fn.linkage = "internal"
    bufs, begin, end = fn.args
    bufs.name, begin.name, end.name = "bufs", "begin", "end"
    b = Builder(fn.append_basic_block("entry"))
    ext = external_values(members)
    ptrs: dict[Value, ir.Value] = {}
    for k, v in enumerate(ext):
        slot = b.gep(bufs, [const64(k)], source_etype=PTR, inbounds=True)
        ptrs[v] = b.load(slot, typ=PTR)
    local: dict[Value, tuple[ir.Value, int]] = {}
    for m in loop_members(members):
        if m.attrs.get("row_local"):
            row_bytes = m.result.type.nbytes // m.result.type.shape[0]
            buf = b.alloca(I8, size=ir.Constant(ir.IntType(32), max(row_bytes, 1)), name="row")
            buf.align = 64
            local[m.result] = (buf, row_bytes)
    ahead = _next_row_prefetches(members, target)
    streamed = _streamed_member(members, target, ahead, ext)
    if streamed is not None:       # the output's base alignment decides, once per call
        at, align = streamed
        base = b.ptrtoint(ptrs[members[at].result], ir.IntType(64))
        aligned = b.icmp_unsigned("==", b.and_(base, const64(align - 1)), const64(0))
    in_rows = local_values(members)

    def emit(i: int, row_ptrs: dict[Value, ir.Value], r: ir.Value, stream_align: int = 0) -> None:
        m = members[i]
        em = _GenericEmitter(llmod, m, target, name, fn=fn, builder=b)
        # a streamed output is not prefetched
        em.prefetch = {k: n for k, n in ahead.get(i, {}).items()
                       if not stream_align or k != len(m.operands)}
        em.stream_align = stream_align
        em.emit_row([row_ptrs[v] for v in list(m.operands) + [m.result]], r)
    with for_range(b, begin, end, 1, name="r") as r:
        row_ptrs = dict(ptrs)
        for v, (buf, row_bytes) in local.items():
            # a GEP (not inttoptr) keeps the base's provenance: LLVM then knows row
            # buffers alias nothing else and hoists their loads out of the inner loops
            row_ptrs[v] = b.gep(buf, [b.mul(r, const64(-row_bytes))], source_etype=I8)
            row_ptrs[v].type = PTR      # llvmlite types an alloca i8*; the emitter's are `ptr`
        for i, m in enumerate(members):
            if m.name == "kernel.view":
                if m.operands[0] in in_rows:
                    row_ptrs[m.result] = row_ptrs[m.operands[0]]
                continue
            if streamed is not None and streamed[0] == i:
                with b.if_else(aligned) as (stream, normal):
                    with stream:
                        emit(i, row_ptrs, r, streamed[1])
                    with normal:
                        emit(i, row_ptrs, r)
            else:
                emit(i, row_ptrs, r)
    if streamed is not None:
        # streaming stores are weakly ordered: drain them before the pool reports the chunk
        # done, so that whoever reads the output next sees it
        void = ir.VoidType()
        b.call(ElementEmitter(llmod, b, 1).declare("llvm.x86.sse.sfence", void, []), [])
    b.ret_void()
    return fn


def _streamed_member(members: list[Op], target: Target, ahead: dict[int, dict[int, int]],
                     ext: list[Value]) -> tuple[int, int] | None:
    """(member, alignment) when the group's output can be streamed: what the group reads
    and writes fills L3 (so the output's first rows would not be in cache for a consumer
    anyway), and the member that writes it (the one _next_row_prefetches prefetches it for)
    stores whole vectors along its contiguous last dim, with rows a whole number of vectors
    (no overlapping remainder store, and every row starts aligned when the first does).
    Streaming stores skip the read for ownership of each output line, a third of softmax's
    memory traffic (benchmarks/README.md, session 10, has softmax before and after)."""
    if not target.streaming_stores or sum(v.type.nbytes for v in ext) < target.l3_kib * 1024:
        return None
    for i, plan in ahead.items():
        m = members[i]
        if len(m.operands) not in plan:
            continue
        vec, dims = m.attrs.get("vector"), m.attrs["dims"]
        align = target.vector_bits // 8
        row_bytes = m.result.type.nbytes // max(dims[0], 1)
        if (vec and vec[0] == len(dims) - 1 and len(dims) > 1 and dims[-1] % vec[1] == 0
                and (vec[1] * m.result.type.dtype.itemsize) % align == 0 and row_bytes % align == 0):
            return i, align
    return None


def group_rows_count(members: list[Op]) -> int:
    return int(members[0].attrs["dims"][0])


def _next_row_prefetches(members: list[Op], target: Target) -> dict[int, dict[int, int]]:
    """member -> {operand (or the result, as len(operands)): elements ahead}: the next row of
    each large buffer outside the group, prefetched by the member reading it that computes
    the most (the first of them, unless a later one runs solir's vector math: softmax's exp
    pass, not its max pass), and by the last member writing the result. Between one row's
    first read and the next, the members compute from L1 and nothing else would keep the
    memory system busy: without this, each row's first pass waits for DRAM; spread over the
    longest pass, the next row's lines arrive while the arithmetic runs."""
    from solir.ir.ops.elementwise import LONG_CHAIN_OPS
    big = target.l2_kib * 1024
    local = local_values(members)
    made = {m.result for m in members}
    plan: dict[int, dict[int, int]] = {}
    readers: dict[Value, list[tuple[int, int]]] = {}
    for i, m in enumerate(members):
        if m.name == "kernel.view":
            continue
        for k, v in enumerate(m.operands):
            if v in made or v.type.nbytes < big or not v.type.shape:
                continue
            readers.setdefault(v, []).append((i, k))

    def heavy(i: int) -> bool:
        return bool(members[i].regions) and any(
            bop.name in LONG_CHAIN_OPS for bop in members[i].regions[0].ops)
    for v, uses in readers.items():
        i, k = next(((i, k) for i, k in uses if heavy(i)), uses[0])
        plan.setdefault(i, {})[k] = v.type.size // v.type.shape[0]      # (two rows ahead was slower)
    for i in reversed(range(len(members))):
        if members[i].name == "kernel.view":
            continue
        out = members[i].result
        if out not in local and out.type.nbytes >= big and out.type.shape:
            plan.setdefault(i, {})[len(members[i].operands)] = out.type.size // out.type.shape[0]
            break
    return plan
