"""The runtime and its errors: argument checks before native code runs, zero-copy inputs,
the on-disk cache (a second process pays no compile time; a corrupted entry is rebuilt),
corrupted artifacts, unsupported input naming the user's source line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import solir
from solir.runtime.cache import cache_root


def affine(x, w):
    return jnp.tanh(x @ w + 1.0)


@pytest.fixture
def compiled(rng):
    x, w = rng.standard_normal((4, 8), np.float32), rng.standard_normal((8, 3), np.float32)
    return solir.jit(affine).lower(x, w).compile(), x, w


def test_wrong_shape_dtype_and_count_raise_before_native_code(compiled):
    c, x, w = compiled
    with pytest.raises(solir.ArgumentError, match=r"input 0 \(arg0\) expects shape \[4, 8\], got \[4, 9\]"):
        c(np.zeros((4, 9), np.float32), w)
    with pytest.raises(solir.ArgumentError, match=r"has dtype float64, compiled for float32"):
        c(x.astype(np.float64), w)
    with pytest.raises(solir.ArgumentError, match=r"input 1 \(arg1\) expects dtype f32 \(float32\)"):
        c.module(x, w.astype(np.float64))
    with pytest.raises(solir.ArgumentError, match="takes 2 inputs"):
        c.module(x)
    with pytest.raises(solir.ArgumentError):
        c(x)


def test_array_only_calls_take_the_fast_path_and_agree_with_the_general_one(rng):
    """ndarray-only calls skip the pytree machinery (keyed by shapes and dtypes alone); other
    arrays, keywords, new shapes and dtypes take the general path, with the same results."""
    import jax.numpy as jnp
    f = solir.jit(lambda a, b: {"sum": a + b, "prod": a * b})
    a, b = rng.standard_normal((3, 5), np.float32), rng.standard_normal((3, 5), np.float32)
    fast = f(a, b)
    assert len(f._by_arrays) == 1
    general = f(jnp.asarray(a), b)                   # a jax array: flattened, converted
    for k in ("sum", "prod"):
        np.testing.assert_array_equal(fast[k], general[k])
    np.testing.assert_array_equal(f(a, b=b)["sum"], fast["sum"])     # a keyword
    wide = rng.standard_normal((3, 6), np.float32)
    np.testing.assert_array_equal(f(wide, wide)["prod"], wide * wide)   # a new shape compiles
    assert len(f._by_arrays) == 2
    np.testing.assert_allclose(f(a.astype(np.float64), b)["sum"], fast["sum"])   # a new dtype
    assert len(f._by_arrays) == 3
    c = f.lower(a, b).compile()
    np.testing.assert_array_equal(c(a, b)["prod"], fast["prod"])
    with pytest.raises(solir.ArgumentError, match="expects shape"):
        c(wide, wide)


def test_contiguous_inputs_are_not_copied_and_strided_ones_are(compiled):
    c, x, w = compiled
    arrays = c.module.check_args([x, w])
    assert arrays[0] is x and arrays[1] is w
    strided = np.asfortranarray(x)
    assert c.module.check_args([strided, w])[0] is not strided
    np.testing.assert_allclose(c(strided, w), c(x, w))


def test_jit_accepts_jax_arrays_and_pytrees(rng):
    f = solir.jit(lambda d: {"y": d["a"] * 2, "z": (d["b"].sum(),)})
    out = f({"a": jnp.ones((3,)), "b": np.arange(4, dtype=np.float32)})
    assert set(out) == {"y", "z"} and isinstance(out["y"], np.ndarray)
    np.testing.assert_array_equal(out["y"], [2, 2, 2])
    assert float(out["z"][0]) == 6.0


def test_static_argnums_compile_per_value():
    f = solir.jit(lambda x, n: x * n, static_argnums=1)
    x = np.ones(3, np.float32)
    np.testing.assert_array_equal(f(x, 2), x * 2)
    np.testing.assert_array_equal(f(x, 3), x * 3)
    assert len(f._cache) == 2


def test_unsupported_primitive_names_it_and_the_source_line():
    def uses_sort(x):
        return jnp.sort(x) + 1

    with pytest.raises(solir.UnsupportedOpError) as e:
        solir.jit(uses_sort)(np.ones(3, np.float32))
    msg = str(e.value)
    assert "'sort'" in msg and "test_runtime.py" in msg and "uses_sort" in msg


def test_a_second_process_loads_from_the_cache(tmp_path):
    script = (
        "import time, numpy as np, jax.numpy as jnp, solir\n"
        "f = solir.jit(lambda x: jnp.exp(x) * 2)\n"
        "t = time.perf_counter(); f.lower(np.ones(5, np.float32)).compile()\n"
        "print(time.perf_counter() - t)\n")
    env = {**os.environ, "SOLIR_CACHE_DIR": str(tmp_path)}
    cold = float(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, check=True).stdout)
    warm = float(subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                                text=True, check=True).stdout)
    entries = list(tmp_path.glob("*/*/manifest.json"))
    assert len(entries) == 1
    assert warm < cold          # the second process did not compile (no LLVM, no linking)


def corrupt(path, data):
    """Replace a file the way a bad copy would: a new file under the old name. (Overwriting a
    library that is loaded in place would crash any process that mapped it, C or Python.)"""
    tmp = path.with_suffix(".corrupt")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _entry_of(lowered):
    return cache_root() / lowered.compilation.ir_key()[:2] / lowered.compilation.ir_key()


def test_corrupted_cache_entry_is_rebuilt_with_a_warning(rng):
    f = solir.jit(lambda x: x * 3 + 1)
    x = rng.standard_normal(7).astype(np.float32)
    lowered = f.lower(x)
    lowered.compile()
    lib = _entry_of(lowered) / "model.so"
    corrupt(lib, b"garbage" + lib.read_bytes()[7:])
    with pytest.warns(solir.SolirWarning, match="bad cache entry"):
        again = f.lower(x).compile()
    np.testing.assert_allclose(again(x), x * 3 + 1)


def test_corrupted_artifact_raises_cache_error(tmp_path, rng):
    from solir.ir.parser import parse_module
    src = "func @f(%x: tensor<4xf32>) -> tensor<4xf32> {\n  %y = tensor.exp %x : tensor<4xf32>\n  return %y : tensor<4xf32>\n}\n"
    comp = solir.driver.Compilation(parse_module(src), solir.targets.host_target())
    comp.write_artifact(tmp_path)
    mod = solir.load(tmp_path)
    np.testing.assert_allclose(mod(np.zeros(4, np.float32))[0], np.ones(4))
    corrupt(tmp_path / "model.so", b"\x7fELF truncated")
    with pytest.raises(solir.CacheError, match="does not match the hash"):
        solir.load(tmp_path)
    corrupt(tmp_path / "manifest.json", b"{not json")
    with pytest.raises(solir.CacheError):
        solir.load(tmp_path)
    manifest = tmp_path / "manifest.json"
    manifest.unlink()
    with pytest.raises(solir.CacheError):
        solir.load(tmp_path)


def test_weights_file_is_checked_and_mapped_by_the_library(tmp_path, rng):
    """Large constants go to model.weights beside the library, which maps it on its first
    call; a missing, resized or altered file is refused by the loader before native code
    runs, and one that disappears after loading makes the call raise, not crash. A cache
    entry with a bad weights file is rebuilt."""
    w = rng.standard_normal((64, 32)).astype(np.float32)          # 8 KB: in the file
    small = rng.standard_normal(32).astype(np.float32)            # 128 B: in the library

    def f(x):
        return x @ w + small
    x = rng.standard_normal((3, 64)).astype(np.float32)
    comp = solir.jit(f).lower(x).compilation
    m = comp.write_artifact(tmp_path / "a")
    weights = tmp_path / "a" / "model.weights"
    assert m.weights == "model.weights" and m.weights_bytes == weights.stat().st_size >= w.nbytes
    assert m.weights_hash == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert w.tobytes() not in (tmp_path / "a" / "model.so").read_bytes()
    np.testing.assert_allclose(solir.load(tmp_path / "a")(x)[0], x @ w + small, rtol=1e-5, atol=1e-5)
    shutil.copytree(tmp_path / "a", tmp_path / "b")                 # a deployed copy runs
    np.testing.assert_allclose(solir.load(tmp_path / "b")(x)[0], x @ w + small, rtol=1e-5, atol=1e-5)
    data = weights.read_bytes()
    corrupt(weights, data[:-4])
    with pytest.raises(solir.CacheError, match="model.weights does not match"):
        solir.load(tmp_path / "a")
    corrupt(weights, bytes(len(data)))
    with pytest.raises(solir.CacheError, match="model.weights does not match"):
        solir.load(tmp_path / "a")
    weights.unlink()
    with pytest.raises(solir.CacheError, match="model.weights is missing"):
        solir.load(tmp_path / "a")
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    mod = solir.load(tmp_path / "c")                               # loaded, not yet called
    (tmp_path / "c" / "model.weights").unlink()
    with pytest.raises(solir.CacheError, match="could not map its weights"):
        mod(x)
    lowered = solir.jit(f).lower(x)
    lowered.compile()
    entry_weights = _entry_of(lowered) / "model.weights"
    corrupt(entry_weights, bytes(entry_weights.stat().st_size))
    with pytest.warns(solir.SolirWarning, match="bad cache entry"):
        again = solir.jit(f).lower(x).compile()
    np.testing.assert_allclose(again(x), x @ w + small, rtol=1e-5, atol=1e-5)


def test_foreign_artifact_is_refused(tmp_path):
    from solir.ir.parser import parse_module
    src = "func @f(%x: tensor<4xf32>) -> tensor<4xf32> {\n  %y = tensor.exp %x : tensor<4xf32>\n  return %y : tensor<4xf32>\n}\n"
    comp = solir.driver.Compilation(parse_module(src), solir.targets.get_target("neon"))
    comp.write_artifact(tmp_path)
    assert (tmp_path / "model.o").exists()
    with pytest.raises(solir.TargetError, match="aarch64"):
        solir.load(tmp_path)
    m = json.loads((tmp_path / "manifest.json").read_text())
    assert m["target"] == "neon" and m["inputs"][0]["shape"] == [4]


def test_num_threads_is_validated(compiled, monkeypatch):
    from solir.runtime.load import default_num_threads
    c, x, w = compiled
    with pytest.raises(solir.ArgumentError):
        c.module.set_num_threads(0)
    monkeypatch.setenv("SOLIR_NUM_THREADS", "lots")
    with pytest.raises(solir.ArgumentError, match="SOLIR_NUM_THREADS"):
        default_num_threads()
    monkeypatch.delenv("SOLIR_NUM_THREADS")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.module.set_num_threads(2)
        np.testing.assert_allclose(c(x, w), affine(x, w), rtol=2e-5, atol=2e-5)


def test_large_outputs_of_every_dtype_come_from_the_pool(monkeypatch):
    """Outputs above the pool's threshold are views of recycled blocks, for every dtype
    (bfloat16 included), independent of each other across calls. (The threshold is lowered
    here so that small arrays exercise it.)"""
    import jax.numpy as jnp

    from solir.runtime.load import _outputs
    monkeypatch.setattr(_outputs, "min_bytes", 1 << 16)
    x = np.arange(1 << 15, dtype=np.float32)
    f = solir.jit(lambda x: (x.astype(jnp.bfloat16), x * 2, x.astype(jnp.int32)))
    a, b, c = f(x)
    assert a.dtype == jnp.bfloat16 and b.dtype == np.float32 and c.dtype == np.int32
    np.testing.assert_array_equal(b, x * 2)
    first = b.copy()
    b2 = f(x + 1)[1]
    np.testing.assert_array_equal(b, first)          # an earlier result is never overwritten
    np.testing.assert_array_equal(b2, (x + 1) * 2)
    assert b.base is not None and b2.base is not None        # views of pool blocks


def test_outputs_from_numpy_start_on_a_cache_line(monkeypatch):
    """Outputs below the pool's threshold but above ALIGN_MIN_BYTES start 64-byte aligned
    (numpy's own start 16 bytes into a line, which turns off streaming stores), for every
    dtype, and agree with the unaligned ones. (The threshold is lowered here.)"""
    import jax.numpy as jnp

    from solir.runtime import load
    monkeypatch.setattr(load, "ALIGN_MIN_BYTES", 1 << 12)
    x = np.arange(1 << 13, dtype=np.float32).reshape(64, 128)
    f = solir.jit(lambda x: (x.astype(jnp.bfloat16), x * 2, jnp.exp(x / 8192)))
    for out, want in zip(f(x), (x.astype(jnp.bfloat16), x * 2, np.exp(x / 8192))):
        assert out.ctypes.data % 64 == 0 and out.shape == x.shape and out.flags.c_contiguous
        np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want, np.float32),
                                   rtol=1e-6)
    small = f(x[:4])[1]                             # below the threshold: numpy's own
    np.testing.assert_array_equal(small, x[:4] * 2)


def test_background_runtime_library_and_cache_stamp(tmp_path, monkeypatch, rng):
    """The runtime library builds in the background while LLVM runs (runtime_library_soon) and
    the link waits for it; one built earlier and deleted since is built again, not linked
    from a path that no longer exists; a cache entry carries the stamp that lets later loads
    skip rehashing its library."""
    from concurrent.futures import Future

    from solir.driver import STAMP
    from solir.runtime import build
    cache = str(tmp_path / "c")
    monkeypatch.setenv("SOLIR_CACHE_DIR", cache)
    x = rng.standard_normal(5).astype(np.float32)
    f = solir.jit(lambda v: v * 2 - 1)
    np.testing.assert_allclose(f(x), x * 2 - 1)
    assert (_entry_of(f.lower(x)) / STAMP).read_text().split()[0] == "model.so"
    np.testing.assert_allclose(solir.jit(lambda v: v * 2 - 1).lower(x).compile()(x), x * 2 - 1)
    for lib in (tmp_path / "c").glob(f"runtime-*/{build.RUNTIME_SONAME}"):
        lib.unlink()
    gone: Future = Future()
    gone.set_result(tmp_path / "nowhere" / build.RUNTIME_SONAME)
    monkeypatch.setitem(build._pending, cache, gone)
    np.testing.assert_allclose(solir.jit(lambda v: v * 3 - 1)(x), x * 3 - 1)
    assert list((tmp_path / "c").glob(f"runtime-*/{build.RUNTIME_SONAME}"))


def test_streamed_row_group_output_aligned_or_not(rng):
    """A row group whose traffic fills L3 (softmax over 32 MB here, avx2's L3 is 8 MB) writes
    its output with streaming stores, which need aligned rows: a misaligned output buffer
    takes the ordinary stores instead. Both give the same bits, at 1 and 2 threads."""
    from solir import zoo
    from solir.targets import TARGETS
    if TARGETS["avx2"].missing_features():
        pytest.skip("needs an AVX2 machine")
    x = rng.standard_normal((4096, 1024)).astype(np.float32)
    low = solir.jit(zoo.softmax, target="avx2").lower(x)
    assert "!nontemporal" in low.as_text("llvm")
    c = low.compile()
    want = np.asarray(c(x))
    m = c.module
    m._inputs[0] = m._pointer(x)
    for threads in (1, 2):
        m._rt.solir_set_num_threads(threads)
        for shift in (0, 1):                # elements: 64-byte aligned, then 4 bytes off
            raw = np.zeros(x.size + 16, np.float32)
            start = (-(raw.ctypes.data // 4)) % 16 + shift
            out = raw[start:start + x.size]
            m._outputs[0] = m._pointer(out)
            m._entry(m._inputs, m._outputs, m._workspace)
            np.testing.assert_array_equal(out.reshape(x.shape), want)
    m._rt.solir_set_num_threads(m.num_threads)
