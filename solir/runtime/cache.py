"""The on-disk cache of compiled modules, keyed by everything that changes the code:
the tensor IR, the target, the options and the versions of solir and LLVM."""

from __future__ import annotations

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
