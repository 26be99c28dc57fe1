"""solir's vector f32 math (exp, tanh, erf, erfc, logistic; solir/lower/llvm/vmath.py) against
numpy/scipy in float64, over the whole float range: random bit patterns (every exponent,
subnormals included), a dense sweep of the interesting interval, and the special values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special as sp

import solir

SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.17549435e-38, 88.72, 88.73,
           -87.3, -103.9, -104.0, 0.625, -0.625, 9.0, 4.0, -4.0, 1e-30, 2.0 ** -60, 3.4e38,
           -3.4e38]


def all_floats(n=1 << 20, seed=0):
    bits = np.random.default_rng(seed).integers(0, 2 ** 32, size=n, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([bits.view(np.float32), np.array(SPECIAL, np.float32),
                           np.linspace(-20, 20, 100001, dtype=np.float32)])


def ulps(got, want64):
    """Distance in float32 ulps between got and the float64 truth rounded to float32
    (0 where both are NaN or equal, e.g. both infinite)."""
    with np.errstate(over="ignore"):
        want = want64.astype(np.float32)
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    if (np.isnan(got) != np.isnan(want)).any():
        return np.full(got.shape, 1 << 30)
    def ordered(a):
        i = a.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    d = np.abs(ordered(got) - ordered(want))
    d[same] = 0
    return d


@pytest.mark.parametrize("name,fn,ref,max_ulps", [
    ("exp", jnp.exp, np.exp, 2),
    ("tanh", jnp.tanh, np.tanh, 4),
    ("erf", jax.scipy.special.erf, sp.erf, 6),
    ("erfc", jax.scipy.special.erfc, sp.erfc, 5),
    ("logistic", jax.nn.sigmoid, sp.expit, 3),
])
def test_accuracy_over_the_whole_float_range(name, fn, ref, max_ulps):
    x = all_floats()
    got = np.asarray(solir.jit(fn)(x))
    with np.errstate(all="ignore"):
        want = ref(x.astype(np.float64))
    d = ulps(got, want)
    worst = int(np.argmax(d))
    assert d.max() <= max_ulps, f"{name}({x[worst]!r}) = {got[worst]!r}, want {want[worst]!r}"


def test_vector_lanes_and_scalar_tail_agree():
    """The vector body and the scalar remainder compute the same function, bit for bit."""
    x = np.linspace(-9, 9, 1000 * 16 + 7, dtype=np.float32)
    f = solir.jit(lambda v: jnp.tanh(v) + jnp.exp(-v * v) + jax.scipy.special.erf(v))
    whole = f(x)
    for k in (1, 3, 7):
        np.testing.assert_array_equal(f(x[-k:]), whole[-k:])


def test_f64_keeps_libm_precision():
    import onnx.helper as oh
    from onnx import TensorProto

    import solir.onnx as sonnx
    g = oh.make_graph([oh.make_node("Tanh", ["x"], ["y"])], "g",
                      [oh.make_tensor_value_info("x", TensorProto.DOUBLE, [1001])],
                      [oh.make_tensor_value_info("y", TensorProto.DOUBLE, [1001])])
    x = np.linspace(-30, 30, 1001)
    (got,) = sonnx.prepare(oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)])).run([x])
    np.testing.assert_allclose(got, np.tanh(x), rtol=1e-15, atol=0)


def test_exp_scaling_gives_the_same_bits_on_every_target():
    """exp's 2^n is one ldexp where the target has it as an instruction (AVX-512 vscalef),
    else two exact multiplications: both round once, so the bits agree (NaN aside: NaN in,
    NaN out, a signaling one quieted where vscalef carries it)."""
    from solir.targets import TARGETS
    runnable = [t for t in ("avx2", "avx512") if not TARGETS[t].missing_features()]
    if len(runnable) < 2:
        pytest.skip("needs a CPU that runs both avx2 and avx512 code")
    assert TARGETS["avx512"].vector_ldexp and not TARGETS["avx2"].vector_ldexp
    x = all_floats(1 << 16)
    a, b = (np.asarray(solir.jit(jnp.exp, target=t)(x)) for t in runnable)
    nan = np.isnan(x)       # NaN stays NaN (its payload may be quieted on one of them)
    assert np.isnan(a[nan]).all() and np.isnan(b[nan]).all()
    np.testing.assert_array_equal(a[~nan].view(np.int32), b[~nan].view(np.int32))


def test_exp_short_and_full_paths_give_the_same_bits():
    """A vector whose lanes are all within +-86 takes exp's short path; one NaN lane sends its
    whole vector down the full path. Every other lane must come out the same either way."""
    x = np.linspace(-86, 86, 1 << 16, dtype=np.float32)
    f = solir.jit(jnp.exp)
    short = np.asarray(f(x))
    mixed = x.copy()
    mixed[::29] = np.nan                 # a NaN in (nearly) every vector, at varying lanes
    full = np.asarray(f(mixed))
    keep = ~np.isnan(mixed)
    np.testing.assert_array_equal(full[keep], short[keep])
    assert np.isnan(full[~keep]).all()
    assert ulps(short, np.exp(x.astype(np.float64))).max() <= 1
