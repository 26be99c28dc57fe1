"""Autotuning (`--autotune`, `solir.jit(f, autotune=True)`): instead of trusting the cost model,
time every algorithm that can compute a contraction on this machine, once, and remember the
winner.

Each conv / dot_general with more than one applicable algorithm is cut out into a module of
its own with the elementwise ops that follow it (a bias, BatchNorm, an activation: they fuse
into some algorithms' loop nests and not into others), its constant weights kept constant
(prepacking and Winograd's weight transform happen at compile time as in the model) and
its other operands seeded random inputs. That module is compiled once per candidate, and the
candidates are called in interleaved rounds so that the machine's drift hits them all alike,
each call with the core's L1 and L2 flushed (in a model the ops before it filled them); the
lowest median wins. `loops` is a candidate
only for ops under LOOPS_MACS multiply-adds, where it can win; above that it loses by an
order of magnitude and timing it would cost seconds (except against the depthwise stencil,
which it can beat).

The results live in `autotune.json` in the compile cache (SOLIR_CACHE_DIR), keyed by the op
(kind, operand types, attributes, whether the weights are constant), the target and the
thread count the runtime would use (SOLIR_NUM_THREADS, else the cores this process may run
on): tune with the thread count you will run with. An op seen before is not timed again;
delete the file (or the cache) to retune. Only targets that run on this machine can be
tuned; for the others the cost model chooses, with a warning.

The choice changes how, never what, an op computes: tests/test_schedules.py checks every
algorithm against the reference interpreter.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from solir.ir.core import Block, Builder, Func, Module, Op
from solir.runtime.cache import cache_root

DB_NAME = "autotune.json"
LOOPS_MACS = 1 << 20      # loops is timed only below this many multiply-adds
ROUNDS = 9                # interleaved samples per candidate, each one call from cold caches


def db_path() -> Path:
    return cache_root() / DB_NAME


def _read_db() -> dict[str, Any]:
    try:
        data = json.loads(db_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}        # none yet, or unreadable: every op is timed (and the file rewritten)


def _write_entry(key: str, entry: dict[str, Any]) -> None:
    """Merge one result into the file (read again first: another process may have added
    some), written whole to a temporary file and renamed over the old one."""
    path = db_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _read_db()
    data[key] = entry
    fd, tmp = tempfile.mkstemp(prefix=".autotune-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _is_constant(v: Any) -> bool:
    return isinstance(v.owner, Op) and v.owner.name == "tensor.constant"


def _attr_text(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return "array:" + hashlib.sha256(value.tobytes()).hexdigest()[:12]
    return repr(value)


def _made_of_constants(v: Any, depth: int = 4) -> bool:
    """v is a constant, or computed (without regions) from constants only: a bias broadcast."""
    owner = v.owner
    if not isinstance(owner, Op):
        return False
    if owner.name == "tensor.constant":
        return True
    return (depth > 0 and not owner.regions and bool(owner.operands)
            and all(_made_of_constants(u, depth - 1) for u in owner.operands))


def epilogue(op: Op, users: dict[Any, list[Op]]) -> list[Op]:
    """The elementwise ops that follow `op` one to one (bias, BatchNorm, activation), each
    the only user of the one before and otherwise reading constants: they fuse into some of
    the algorithms' loop nests and not into others, so they are timed with the op."""
    from solir.ir.registry import ELEMENTWISE
    chain: list[Op] = []
    cur = op.results[0]
    while len(users.get(cur, [])) == 1:
        u = users[cur][0]
        if u.opdef.kind != ELEMENTWISE or len(u.results) != 1 or u.results[0].type.shape != cur.type.shape:
            break
        if not all(v is cur or _made_of_constants(v) for v in u.operands):
            break
        chain.append(u)
        cur = u.results[0]
    return chain


def tune_key(kind: str, op: Op, target: Any, threads: int, chain: list[Op] = ()) -> str:
    """What makes two ops time alike: kind, operand types, attributes, constant weights,
    the elementwise ops after it, the target (with its caches) and the thread count."""
    attrs = ",".join(f"{k}={_attr_text(v)}" for k, v in sorted(op.attrs.items())
                     if not k.startswith("algorithm"))
    operands = ",".join(f"{v.type}{'=const' if _is_constant(v) else ''}" for v in op.operands)
    then = "".join(f" -> {u.name}" for u in chain)
    target_digest = hashlib.sha256(repr(target).encode()).hexdigest()[:12]
    return (f"{kind}({operands}) {{{attrs}}}{then} target={target.name}:{target_digest} "
            f"threads={threads}")


