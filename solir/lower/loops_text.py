"""Renders a scheduled kernel module as the loop nests the emitter will produce: what is
parallel, what is vectorized, where reductions accumulate. Readable, not parseable."""

from __future__ import annotations

from solir.ir.core import Func, Module, Op
from solir.ir.printer import Namer, format_attrs
from solir.targets import Target


def render_loops(module: Module, target: Target | None = None) -> str:
    """With `target`, each matmul also says how its emitter will tile it (matmul_plan)."""
    out: list[str] = []
    for f in module.funcs:
        out += _func(f, target)
    return "\n".join(out) + "\n"


def _func(f: Func, target: Target | None) -> list[str]:
    namer = Namer()
    args = ", ".join(f"{namer(a)}: {a.type}" for a in f.args)
    lines = [f"func @{f.name}({args})  // workspace {f.attrs.get('workspace', 0)} bytes"]
    for op in f.body.ops:
        if op.name == "return":
            lines.append("  return " + ", ".join(namer(v) for v in op.operands))
        elif op.name == "kernel.generic":
            lines += _generic(op, namer)
        else:
            attrs = format_attrs({k: v for k, v in op.attrs.items() if k != "value"}, elide=True)
            lines.append(f"  {namer(op.result)} = {op.name} " +
                         ", ".join(namer(v) for v in op.operands) + f" {attrs}  // {op.result.type}")
            if op.name == "kernel.matmul" and target is not None:
                from solir.lower.llvm.kernels.matmul import matmul_plan
                lines.append("    // " + matmul_plan(op, target))
            if op.name == "kernel.matmul" and op.regions:
                steps = [o.name.split(".")[-1] for o in op.regions[0].ops[:-1]
                         if o.name != "tensor.constant"]
                lines.append("    // epilogue on each tile in registers, last K block: "
                             + ", ".join(steps))
    return lines + [""]


def _generic(op: Op, namer: Namer) -> list[str]:
    a = op.attrs
    dims, its, order = a["dims"], a["iterators"], a.get("order") or tuple(range(len(a["dims"])))
    vec = a.get("vector")
    par = a.get("parallel")
    res = namer(op.result)
    where = (a.get("buffers") or ("?",))[0]
    lines = [f"  {res} = kernel \"{a.get('kernel', '')}\"  // {op.result.type} in {where}"]
    pad = "    "
    acc_open = False
    from solir.lower.schedule import border_splits, transposed_reads
    splits = border_splits(op)
    tdim, transposed = transposed_reads(op, splits)
    for d in order:
        if its[d] != "p" and not acc_open:
            comb = a.get("combiner")
            lines.append(f"{pad}acc = identity({comb})")
            acc_open = True
        kind = {"p": "", "r": "reduce ", "s": "scan "}[its[d]]
        notes = []
        if d == par:
            notes.append("parallel across threads")
        if vec and vec[0] == d:
            notes.append(f"vector<{vec[1]}> + scalar tail")
        if d in splits:
            first, last = splits[d]
            notes.append(f"interior {first}..{last + 1} unchecked")
        if d == tdim:
            reads = ", ".join(namer(op.operands[k]) for k in transposed)
            notes.append(f"{vec[1]} at a time, {reads} read as rows and transposed")
        note = f"  // {', '.join(notes)}" if notes else ""
        step = f" step {vec[1]}" if vec and vec[0] == d else ""
        lines.append(f"{pad}{kind}for d{d} in 0..{dims[d]}{step}:{note}")
        pad += "  "
    body = op.regions[0]
    for k, (arg, v) in enumerate(zip(body.args, op.operands)):
        m = a["maps"][k]
        if m is None:
            continue
        idx = str(m).split("->", 1)[1].strip()[1:-1]
        padv = (a.get("pads") or (None,) * len(op.operands))[k]
        guard = f" (out of bounds: {padv})" if padv is not None else ""
        lines.append(f"{pad}{namer(arg)} = {namer(v)}[{idx}]{guard}")
    for inner in body.ops[:-1]:
        attrs = format_attrs({k: v for k, v in inner.attrs.items()}, elide=True)
        lines.append(f"{pad}{namer(inner.result)} = {inner.name} " +
                     ", ".join(namer(v) for v in inner.operands) + (f" {attrs}" if attrs else ""))
    y = namer(body.ops[-1].operands[0])
    out_idx = ", ".join(f"d{d}" for d in range(len(dims)) if its[d] != "r")
    if a.get("combiner") is None:
        lines.append(f"{pad}{res}[{out_idx}] = {y}")
    elif "s" in its:
        lines.append(f"{pad}acc = {a['combiner']}(acc, {y}); {res}[{out_idx}] = acc")
    else:
        lines.append(f"{pad}acc = {a['combiner']}(acc, {y})")
        depth = len([d for d in order if its[d] == "p"])
        lines.append("    " + "  " * depth + f"{res}[{out_idx}] = acc")
    return lines
