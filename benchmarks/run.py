"""solir against its peers (jax.jit, ONNX Runtime) on the PERF.md workloads, side by side.

    python benchmarks/run.py                      # quick set, 1 and 2 threads
    python benchmarks/run.py --all --repeats 15   # every workload
    python benchmarks/run.py -w gemm_512 -w softmax --threads 1 --markdown

Every peer runs in its own worker process per row, pinned to the thread count's CPUs
(`sched_setaffinity`) before any framework starts: solir with SOLIR_NUM_THREADS, XLA with its
intra-op thread flags, ORT with intra_op_num_threads (and its default, spinning pool). One
process per peer keeps each runtime's thread pool from competing with another's for the
cores. The peers' processes alternate (`--rounds`, default 2) so that drift on this shared
machine hits them alike. Each peer first runs untimed for `--warmup` seconds (default 0.5: a
freshly compiled or loaded model runs several percent slower for its first ~100 ms, in every
runtime), then each sample is the mean of enough calls to last ~20 ms, and the table shows
the median over all of a peer's samples. solir's results are checked against
jax (ORT for ONNX-only workloads) after it is timed, so that no other runtime's threads live
in its process while it runs.
Rates are against this machine's FMA peak and STREAM bandwidth, measured by peak.c. On x86
the header also shows what solir's matmul k loop reaches alone, loads included
(microkernel_loop.py): the ceiling of the matmul rows on this machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# PERF.md's limits (its Zen 3 machine), used when the measurement below cannot run.
PERF_MD_LIMITS = {1: {"fma_gflops": 101.0, "triad_gbs": 22.7}, 2: {"fma_gflops": 125.0, "triad_gbs": 24.0}}


def machine_limits(threads: int) -> dict[str, Any]:
    """This machine's FMA peak and STREAM triad bandwidth at `threads`, measured by
    benchmarks/peak.c (built with the system compiler); PERF.md's figures if that fails."""
    exe = Path(tempfile.gettempdir()) / f"solir-peak-{os.getuid()}"
    src = Path(__file__).with_name("peak.c")
    try:
        if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
            subprocess.run(["cc", "-O3", "-march=native", "-ffp-contract=fast", "-pthread",
                            str(src), "-o", str(exe)], check=True, capture_output=True)
        best: dict[str, Any] = {}
        for _ in range(3):      # the machine is noisy: the best of three runs
            out = json.loads(subprocess.run([str(exe), str(threads)], check=True,
                                            capture_output=True, text=True).stdout)
            for k in ("fma_gflops", "triad_gbs"):
                best[k] = max(best.get(k, 0.0), out[k])
            best["vector_bits"] = out["vector_bits"]
        best["source"] = "measured"
        if threads == 1:
            best.update(matmul_loop_ceiling())
        return best
    except (OSError, subprocess.CalledProcessError, ValueError):
        return {**PERF_MD_LIMITS.get(threads, PERF_MD_LIMITS[2]), "source": "PERF.md"}


def matmul_loop_ceiling() -> dict[str, Any]:
    """What solir's matmul k loop reaches alone on this machine (x86): its register tile for
    the host target, written in assembly by microkernel_loop.py with its loads (NV vectors
    of B, MR broadcasts of A per k step), panels in L1, the best of three. The ceiling of any
    product built on that tile; {} where the probe cannot run."""
    import platform
    from solir.lower.schedule import matmul_blocking
    from solir.targets import host_target
    from benchmarks.microkernel_loop import loop_rate
    target = host_target()
    lanes = target.lanes(4)
    if platform.machine() != "x86_64" or lanes not in (8, 16):
        return {}
    blk = matmul_blocking(target, 4, 1024, 1024, 1024)
    mr, nv = blk["mr"], blk["nr"] // lanes
    try:
        rate = max(loop_rate(mr, nv, 32 * lanes) for _ in range(3))
    except (OSError, subprocess.CalledProcessError, ValueError, SystemExit):
        return {}
    return {"loop_gflops": rate, "loop_tile": f"{mr}x{blk['nr']}"}


# -- worker: one peer, one thread count --------------------------------------------------------
def _pin(threads: int) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    os.environ["SOLIR_NUM_THREADS"] = str(threads)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
                               f" intra_op_parallelism_threads={threads}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _sample(fn: Callable[[], Any], inner: int) -> float:
    t = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t) / inner


def _warm(fn: Callable[[], Any], seconds: float) -> None:
    """Run fn untimed for `seconds` (at least once): steady state before the samples."""
    end = time.perf_counter() + seconds
    fn()
    while time.perf_counter() < end:
        fn()


def _calibrate(fn: Callable[[], Any], target_s: float = 0.02) -> int:
    one = _sample(fn, 1)
    return max(1, min(1000, int(target_s / max(one, 1e-7))))


