"""The pass pipeline: one readable list, run top to bottom. Each pass is a function
Module -> Module registered under its name; the runner verifies after every pass and keeps
the text of any stage a caller asks for (`as_text(stage)`, `solir show --stage`, SOLIR_DUMP)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from solir.errors import PassError
from solir.ir.core import Func, Module
from solir.ir.printer import print_module
from solir.ir.verifier import verify_module
from solir.targets import Target

TENSOR_PIPELINE = ["canonicalize", "fold-constants", "decompose", "select-algorithms",
                   "nchwc-layout", "lower-to-kernels", "fuse",
                   "canonicalize-kernels", "fuse-epilogues", "schedule", "vectorize", "bufferize", "group-rows",
                   "plan-memory"]


@dataclass(frozen=True)
class Options:
    """Compiler knobs; each is a field so the CLI can list and set them."""

    fuse: bool = True                 # merge producers into consumers
    # run a matmul's elementwise consumer in its tile write-back when C has at least this
    # many bytes (-1: half the target's L2, any size for a C in channel blocks; see
    # solir/lower/epilogue.py)
    epilogue_bytes: int = -1
    vectorize: bool = True            # use the target's vectors on the chosen axis
    parallel: bool = True             # split the outermost parallel loop across threads
    fold_limit: int = 1 << 22         # constant-fold results up to this many elements
    parallel_min_work: int = 1 << 15  # points in a kernel below which threads don't pay
    # force the matmul blocking (mr, nr, kc, mc, nc, mg) instead of deriving it from the
    # target (tests and autotuning; nr is rounded up to whole vectors)
    matmul_tiles: tuple[int, ...] | None = None
    # per-op algorithm choices, ((key, name), ...): see solir/lower/algorithms.py
    algorithms: tuple[tuple[str, str], ...] = ()
    # time the candidate algorithms of each contraction on this machine instead of trusting
    # the cost model, remembering the winners (solir/lower/autotune.py)
    autotune: bool = False
    tune_threads: int = 0             # the thread count to time at (0: the runtime's default)


@dataclass
class PassContext:
    target: Target
    options: Options = field(default_factory=Options)
    progress: Callable[[str], None] | None = None     # long passes say what they do


PassFn = Callable[[Module, PassContext], Module]
PASSES: dict[str, PassFn] = {}


def pass_(name: str) -> Callable[[PassFn], PassFn]:
    def register(fn: PassFn) -> PassFn:
        PASSES[name] = fn
        fn.pass_name = name  # type: ignore[attr-defined]
        return fn
    return register


def clone_module(module: Module) -> Module:
    """A copy of the module's functions, blocks, ops and values that shares what is
    immutable: op definitions, types, attribute values (a pass replaces an attribute, never
    changes one in place), constants' arrays (a deep copy of a ResNet was a visible part
    of its compile)."""
    from solir.lower.rewrite import clone_block
    return Module([Func(f.name, clone_block(f.body, {}), dict(f.attrs)) for f in module.funcs])


def run_pipeline(module: Module, ctx: PassContext, *, passes: list[str] | None = None,
                 record: Callable[[str, Module], None] | None = None) -> Module:
    _load_passes()
    names = TENSOR_PIPELINE if passes is None else passes
    dump = os.environ.get("SOLIR_DUMP", "")
    wanted = {s.strip() for s in dump.split(",") if s.strip()}
    module = clone_module(module)
    for name in names:
        fn = PASSES.get(name)
        if fn is None:
            raise PassError(f"unknown pass '{name}'", fix="passes: " + ", ".join(PASSES))
        module = fn(module, ctx)
        verify_module(module, after=name)
        if record is not None:
            record(name, module)
        if name in wanted or "all" in wanted:
            sys.stderr.write(f"// ----- after {name} -----\n{print_module(module, elide=True)}")
    return module


_loaded = False


def _load_passes() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from solir.lower import (algorithms, bufferize, canonicalize, epilogue,  # noqa: F401
                                 fold, fuse, layout, memory, rows, schedule, to_kernels)
