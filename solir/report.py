"""What a compilation holds, in numbers: the summary `solir show` and `solir compile` print.

    ops by kind      tensor-level ops of the input module, per registry kind and name
    loop nests       kernels after fusion, and how many of them fuse several ops
    FLOPs            multiply-adds count 2; elementwise ops 1 per element; data movement 0
    parameter bytes  constants baked into the module (weights)
    workspace bytes  the arena the compiled function needs (after memory planning)
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from solir.ir.core import Module, Op
from solir.ir.registry import CONTRACTION, ELEMENTWISE, REDUCTION, get_op


def op_flops(op: Op) -> int:
    """Floating-point operations of one tensor-level op (an estimate for data movement: 0)."""
    od = get_op(op.name)
    if not op.results:
        return 0
    out = op.results[0].type
    if op.name == "tensor.dot_general":
        lhs = op.operands[0].type
        k = int(np.prod([lhs.shape[d] for d in op.attrs.get("lhs_contract", ())], dtype=np.int64))
        return 2 * out.size * k
    if op.name in ("tensor.conv", "tensor.conv_nchwc"):
        rhs = op.operands[1].type
        spec = op.attrs.get("rhs_spec") or tuple(range(rhs.rank))
        # rhs_spec = (out feature, in feature, spatial...): per output, in/groups * window MACs
        window = int(np.prod([rhs.shape[d] for d in spec[1:]], dtype=np.int64))
        return 2 * out.size * window
    if od.kind == REDUCTION:
        return op.operands[0].type.size
    if od.kind == ELEMENTWISE:
        return out.size
    if od.kind == CONTRACTION:
        return 2 * out.size
    return 0


def summarize(module: Module, kernel_module: Module | None = None) -> dict[str, Any]:
    ops = [op for f in module.funcs for op in f.body.ops if op.name != "return"]
    by_kind: dict[str, Counter[str]] = {}
    params = 0
    for op in ops:
        kind = get_op(op.name).kind
        by_kind.setdefault(kind, Counter())[op.name] += 1
        if op.name == "tensor.constant":
            v = np.asarray(op.attrs["value"])
            splat = v.size > 1 and bool((v.ravel() == v.ravel()[0]).all())
            params += v.itemsize if splat else int(v.nbytes)
    out: dict[str, Any] = {
        "ops": len(ops),
        "ops_by_kind": {k: dict(sorted(c.items(), key=lambda kv: -kv[1])) for k, c in sorted(by_kind.items())},
        "flops": int(sum(op_flops(op) for op in ops)),
        "parameter_bytes": params,
    }
    if kernel_module is not None:
        f = kernel_module.funcs[0]
        nests = [op for op in f.body.ops if op.name.startswith("kernel.")]
        fused = [op for op in nests if "+" in str(op.attrs.get("kernel", ""))]   # fuse joins names
        out["kernels"] = len(nests)
        out["fused_kernels"] = len(fused)
        out["workspace_bytes"] = int(f.attrs.get("workspace", 0))
    return out


def onnx_summary(model: Any) -> dict[str, Any]:
    """The same table for an ONNX graph, before translation."""
    g = model.graph
    counts = Counter(n.op_type for n in g.node)
    # initializers as stored in the model (any dtype, without decoding them)
    params = sum(init.ByteSize() for init in g.initializer)
    return {"nodes": len(g.node), "ops_by_kind": {"onnx": dict(counts.most_common())},
            "parameter_bytes": params}


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f} {suffix}{unit}"
    return f"{int(n)} {unit}".rstrip()


def print_summary(s: dict[str, Any], console: Any) -> None:
    from rich.table import Table
    table = Table(title="summary", show_header=True, header_style="bold")
    table.add_column("")
    table.add_column("count / size", justify="right")
    table.add_column("detail")
    for kind, counts in s["ops_by_kind"].items():
        detail = ", ".join(f"{name.removeprefix('tensor.')} {n}" for name, n in list(counts.items())[:8])
        if len(counts) > 8:
            detail += f", ... ({len(counts) - 8} more)"
        table.add_row(f"{kind} ops", str(sum(counts.values())), detail)
    if "kernels" in s:
        table.add_row("loop nests", str(s["kernels"]), f"{s['fused_kernels']} fuse several ops")
    if "flops" in s:
        table.add_row("FLOPs", _human(s["flops"]), "per call")
    table.add_row("parameters", _human(s["parameter_bytes"], "B"), "constants in the module")
    if "workspace_bytes" in s:
        table.add_row("workspace", _human(s["workspace_bytes"], "B"), "arena per call")
    console.print(table)