def worker(names: list[str], threads: int, repeats: int, peer: str, warmup: float) -> None:
    """Time one peer on each workload: `warmup` seconds untimed, then `repeats` samples,
    printed as a JSON row."""
    _pin(threads)
    import jax
    import numpy as np

    from benchmarks.workloads import WORKLOADS

    for name in names:
        w = WORKLOADS[name]
        args = w.inputs(seed=0)
        row: dict[str, Any] = {"workload": name, "threads": threads, "flops": w.flops,
                               "bytes": w.bytes, "bound": w.bound, "peer": peer}
        if peer == "jax" and w.fn is None or peer == "ort" and w.onnx is None:
            continue
        run, got = {"solir": _solir, "jax": _jax, "ort": _ort}[peer](w, args, threads, row)
        _warm(run, warmup)
        inner = _calibrate(run)
        row["samples"] = [_sample(run, inner) for _ in range(repeats)]
        if peer == "solir":
            # checked against jax (or ORT for ONNX-only workloads) after the timing, so no
            # other runtime's threads exist in this process while solir is timed
            want = (_jax if w.fn is not None else _ort)(w, args, threads, {})[1]
            err = max(float(np.max(np.abs(np.asarray(g) - np.asarray(x)) / (1 + np.abs(np.asarray(x)))))
                      for g, x in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)))
            row["max_rel_err"] = err
            if err > 1e-3:
                row["error"] = f"solir disagrees with the reference (max relative error {err:.2e})"
        print(json.dumps(row), flush=True)


def _solir(w: Any, args: tuple, threads: int, row: dict[str, Any]) -> tuple:
    """solir: a cold compile into an empty cache, then a cached load in a fresh object."""
    import solir
    if w.fn is None:
        return _solir_onnx(w, args, row)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SOLIR_CACHE_DIR"] = cache
        t = time.perf_counter()
        compiled = solir.jit(w.fn).lower(*args).compile()
        row["compile_s"] = time.perf_counter() - t
        gc.collect()       # the cold compile's garbage is not the cached load's to collect
        t = time.perf_counter()
        compiled = solir.jit(w.fn).lower(*args).compile()
        row["cached_s"] = time.perf_counter() - t
        got = compiled(*args)
    return (lambda: compiled(*args)), got


def _solir_onnx(w: Any, args: tuple, row: dict[str, Any]) -> tuple:
    import solir.onnx
    model, feed = w.onnx(*args)
    ordered = [feed[i.name] for i in model.graph.input if i.name in feed]
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SOLIR_CACHE_DIR"] = cache
        # compiled (or loaded) without running, as the jax path's .compile(): the first
        # inference is not part of either figure
        t = time.perf_counter()
        solir.onnx.prepare(model).compile(ordered)
        row["compile_s"] = time.perf_counter() - t
        # a fresh process loading from the cache has no compile's garbage to collect: in
        # this one, a full collection of it (the cold compile's IR) fell inside the cached
        # load's figure when the threshold happened to be crossed (MobileNet-v1's at 1 thread
        # in session 25's runs A and B: 0.38 s; 0.046 s in run C, collected first)
        gc.collect()
        t = time.perf_counter()
        rep = solir.onnx.prepare(model)
        rep.compile(ordered)
        row["cached_s"] = time.perf_counter() - t
        got = rep.run(ordered)
    return (lambda: rep.run(ordered)), got


def _jax(w: Any, args: tuple, threads: int, row: dict[str, Any]) -> tuple:
    import jax
    jitted = jax.jit(w.fn)
    jargs = jax.device_put(args)
    t = time.perf_counter()
    got = jax.block_until_ready(jitted(*jargs))
    row["compile_s"] = time.perf_counter() - t
    return (lambda: jax.block_until_ready(jitted(*jargs))), got


def _ort(w: Any, args: tuple, threads: int, row: dict[str, Any]) -> tuple:
    """ONNX Runtime on the workload's ONNX graph: all graph optimizations, `threads`
    intra-op threads, sequential execution, its default (spinning) thread pool."""
    import onnxruntime as ort
    model, feed = w.onnx(*args)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    t = time.perf_counter()
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    got = sess.run(None, feed)
    row["compile_s"] = time.perf_counter() - t
    return (lambda: sess.run(None, feed)), got


# -- driver: spawn workers, print the table ---------------------------------------------------------
PEERS = ("jax", "ort")


def _fmt_rate(row: dict[str, Any], limits: dict[str, Any]) -> str:
    sec = row["solir_ms"] / 1e3
    if row["bound"] == "memory":
        gbs = row["bytes"] / sec / 1e9
        return f"{gbs:6.1f} GB/s ({100 * gbs / limits['triad_gbs']:3.0f}%)"
    gf = row["flops"] / sec / 1e9
    return f"{gf:6.1f} GF/s ({100 * gf / limits['fma_gflops']:3.0f}%)"


