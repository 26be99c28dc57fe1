"""The quick-start demo: compile a small MLP with solir.jit, show what the compiler did, and
check the answer against jax.jit."""

from __future__ import annotations

import time

import numpy as np


def main() -> int:
    import jax
    import jax.numpy as jnp
    from rich.console import Console

    import solir
    from solir.cli import print_ir

    console = Console(highlight=False)

    def mlp(x, w1, b1, w2, b2):
        return jnp.maximum(x @ w1 + b1, 0) @ w2 + b2

    rng = np.random.default_rng(0)
    args = [rng.standard_normal(s).astype(np.float32)
            for s in [(32, 64), (64, 128), (128,), (128, 10), (10,)]]
    fast = solir.jit(mlp)
    lowered = fast.lower(*args)
    console.rule("tensor IR (from the jaxpr)")
    print_ir(lowered.as_text("tensor"), console)
    console.rule("loop nests after fusion, scheduling and vectorization")
    print_ir(lowered.as_text("loops"), console)
    t0 = time.perf_counter()
    got = fast(*args)
    first = time.perf_counter() - t0
    want = np.asarray(jax.jit(mlp)(*args))
    err = float(np.max(np.abs(got - want) / (np.abs(want) + 1)))
    console.rule("result")
    console.print(f"output {got.dtype}{list(got.shape)}, first call {first * 1e3:.0f} ms "
                  f"(compile, or load from the cache), target {fast.target.name}")
    console.print(f"max relative difference from jax.jit: {err:.2e}")
    ok = err < 1e-4
    console.print("[green]matches jax.jit[/green]" if ok else "[red]MISMATCH[/red]")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
