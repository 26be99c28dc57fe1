"""The numpy reference interpreter: runs any tensor-level module (including fused
kernel.generic ops) op by op. It is the oracle frontends, passes and generated code are
tested against."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from solir.errors import ArgumentError, UnsupportedOpError
from solir.ir.core import Block, Func, Module, Op, Value


def run_module(module: Module, args: Sequence[Any], func: str | None = None) -> list[np.ndarray]:
    f = module.func(func)
    if len(args) != len(f.args):
        raise ArgumentError(f"@{f.name} takes {len(f.args)} arguments, got {len(args)}")
    arrays = []
    for a, v in zip(args, f.args):
        arr = np.asarray(a)
        if arr.shape != v.type.shape or arr.dtype != v.type.dtype.numpy:
            raise ArgumentError(f"argument %{v.name} expects {v.type}, got "
                                f"{arr.dtype}{list(arr.shape)}")
        arrays.append(arr)
    return run_block(f.body, arrays, {})


def run_func(f: Func, args: Sequence[np.ndarray]) -> list[np.ndarray]:
    return run_block(f.body, list(args), {})


def run_block(block: Block, args: Sequence[Any], ctx: dict[str, Any]) -> list[Any]:
    env: dict[Value, Any] = dict(zip(block.args, args))
    for op in block.ops:
        if op.name in ("return", "kernel.yield"):
            return [env[v] for v in op.operands]
        ins = [env[v] for v in op.operands]
        outs = _run_op(op, ins, ctx)
        for r, val in zip(op.results, outs):
            env[r] = val
    return []


def _run_op(op: Op, ins: list[Any], ctx: dict[str, Any]) -> list[Any]:
    od = op.opdef
    if op.name == "kernel.index":
        return [ctx["grids"][op.attrs["dim"]].astype(np.int64)]
    if op.name == "kernel.read":
        return [_read(op, ins, ctx)]
    if od.has_region:
        return list(od.reference(op, ins, run_block))  # type: ignore[misc]
    if od.reference is None:
        raise UnsupportedOpError(f"'{op.name}' has no reference semantics", loc=op.loc)
    attrs = {**od.optional_attrs, **op.attrs}
    out = od.reference(attrs, *ins)
    outs = list(out) if isinstance(out, tuple) else [out]
    return [np.asarray(o).astype(r.type.dtype.numpy, copy=False) for o, r in zip(outs, op.results)]


def _read(op: Op, ins: list[Any], ctx: dict[str, Any]) -> np.ndarray:
    arr = ctx["inputs"][op.attrs["input"]]
    idx = np.broadcast_arrays(*[np.asarray(i, np.int64) for i in ins]) if ins else []
    valid = None
    clipped = []
    for i, n in zip(idx, arr.shape):
        ok = (i >= 0) & (i < n)
        valid = ok if valid is None else valid & ok
        clipped.append(np.clip(i, 0, n - 1))
    vals = arr[tuple(clipped)]
    if op.attrs.get("mode", "clip") == "fill" and valid is not None:
        vals = np.where(valid, vals, np.asarray(op.attrs.get("fill"), arr.dtype))
    return vals