def _row(name: str, threads: int, repeats: int, rounds: int, warmup: float) -> dict[str, Any]:
    """One table row: each peer in its own pinned process (no other runtime's thread pool
    in it to compete for the cores), the peers alternating `rounds` times so that drift on
    this shared machine hits them alike; medians over all of a peer's samples."""
    row: dict[str, Any] = {"workload": name, "threads": threads}
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        for peer in ("solir", *PEERS):
            proc = subprocess.run([sys.executable, __file__, "--worker", "--threads", str(threads),
                                   "--repeats", str(repeats), "--warmup", str(warmup),
                                   "-w", name, "--peer", peer],
                                  capture_output=True, text=True)
            got = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
            if proc.returncode != 0 or not got:
                if peer == "solir":
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    return {**row, "error": tail[:80]}
                continue
            r = got[0]
            for k in ("flops", "bytes", "bound", "max_rel_err", "error"):
                if k in r:
                    row[k] = r[k]
            row.setdefault(f"{peer}_compile_s", r.get("compile_s"))
            if "cached_s" in r:
                row.setdefault(f"{peer}_cached_s", r["cached_s"])
            samples.setdefault(peer, []).extend(r["samples"])
    for peer, s in samples.items():
        row[f"{peer}_ms"] = 1e3 * statistics.median(s)
        row[f"{peer}_spread"] = (max(s) - min(s)) / statistics.median(s)
    return row


def table(rows: list[dict[str, Any]], markdown: bool, limits: dict[int, dict[str, Any]]) -> str:
    head = ["workload", "thr", "solir ms", "jax ms", "ort ms", "solir / fastest peer",
            "solir rate (of peak)", "compile cold / cached s", "max rel err"]
    lines = []
    for r in rows:
        if "solir_ms" not in r:
            lines.append([r["workload"], str(r["threads"]), "-", "-", "-", "-",
                          r.get("error", "failed"), "", ""])
            continue
        peers = {p: r[f"{p}_ms"] for p in PEERS if f"{p}_ms" in r}
        fastest = min(peers, key=peers.get)
        lines.append([r["workload"], str(r["threads"]), f"{r['solir_ms']:.3f}",
                      *(f"{r[f'{p}_ms']:.3f}" if f"{p}_ms" in r else "-" for p in PEERS),
                      f"{r['solir_ms'] / peers[fastest]:.2f}x ({fastest})",
                      _fmt_rate(r, limits[r["threads"]]),
                      f"{r['solir_compile_s']:.2f} / {r['solir_cached_s']:.3f}",
                      f"{r['max_rel_err']:.1e}" + (" !" if "error" in r else "")])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    fmt = "  ".join(f"{{:{'<' if k < 2 else '>'}{w}}}" for k, w in enumerate(widths))
    return "\n".join([fmt.format(*head)] + [fmt.format(*line) for line in lines])


def main() -> int:
    from benchmarks.workloads import WORKLOADS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-w", "--workload", action="append", choices=sorted(WORKLOADS),
                   help="run only these (repeatable)")
    p.add_argument("--all", action="store_true", help="include the large workloads")
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    p.add_argument("--repeats", type=int, default=9, help="timed samples per peer (default 9)")
    p.add_argument("--warmup", type=float, default=0.5,
                   help="seconds each peer runs untimed before its samples (default 0.5)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.add_argument("--rounds", type=int, default=2,
                   help="alternations of the peers' processes per row (default 2)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--peer", default="solir", help=argparse.SUPPRESS)
    a = p.parse_args()
    names = a.workload or [n for n, w in WORKLOADS.items() if a.all or w.tier == "quick"]
    threads = [int(t) for t in a.threads.split(",")]
    if a.worker:
        worker(names, threads[0], a.repeats, a.peer, a.warmup)
        return 0
    rows: list[dict[str, Any]] = []
    for n in threads:
        for name in names:
            sys.stderr.write(f"[{n} thread{'s' if n > 1 else ''}] {name} ...\n")
            rows.append(_row(name, n, a.repeats, a.rounds, a.warmup))
    limits = {n: machine_limits(n) for n in threads}
    print(f"solir vs jax.jit and onnxruntime on {os.uname().nodename}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, medians of {a.rounds} x {a.repeats} samples "
          f"per peer after {a.warmup:g} s untimed (one process per peer and round, peers "
          f"alternating)")
    for n, lim in limits.items():
        print(f"  {n} thread{'s' if n > 1 else ''}: FMA peak {lim['fma_gflops']:.0f} GFLOP/s, "
              f"STREAM triad {lim['triad_gbs']:.1f} GB/s ({lim['source']})")
        if "loop_gflops" in lim:
            print(f"  the {lim['loop_tile']} matmul k loop alone, with its loads: "
                  f"{lim['loop_gflops']:.0f} GFLOP/s ({100 * lim['loop_gflops'] / lim['fma_gflops']:.0f}% "
                  f"of the FMA peak): the ceiling of the matmul rows")
    print(table(rows, a.markdown, limits))
    if a.json:
        Path(a.json).write_text(json.dumps({"limits": limits, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
