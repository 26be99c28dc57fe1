import os
import tempfile

import pytest

# Tests use their own compile cache so they exercise cold and warm paths and never touch ~/.cache.
os.environ.setdefault("SOLIR_CACHE_DIR", tempfile.mkdtemp(prefix="solir-test-cache-"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=6, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=6, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(0)
