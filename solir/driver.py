"""From a tensor-level module to a loaded callable: the compile pipeline in one place.

    lower.run_pipeline  -> kernel module
    lower.llvm.emit     -> llvmlite module
    targets.machine     -> object code
    runtime.build       -> model.so + manifest.json (+ model.h)
    runtime.load        -> CompiledModule
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import llvmlite

from solir.errors import CacheError, SolirError, SolirWarning
from solir.ir.core import Module
from solir.ir.printer import print_module
from solir.lower.loops_text import render_loops
from solir.lower.pipeline import TENSOR_PIPELINE, Options, PassContext, run_pipeline
from solir.runtime import abi, build
from solir.runtime.cache import cache_key, cache_root, compiler_fingerprint, entry_dir
from solir.runtime.load import CompiledModule
from solir.targets import Target, get_target

VERSION = "0.1.0"
STAGES = ["tensor", *TENSOR_PIPELINE, "algorithms", "loops", "llvm", "llvm-opt", "asm"]


@dataclasses.dataclass
class Compilation:
    """A module on its way down: every stage can be printed."""

    module: Module
    target: Target
    options: Options = dataclasses.field(default_factory=Options)
    texts: dict[str, str] = dataclasses.field(default_factory=dict)
    kernel_module: Module | None = None
    _llvm: Any = None
    _key: str | None = None

    def lower(self, progress: Callable[[str], None] | None = None) -> Module:
        if self.kernel_module is None:
            self.kernel_module = self._run_pipeline(progress, print_stages=False)
        return self.kernel_module

    def _run_pipeline(self, progress: Callable[[str], None] | None, print_stages: bool) -> Module:
        """The pass pipeline; each stage's printed IR is kept only when asked for (printing
        every stage of a ResNet costs a noticeable part of its compile), the algorithm table
        always."""
        def record(name: str, m: Module) -> None:
            if print_stages:
                self.texts[name] = print_module(m, elide=True)
            if name == "select-algorithms":
                from solir.lower.algorithms import algorithms_table
                self.texts["algorithms"] = algorithms_table(m)
            if progress is not None:
                progress(f"pass {name}")
        return run_pipeline(self.module, PassContext(self.target, self.options, progress),
                            record=record)

    def llvm(self) -> Any:
        if self._llvm is None:
            from solir.lower.llvm.emit import emit
            # a library linked here maps its weights from a file beside it (emit.Weights);
            # an object for another machine keeps them in its read-only data
            self._llvm = emit(self.lower(), self.target, weights=self.target.can_link_here)
        return self._llvm

    def as_text(self, stage: str = "tensor") -> str:
        if stage not in STAGES:
            raise SolirError(f"unknown stage '{stage}'", fix="stages: " + ", ".join(STAGES))
        if stage == "tensor":
            return print_module(self.module)
        if stage in TENSOR_PIPELINE or stage == "algorithms":
            self.lower()
            if stage not in self.texts:       # the pipeline again, printing every stage
                self._run_pipeline(None, print_stages=True)
            return self.texts[stage]
        if stage == "loops":
            return render_loops(self.lower(), self.target)
        if stage == "llvm":
            from solir.targets.machine import module_text
            return module_text(self.llvm())
        from solir.targets import machine
        if stage == "llvm-opt":
            return machine.optimized_ir(self.llvm(), self.target)
        return machine.assembly(self.llvm(), self.target)

    def ir_key(self) -> str:
        """The cache key (computed once: printing a model's digest of its weights is not free)."""
        if self._key is None:
            self._key = cache_key(print_module(self.module, debug_info=False, elide="digest"),
                                  repr(self.target), repr(self.options), VERSION,
                                  compiler_fingerprint(), llvmlite.__version__, build.RUNTIME_SONAME)
        return self._key

    def write_artifact(self, out_dir: Path, extra: dict[str, Any] | None = None,
                       progress: Callable[[str], None] | None = None,
                       model: dict[str, Any] | None = None) -> abi.Manifest:
        """DIR/model.so (or model.o for targets that cannot link here), model.weights (when
        it has large constants), model.h, manifest.json."""
        from concurrent.futures import ThreadPoolExecutor

        from solir.lower.llvm.emit import module_weights
        from solir.targets import machine
        say = progress or (lambda s: None)
        if self.target.can_link_here:
            build.runtime_library_soon(str(cache_root()))   # cc beside LLVM, ready to link
        kernel = self.lower(progress=say)
        say("emitting LLVM IR")
        llmod = self.llvm()
        out_dir.mkdir(parents=True, exist_ok=True)
        weights = module_weights(llmod)
        lib = "model.so" if self.target.can_link_here else "model.o"
        weights_name = abi.weights_file(lib)
        say(f"generating code for {self.target.name}")
        with ThreadPoolExecutor(1, thread_name_prefix="solir-weights") as pool:
            # the weights file is written (and hashed) while LLVM works
            writing = (pool.submit(weights.write, out_dir / weights_name)
                       if weights is not None else None)
            objs = machine.compile_objects(llmod, self.target)
            weights_hash = writing.result() if writing is not None else ""
        f = kernel.funcs[0]
        ins, outs = abi.specs_for(f)
        if self.target.can_link_here:
            say("linking")
            build.link_shared(objs, out_dir / lib, str(cache_root()))
        else:
            (out_dir / lib).write_bytes(objs[0])
            shutil.copy(build.THREADPOOL_C, out_dir / "solir_threadpool.c")
        m = abi.Manifest(entry=f.name, inputs=ins, outputs=outs,
                         workspace_bytes=int(f.attrs["workspace"]), target=self.target.name,
                         triple=self.target.triple, target_features=list(self.target.requires),
                         solir_version=VERSION, ir_hash=self.ir_key(), library=lib,
                         model=model or {}, extra=extra or {})
        m.library_hash = abi.file_hash(out_dir / lib)
        if weights is not None:
            m.weights, m.weights_bytes, m.weights_hash = weights_name, weights.size, weights_hash
        m.write(out_dir)
        (out_dir / "model.h").write_text(abi.c_header(m))
        return m


def compile_cached(comp: Compilation, num_threads: int | None = None) -> CompiledModule:
    """Load from the on-disk cache, or compile into it (atomically) and load."""
    key = comp.ir_key()
    final = entry_dir(key)
    if (final / abi.MANIFEST).exists():
        try:
            return _load_entry(final, num_threads)
        except CacheError as e:
            warnings.warn(f"solir: discarding a bad cache entry ({e.message}); recompiling",
                          SolirWarning, stacklevel=3)
            shutil.rmtree(final, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key[:8]}-", dir=final.parent))
    ours = False
    try:
        m = comp.write_artifact(tmp)
        _stamp(tmp, m)
        try:
            os.replace(tmp, final)
            ours = True
        except OSError:      # another process won the race; use its entry
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if ours:                 # hashed as it was written, a moment ago (ResNet-18's: 80 MB)
        return CompiledModule(final, num_threads=num_threads, verify_hash=False)
    return _load_entry(final, num_threads)


STAMP = ".verified"


def _stamp(entry: Path, m: abi.Manifest) -> None:
    """Record the size and mtime of the library and weights as they were hashed (a cache
    entry's files, written once, are then checked by stat instead of rehashing tens of MB of
    weights per load)."""
    lines = []
    for name in m.hashed_files():
        st = (entry / name).stat()
        lines.append(f"{name} {st.st_size} {st.st_mtime_ns}\n")
    (entry / STAMP).write_text("".join(lines))


def _load_entry(entry: Path, num_threads: int | None) -> CompiledModule:
    """A cache entry, its files checked against the manifest's hashes, or against the stamp
    written when they were hashed if the files are still the same ones (size and mtime)."""
    try:
        stamped = {}
        for line in (entry / STAMP).read_text().splitlines():
            name, size, mtime = line.split()
            stamped[name] = (int(size), int(mtime))
        m = abi.Manifest.read(entry)
        same = set(stamped) == set(m.hashed_files()) and all(
            ((st := (entry / name).stat()).st_size, st.st_mtime_ns) == stamped[name]
            for name in stamped)
    except (OSError, ValueError, CacheError):
        same = False
    module = CompiledModule(entry, num_threads=num_threads, verify_hash=not same)
    if not same:
        _stamp(entry, module.manifest)
    return module


def compile_module(module: Module, target: str | Target = "host", options: Options | None = None,
                   num_threads: int | None = None) -> CompiledModule:
    comp = Compilation(module, get_target(target), options or Options())
    return compile_cached(comp, num_threads)
