"""Loading a compiled module with cffi and calling it on numpy arrays.

Every argument is checked (count, shape, dtype) before native code runs; contiguous,
aligned inputs are handed over without a copy; outputs are fresh numpy arrays."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Sequence

import cffi
import numpy as np

from solir.errors import ArgumentError, CacheError, TargetError
from solir.runtime.abi import Manifest, file_hash
from solir.runtime.build import RUNTIME_SONAME

# The runtime library (thread pool) is loaded once and never unloaded: worker threads sleep in
# its code. Native calls are serialized process-wide because the pool's thread count is global.
_RT_FFI = cffi.FFI()
_RT_FFI.cdef("void solir_set_num_threads(int);")
_rt: Any = None
_call_lock = threading.Lock()
_rt_threads: int | None = None    # the runtime's thread count, as last set by a call here


def _runtime(directory: Path) -> Any:
    global _rt
    if _rt is None:
        path = directory / RUNTIME_SONAME
        if not path.exists():
            raise CacheError(f"{path} is missing (the runtime library belongs beside the model)",
                             fix="recompile the module")
        try:
            _rt = _RT_FFI.dlopen(str(path.resolve()))
        except OSError as e:
            raise CacheError(f"cannot load {path}: {e}", fix="recompile the module") from None
    return _rt


class _OutputPool:
    """Memory for output arrays, recycled. A fresh large numpy array is fresh pages from the
    OS: every call would pay page faults and the kernel's zeroing (5 ms for 64 MiB here). An
    output array here is a view of a block this pool hands out; when the array is garbage-
    collected the block comes back and the next call reuses it, already mapped. At most
    `keep` idle blocks per size and `limit` idle bytes are held; the rest is freed.
    Below 32 MiB numpy's allocation is quicker than the pool's bookkeeping: glibc raises its
    mmap threshold up to that size once such a block is freed, so repeated calls reuse
    mapped heap memory."""

    def __init__(self, keep: int = 4, limit: int = 1 << 30, min_bytes: int = 1 << 25):
        self.ffi = cffi.FFI()
        self.ffi.cdef("void *aligned_alloc(size_t, size_t); void free(void *);")
        self.libc = self.ffi.dlopen(None)
        self.free: dict[int, list[Any]] = {}
        self.idle = 0
        self.keep, self.limit, self.min_bytes = keep, limit, min_bytes
        self.lock = threading.Lock()

    def array(self, shape: tuple[int, ...], dtype: Any, nbytes: int) -> np.ndarray:
        if nbytes < self.min_bytes:            # small arrays: numpy's allocator is as good
            return _aligned_empty(shape, dtype, nbytes)
        size = (nbytes + 4095) // 4096 * 4096
        with self.lock:
            blocks = self.free.get(size)
            raw = blocks.pop() if blocks else None
            if raw is not None:
                self.idle -= size
        if raw is None:
            raw = self.libc.aligned_alloc(64, size)
            if raw == self.ffi.NULL:
                return np.empty(shape, dtype)
        owned = self.ffi.gc(raw, lambda p, size=size: self._give_back(p, size), size)
        buf = self.ffi.buffer(owned, nbytes)
        # bytes first: numpy cannot build some dtypes (bfloat16) straight from a buffer
        return np.frombuffer(buf, dtype=np.uint8).view(dtype).reshape(shape)

    def _give_back(self, p: Any, size: int) -> None:
        raw = self.ffi.cast("void *", p)
        with self.lock:
            blocks = self.free.setdefault(size, [])
            if len(blocks) < self.keep and self.idle + size <= self.limit:
                blocks.append(raw)
                self.idle += size
                return
        self.libc.free(raw)


_outputs = _OutputPool()

# Outputs from 128 KiB up start on a cache line: a product split between threads by columns
# (gemm_256's two 128-column halves) otherwise has every row's boundary line written by both
# cores (2-thread gemm_256 went from 1.26x ORT to 0.99x with this and KC >= 256:
# benchmarks/README.md, session 16). Smaller outputs are rarely split, and the alignment
# costs about a microsecond.
ALIGN_MIN_BYTES = 128 << 10


def _aligned_empty(shape: tuple[int, ...], dtype: Any, nbytes: int) -> np.ndarray:
    """np.empty on a 64-byte boundary. numpy's large arrays start at any multiple of 16
    bytes, so every other 32-byte store may straddle two cache lines, and kernels that
    stream their output (softmax's non-temporal stores, which need aligned rows) fall back
    to plain stores that read each line first."""
    if nbytes < ALIGN_MIN_BYTES:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + 64, np.uint8)
    ffi = _outputs.ffi
    start = -int(ffi.cast("uintptr_t", ffi.from_buffer(raw))) % 64
    return np.ndarray(shape, dtype, buffer=raw, offset=start)


def _check_weights(path: Path, m: Manifest, verify_hash: bool) -> None:
    """The weights file the library will map on its first call: present, of the size the
    library expects and (unless it was checked before) with the manifest's hash."""
    try:
        size = path.stat().st_size
    except OSError:
        raise CacheError(f"{path} is missing (a model's weights belong beside its library)",
                         fix="copy the whole artifact directory, or recompile the module") from None
    if size != m.weights_bytes or (verify_hash and m.weights_hash
                                   and file_hash(path) != m.weights_hash):
        raise CacheError(f"{path} does not match its manifest (corrupted or modified)",
                         fix="recompile it; the cache entry is rebuilt automatically by solir.jit")


def default_num_threads() -> int:
    env = os.environ.get("SOLIR_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise ArgumentError(f"SOLIR_NUM_THREADS={env!r} is not a number",
                                fix="set it to a positive integer, e.g. SOLIR_NUM_THREADS=2") from None
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class CompiledModule:
    """A loaded artifact: call it with numpy arrays, get a list of numpy arrays back."""

    def __init__(self, directory: str | Path, *, verify_hash: bool = True,
                 num_threads: int | None = None):
        self.directory = Path(directory)
        self.manifest = m = Manifest.read(self.directory)
        lib_path = self.directory / m.library
        if not lib_path.exists():
            raise CacheError(f"{lib_path} is missing", fix="recompile the module")
        if verify_hash and m.library_hash and file_hash(lib_path) != m.library_hash:
            raise CacheError(f"{lib_path} does not match the hash in its manifest (corrupted or "
                             "modified)", fix="recompile it; the cache entry is rebuilt automatically "
                             "by solir.jit")
        self.weights_path = self.directory / m.weights if m.weights else None
        if self.weights_path is not None:
            _check_weights(self.weights_path, m, verify_hash)
        missing = _missing_features(m)
        if missing:
            raise TargetError(f"artifact {self.directory} was built for target '{m.target}' but this "
                              f"CPU lacks {', '.join(missing)}",
                              fix="recompile with --target host (or a target this CPU runs)")
        self._rt = _runtime(self.directory)
        self.ffi = cffi.FFI()
        self.ffi.cdef(f"int32_t {m.entry}(void **, void **, void *);")
        try:
            self.lib = self.ffi.dlopen(str(lib_path.resolve()))
            self._entry = getattr(self.lib, m.entry)
        except (OSError, AttributeError) as e:
            raise CacheError(f"cannot load {lib_path}: {e}", fix="recompile the module") from None
        self.in_types = [(tuple(t.shape), t.type.dtype.numpy) for t in m.inputs]
        self.out_types = [(tuple(t.shape), t.type.dtype.numpy) for t in m.outputs]
        self._out_bytes = [int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                           for shape, dt in self.out_types]
        self._inputs = self.ffi.new("void *[]", max(1, len(m.inputs)))
        self._outputs = self.ffi.new("void *[]", max(1, len(m.outputs)))
        self._workspace_array = np.empty(m.workspace_bytes + 64, np.uint8)
        addr = self._workspace_array.__array_interface__["data"][0]
        self._workspace = self.ffi.cast("void *", addr + (-addr % 64))
        self.set_num_threads(num_threads or default_num_threads())

    def set_num_threads(self, n: int) -> None:
        """Threads this module's parallel loops use (the caller's thread included)."""
        if not isinstance(n, int) or n < 1:
            raise ArgumentError(f"num_threads must be a positive integer, got {n!r}")
        self.num_threads = n

    def check_args(self, args: Sequence[Any]) -> list[np.ndarray]:
        m = self.manifest
        if len(args) != len(m.inputs):
            raise ArgumentError(f"{m.entry} takes {len(m.inputs)} inputs "
                                f"({', '.join(t.name for t in m.inputs)}), got {len(args)}")
        arrays = []
        for k, (a, (shape, dtype)) in enumerate(zip(args, self.in_types)):
            if (type(a) is np.ndarray and a.dtype == dtype and a.shape == shape
                    and (f := a.flags).c_contiguous and f.aligned):
                arrays.append(a)            # the common case, checked in one go
                continue
            spec = m.inputs[k]
            arr = a if isinstance(a, np.ndarray) else np.asarray(a)
            if arr.dtype != dtype:
                raise ArgumentError(f"input {k} ({spec.name}) expects dtype {spec.dtype} "
                                    f"({np.dtype(dtype).name}), got {arr.dtype.name}",
                                    fix=f"convert it with .astype(np.{np.dtype(dtype).name})")
            if arr.shape != shape:
                raise ArgumentError(f"input {k} ({spec.name}) expects shape {list(shape)}, got "
                                    f"{list(arr.shape)}")
            if not (arr.flags.c_contiguous and arr.flags.aligned):
                arr = np.ascontiguousarray(arr)   # the only copy: strided or misaligned input
            arrays.append(arr)
        return arrays

    def __call__(self, *args: Any) -> list[np.ndarray]:
        global _rt_threads
        arrays = self.check_args(args)
        outs = [_outputs.array(shape, dtype, nbytes) for (shape, dtype), nbytes
                in zip(self.out_types, self._out_bytes)]
        ptr, ins, outp = self._pointer, self._inputs, self._outputs
        with _call_lock:
            if _rt_threads != self.num_threads:     # the runtime's, as last set from here
                self._rt.solir_set_num_threads(self.num_threads)
                _rt_threads = self.num_threads
            for k, a in enumerate(arrays):
                ins[k] = ptr(a)
            for k, o in enumerate(outs):
                outp[k] = ptr(o)
            status = self._entry(ins, outp, self._workspace)
        if status != 0:
            raise CacheError(f"{self.manifest.entry} could not map its weights "
                             f"({self.weights_path}) and did not run",
                             fix="check that the file is readable and memory is available")
        return outs

    def _pointer(self, a: np.ndarray) -> Any:
        """The data pointer of a contiguous array (the buffer protocol is several times
        quicker than __array_interface__; dtypes numpy cannot export, like bfloat16, take the
        slow way)."""
        try:
            return self.ffi.from_buffer(a)
        except (TypeError, ValueError, BufferError):
            return self.ffi.cast("void *", a.__array_interface__["data"][0])

    def __repr__(self) -> str:
        m = self.manifest
        sig = ", ".join(f"{t.name}: {t.type}" for t in m.inputs)
        res = ", ".join(str(t.type) for t in m.outputs)
        return f"<solir module {m.entry}({sig}) -> ({res}) target={m.target}>"


def _missing_features(m: Manifest) -> list[str]:
    import platform

    from solir.targets import host_cpu_flags

    arch = {"x86_64": "x86_64", "aarch64": "aarch64", "riscv64": "riscv64"}
    want_arch = m.triple.split("-")[0]
    if arch.get(platform.machine()) != want_arch:
        return [f"the {want_arch} architecture (this machine is {platform.machine()})"]
    flags = host_cpu_flags()
    return [f for f in m.target_features if f not in flags]


def load(directory: str | Path, **kw: Any) -> CompiledModule:
    """Load an artifact written by `solir compile` (or a cache entry)."""
    return CompiledModule(directory, **kw)

