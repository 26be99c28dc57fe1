"""Numerical tolerances, written down once: (rtol, atol) per dtype."""

import numpy as np

TOL = {
    "float32": (2e-5, 2e-5),
    "float64": (1e-12, 1e-12),
    "float16": (2e-3, 2e-3),
    "bfloat16": (2e-2, 2e-2),
}


def assert_close(got, want, dtype=None, scale=1.0):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"dtype {got.dtype} != {want.dtype}"
    name = np.dtype(dtype or want.dtype).name
    if name in TOL:
        rtol, atol = TOL[name]
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64),
                                   rtol=rtol * scale, atol=atol * scale, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, want)
