"""Compile a small MLP with solir.jit, print its IR, and check it against jax.jit."""

from solir.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
