"""The on-disk cache of compiled modules, keyed by everything that changes the code:
the tensor IR, the target, the options, the versions of solir and LLVM, and a hash of
solir's own source."""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    env = os.environ.get("SOLIR_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "solir"


def cache_key(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def entry_dir(key: str) -> Path:
    return cache_root() / key[:2] / key


@functools.cache
def compiler_fingerprint() -> str:
    """A hash of solir's own source (Python and C), so a changed compiler never reuses code
    the old one generated, even when the version string did not move."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".c")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