def isolate(op: Op, chain: list[Op] = ()) -> tuple[Module, list[np.ndarray]]:
    """A module computing just `op` and the elementwise `chain` after it (their constant
    operands copied), and seeded inputs for the op's non-constant operands."""
    from solir.lower.rewrite import clone_op
    block = Block()
    b = Builder(block, op.loc)
    rng = np.random.default_rng(0)
    mapping: dict[Any, Any] = {}
    inputs = []

    def copy_constant(v: Any) -> None:
        if v in mapping:
            return
        for u in v.owner.operands:
            copy_constant(u)
        block.ops.append(clone_op(v.owner, mapping))

    for k, v in enumerate(op.operands):
        if _is_constant(v):
            copy_constant(v)
        else:
            mapping[v] = block.add_arg(v.type, f"in{k}")
            inputs.append(rng.standard_normal(v.type.shape).astype(v.type.dtype.numpy))
    operands = [mapping[v] for v in op.operands]
    attrs = {k: v for k, v in op.attrs.items() if not k.startswith("algorithm")}
    mapping[op.results[0]] = b.op(op.name, operands, attrs).result
    for u in chain:
        for v in u.operands:
            if v not in mapping:
                copy_constant(v)
        block.ops.append(clone_op(u, mapping))
    b.op("return", [mapping[(chain[-1] if chain else op).results[0]]], result_types=[])
    return Module([Func("tuned_op", block)]), inputs


def candidates(kind: str, op: Op, macs: int) -> list[str]:
    """The algorithms to time: those that apply, `loops` only where it can win (small ops,
    and depthwise convs, where it competes with the stencil)."""
    from solir.lower.algorithms import ALGORITHMS
    # (nchwc is a layout for a chain of convs, not a choice one op timed alone can make)
    names = [name for name, choice in ALGORITHMS[kind].items()
             if choice.applies(op) is None and name != "nchwc"]
    if "loops" in names and macs >= LOOPS_MACS and "depthwise" not in names:
        names.remove("loops")
    return names


def _time_candidates(modules: dict[str, Any], inputs: list[np.ndarray],
                     flush_bytes: int) -> dict[str, float]:
    """Median seconds per call of each module, sampled in interleaved rounds. Each sample
    starts with the core's own caches flushed (`flush_bytes` written, twice the L2): in a
    model the ops before this one filled them, and its weights are not there, so an
    algorithm whose transformed weights are larger pays for reading them, as it does there;
    the shared L3 keeps what was recently made, as the previous op's output would be."""
    flush = np.empty(max(flush_bytes, 1) // 8, np.float64)
    for mod in modules.values():
        mod(*inputs)                              # warm: first-touch pages, threads
    samples: dict[str, list[float]] = {name: [] for name in modules}
    for _ in range(ROUNDS):
        for name, mod in modules.items():
            flush.fill(1.0)
            t0 = time.perf_counter()
            mod(*inputs)
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def tune(kind: str, index: int, op: Op, names: list[str], target: Any, threads: int = 0,
         progress: Callable[[str], None] | None = None,
         chain: list[Op] = ()) -> tuple[str, str]:
    """(the fastest of `names` for `op` (followed by its elementwise `chain`) on this
    machine, why): from autotune.json when this op was timed before, else timed now and
    recorded."""
    from solir.driver import Compilation
    from solir.lower.pipeline import Options
    from solir.runtime.load import CompiledModule, default_num_threads
    threads = threads or default_num_threads()
    key = tune_key(kind, op, target, threads, chain)
    entry = _read_db().get(key)
    if entry is None or entry.get("choice") not in names or \
            not set(names) <= set(entry.get("ms", {})):
        module, inputs = isolate(op, chain)
        say = progress or (lambda s: None)
        work = Path(tempfile.mkdtemp(prefix="solir-autotune-"))
        try:
            loaded = {}
            for name in names:
                say(f"autotune {kind}:{index}: compiling {name}")
                comp = Compilation(module, target, Options(algorithms=((kind, name),)))
                comp.write_artifact(work / name)
                loaded[name] = CompiledModule(work / name, num_threads=threads)
            say(f"autotune {kind}:{index}: timing {', '.join(names)}")
            seconds = _time_candidates(loaded, inputs, 2 * target.l2_kib * 1024)
        finally:
            shutil.rmtree(work, ignore_errors=True)   # (loaded libraries stay mapped)
        ms = {name: round(s * 1e3, 4) for name, s in seconds.items()}
        entry = {"choice": min(ms, key=ms.__getitem__), "ms": ms,
                 "when": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_entry(key, entry)
    ms = entry["ms"]
    best = entry["choice"]
    others = ", ".join(f"{n} {ms[n]:.3g}" for n in names if n != best)
    how = f"timed at {threads} thread{'s' if threads > 1 else ''} ({entry['when'][:16]})"
    return best, f"{how}: {ms[best]:.3g} ms" + (f" (against {others})" if others else "")


__all__ = ["candidates", "db_path", "isolate", "tune", "tune_key"]
