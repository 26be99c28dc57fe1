"""Object code -> shared library, linked with the system C compiler.

The thread pool lives in one small runtime library, `libsolir_rt.so.2`, that every model
library names as a dependency (found next to it through `$ORIGIN`). The dynamic loader
shares one copy per process by its soname, so all models share one pool and unloading a
model never unloads code a worker thread is sleeping in. Artifacts depend on nothing else
but libc, libm and libpthread."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from solir.errors import CompileError

THREADPOOL_C = Path(__file__).with_name("threadpool.c")
_BACKGROUND = ThreadPoolExecutor(1, thread_name_prefix="solir-cc")
RUNTIME_SONAME = "libsolir_rt.so.2"   # bump the number when the C ABI of the runtime changes


def cc() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise CompileError("no C compiler found to link the shared library",
                       fix="install gcc (apt-get install gcc) or set CC")


@functools.cache
def _source_tag() -> str:
    return hashlib.sha256(THREADPOOL_C.read_bytes()).hexdigest()[:16]


def runtime_library(cache_dir: str) -> Path:
    """Build (once per source version and cache directory; again if it was deleted) and
    return the path of libsolir_rt.so.2."""
    out = Path(cache_dir) / f"runtime-{_source_tag()}" / RUNTIME_SONAME
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{os.getpid()}.{threading.get_ident()}.tmp.so")
        _run([cc(), "-O2", "-fPIC", "-shared", f"-Wl,-soname,{RUNTIME_SONAME}", str(THREADPOOL_C),
              "-o", str(tmp), "-lpthread", "-ldl"])
        os.replace(tmp, out)
    return out


_pending: dict[str, Future[Path]] = {}
_pending_lock = threading.Lock()


def runtime_library_soon(cache_dir: str) -> None:
    """Start building the runtime library in the background if it is missing, so that the
    C compiler runs beside LLVM and link_shared finds it ready."""
    with _pending_lock:
        if cache_dir in _pending or (Path(cache_dir) / f"runtime-{_source_tag()}" /
                                     RUNTIME_SONAME).exists():
            return
        _pending[cache_dir] = _BACKGROUND.submit(runtime_library, cache_dir)


def link_shared(objs: list[bytes], out: Path, cache_dir: str) -> None:
    """Link the objects into `out` and put the runtime library beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with _pending_lock:
        pending = _pending.pop(cache_dir, None)
    rt = pending.result() if pending is not None else runtime_library(cache_dir)
    if not rt.exists():             # built earlier in this process, deleted since
        rt = runtime_library(cache_dir)
    paths = [out.with_suffix(f".{k}.o") for k in range(len(objs))]
    for o, obj in zip(paths, objs):
        o.write_bytes(obj)
    # gold, where installed, links a model's weights (tens of MB of data) in half the time
    gold = ["-fuse-ld=gold"] if shutil.which("ld.gold") else []
    try:
        _run([cc(), "-shared", "-o", str(out)] + gold + [str(o) for o in paths]
             + [str(rt), "-Wl,-rpath,$ORIGIN", "-lm", "-lpthread"])
    finally:
        for o in paths:
            o.unlink(missing_ok=True)
    local = out.parent / RUNTIME_SONAME
    if not local.exists():
        shutil.copyfile(rt, local)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"linking failed: {' '.join(cmd)}\n{proc.stderr.strip()[:2000]}")
