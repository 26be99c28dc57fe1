"""Object code -> shared library: the kernels plus the thread pool, linked with the system
C compiler. Artifacts depend on nothing but libc, libm and libpthread."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from solir.errors import CompileError

THREADPOOL_C = Path(__file__).with_name("threadpool.c")


def cc() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    raise CompileError("no C compiler found to link the shared library",
                       fix="install gcc (apt-get install gcc) or set CC")


@functools.cache
def threadpool_object(cache_dir: str) -> Path:
    src = THREADPOOL_C.read_bytes()
    tag = hashlib.sha256(src).hexdigest()[:16]
    out = Path(cache_dir) / f"threadpool-{tag}.o"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(f".{os.getpid()}.tmp.o")
        _run([cc(), "-O2", "-fPIC", "-c", str(THREADPOOL_C), "-o", str(tmp)])
        os.replace(tmp, out)
    return out


def link_shared(obj: bytes, out: Path, cache_dir: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    o = out.with_suffix(".o")
    o.write_bytes(obj)
    try:
        _run([cc(), "-shared", "-o", str(out), str(o), str(threadpool_object(cache_dir)),
              "-lm", "-lpthread"])
    finally:
        o.unlink(missing_ok=True)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise CompileError(f"linking failed: {' '.join(cmd)}\n{proc.stderr.strip()[:2000]}")
