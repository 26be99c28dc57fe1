"""A schedule never changes results: random matmul blockings, transposed and batched
layouts, vector on/off and thread counts all agree with the reference interpreter (and with
each other bit for bit where only the thread count differs)."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import solir
from solir.ir.interpreter import run_module
from solir.targets import host_target


@st.composite
def matmul_case(draw):
    batch = draw(st.sampled_from([1, 2, 3]))
    m, n, k = (draw(st.integers(1, 40)) for _ in range(3))
    layout = draw(st.sampled_from(["nn", "nt", "tn", "tt"]))
    shared = draw(st.booleans())          # the rhs shared by every batch (a weight)
    # KC up to 48, or 1100: a B panel past L1 runs the tiles rows outer (schedule.rows_outer)
    tiles = (draw(st.integers(1, 9)), draw(st.sampled_from([8, 16, 24, 32])),
             draw(st.integers(1, 48) | st.just(1100)), draw(st.integers(1, 48)),
             draw(st.integers(1, 48)), draw(st.integers(1, 4)))
    threads = draw(st.sampled_from([1, 2]))
    return batch, m, n, k, layout, shared, tiles, threads


def _operands(batch, m, n, k, layout, shared, rng):
    a = rng.standard_normal((batch, k, m) if layout[0] == "t" else (batch, m, k)).astype(np.float32)
    shape_b = (k, n) if layout[1] == "n" else (n, k)
    b = rng.standard_normal(shape_b if shared else (batch,) + shape_b).astype(np.float32)
    return a, b


def _fn(layout, shared):
    lhs = "bkm" if layout[0] == "t" else "bmk"
    rhs = ("kn" if layout[1] == "n" else "nk") if shared else ("bkn" if layout[1] == "n" else "bnk")
    return lambda a, b: jnp.einsum(f"{lhs},{rhs}->bmn", a, b)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=matmul_case())
def test_random_matmul_blocking_matches_the_interpreter(case):
    batch, m, n, k, layout, shared, tiles, threads = case
    a, b = _operands(batch, m, n, k, layout, shared, np.random.default_rng(0))
    f = solir.jit(_fn(layout, shared), options=solir.Options(matmul_tiles=tiles),
                  num_threads=threads, algorithms={"dot": "matmul"})
    lowered = f.lower(a, b)
    assert "kernel.matmul" in lowered.as_text("schedule")
    (want,) = run_module(lowered.compilation.module, [a, b])
    np.testing.assert_allclose(f(a, b), want, rtol=1e-5, atol=1e-5)


@settings(max_examples=200, deadline=None)
@given(m=st.integers(1, 3000), n=st.integers(1, 3000), k=st.integers(1, 3000),
       target=st.sampled_from(["avx2", "avx512", "neon", "x86-64"]))
def test_matmul_blocking_gives_two_threads_equal_shares(m, n, k, target):
    """For 2 threads the units of work come in pairs of equal block counts: never 3 row blocks
    in groups of 2 (one thread twice the other's work, as MobileNet's 512x196 products had)."""
    from solir.lower.schedule import matmul_blocking
    from solir.targets import TARGETS
    b = matmul_blocking(TARGETS[target], 4, m, n, k, 2)
    row_blocks, col_blocks = -(-m // b["mc"]), -(-n // b["nc"])
    units = col_blocks * -(-row_blocks // b["mg"])
    assert units == 1 or units % 2 == 0, (b, row_blocks, col_blocks)
    if col_blocks == 1 and units == 2:
        assert row_blocks % 2 == 0 or b["mc"] == b["mr"], b
    assert b["mc"] % b["mr"] == 0 and b["nc"] % b["nr"] == 0


def test_one_row_block_keeps_its_packed_b_block_in_half_of_l2():
    """A pointwise conv's product (128 rows, one row block) reads each packed B block once:
    the block is sized for L2, not L3. A product of several row blocks keeps L3's."""
    from solir.lower.schedule import matmul_blocking
    from solir.targets import TARGETS
    t = TARGETS["avx2"]
    b = matmul_blocking(t, 4, 128, 3136, 128)
    assert -(-128 // b["mc"]) == 1
    assert b["kc"] * b["nc"] * 4 <= t.l2_kib * 1024 // 2 < b["kc"] * 3136 * 4
    big = matmul_blocking(t, 4, 1024, 3136, 128)
    assert -(-1024 // big["mc"]) > 1 and big["nc"] > b["nc"]


@st.composite
def epilogue_case(draw):
    batch = draw(st.sampled_from([1, 2]))
    m, n, k = (draw(st.integers(1, 40)) for _ in range(3))
    kind = draw(st.sampled_from(["bias_cols", "bias_rows", "bn_relu", "residual", "gelu"]))
    tiles = (draw(st.integers(1, 9)), draw(st.sampled_from([8, 16, 32])),
             draw(st.integers(1, 48)), draw(st.integers(1, 48)), draw(st.integers(1, 48)),
             draw(st.integers(1, 4)))
    return batch, m, n, k, kind, tiles, draw(st.sampled_from([1, 2]))


EPILOGUES = {
    "bias_cols": lambda c, v, r: jax.nn.relu(c + v[-c.shape[2]:]),
    "bias_rows": lambda c, v, r: c + v[:c.shape[1], None],
    "bn_relu": lambda c, v, r: jnp.maximum(c * v[:c.shape[1], None] + v[-c.shape[1]:, None], 0),
    "residual": lambda c, v, r: c + r,
    "gelu": lambda c, v, r: jax.nn.gelu(c * 0.5 + v[-c.shape[2]:]),
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=epilogue_case())
def test_matmul_epilogues_match_the_interpreter(case):
    """Bias, BN + ReLU, a residual and GELU after a product run in the matmul's tile
    write-back (fuse-epilogues), for any blocking, edge tiles and K split into blocks."""
    batch, m, n, k, kind, tiles, threads = case
    rng = np.random.default_rng(0)
    a = rng.standard_normal((batch, m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    v = rng.standard_normal(2 * max(m, n)).astype(np.float32)
    r = rng.standard_normal((batch, m, n)).astype(np.float32)
    fn = lambda a, w, v, r: EPILOGUES[kind](jnp.einsum("bmk,kn->bmn", a, w), v, r)  # noqa: E731
    f = solir.jit(fn, options=solir.Options(matmul_tiles=tiles, epilogue_bytes=0),
                  num_threads=threads, algorithms={"dot": "matmul"})
    lowered = f.lower(a, w, v, r)
    if batch == 1:      # (a batch folded into M makes a per-row vector periodic in the rows)
        assert "epilogue_maps" in lowered.as_text("schedule")
    (want,) = run_module(lowered.compilation.module, [a, w, v, r])
    np.testing.assert_allclose(f(a, w, v, r), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(want, fn(a, w, v, r), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2])
def test_rows_outer_tile_order_matches_numpy(threads):
    """Where a KC x NR panel of B overflows L1 the block's tiles run an A panel against the
    whole B block (schedule.rows_outer): forced here with KC = 1100 on any host, over K
    split into blocks (C accumulated), edge rows and columns, plain and with an epilogue,
    with A read in place (50 rows) and packed a panel at a time before its row of tiles
    (130 rows: more than half of any host's L2; and a transposed A)."""
    rng = np.random.default_rng(3)
    w = rng.standard_normal((2300, 70)).astype(np.float32)
    v = rng.standard_normal(70).astype(np.float32)
    tiles = (6, 16, 1100, 24, 32, 1)
    cases = [(lambda a, w, v: a @ w, (50, 2300), "A read in place"),
             (lambda a, w, v: jax.nn.relu(a @ w + v), (50, 2300), "A read in place"),
             (lambda a, w, v: a @ w, (130, 2300), "A packed a panel at a time"),
             (lambda a, w, v: jax.nn.relu(a @ w + v), (130, 2300), "A packed a panel at a time")]
    for fn, shape, source in cases:
        a = rng.standard_normal(shape).astype(np.float32)
        f = solir.jit(fn, options=solir.Options(matmul_tiles=tiles, epilogue_bytes=0),
                      num_threads=threads, algorithms={"dot": "matmul"})
        loops = f.lower(a, w, v).as_text("loops")
        assert "(rows outer)" in loops and source in loops
        want = np.asarray(fn(a.astype(np.float64), w.astype(np.float64), v.astype(np.float64)))
        np.testing.assert_allclose(f(a, w, v), want, rtol=1e-4, atol=1e-3)
    # a transposed A (A stored [K, M]: dot_general contracting lhs dim 0), packed a panel at a time
    at = rng.standard_normal((40, 130)).astype(np.float32)
    tdot = lambda a, w: jax.lax.dot_general(a, w, (((0,), (0,)), ((), ())))  # noqa: E731
    f = solir.jit(tdot, options=solir.Options(matmul_tiles=tiles), num_threads=threads,
                  algorithms={"dot": "matmul"})
    loops = f.lower(at, w[:40]).as_text("loops")
    assert "trans_a = true" in loops and "A packed a panel at a time" in loops
    np.testing.assert_allclose(f(at, w[:40]), at.astype(np.float64).T @ w[:40].astype(np.float64),
                               rtol=1e-4, atol=1e-3)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(m=st.integers(32, 60), k=st.integers(1101, 2600), nr=st.sampled_from([16, 64]),
       nc_tiles=st.integers(1, 3), extra=st.integers(0, 20), relu=st.booleans(),
       threads=st.sampled_from([1, 2, 3]))
@example(m=49, k=2300, nr=64, nc_tiles=2, extra=7, relu=True, threads=1)
@example(m=37, k=2594, nr=16, nc_tiles=1, extra=0, relu=False, threads=1)
def test_prepacked_b_blocks_prefetched_by_the_tiles_before_match_the_interpreter(
        m, k, nr, nc_tiles, extra, relu, threads):
    """Constant weights whose rows all fit one row block: each B block's full tiles prefetch
    the next block (the unit's next K block, or the next unit's first), and the last
    block's tiles prefetch nothing. Rows outer forced with KC = 1100,
    K in two or three blocks, N in one to several column blocks and a ragged last one,
    plain and with an epilogue, 1-3 threads (units split between them)."""
    rng = np.random.default_rng(5)
    n = nr * nc_tiles + extra
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)   # outputs ~1
    v = rng.standard_normal(n).astype(np.float32)
    fn = (lambda a: jax.nn.relu(a @ w + v)) if relu else (lambda a: a @ w)
    f = solir.jit(fn, options=solir.Options(matmul_tiles=(4, nr, 1100, 64, nr * nc_tiles, 1),
                                            epilogue_bytes=0),
                  num_threads=threads, algorithms={"dot": "matmul"})
    lowered = f.lower(a)
    assert "next block prefetched" in lowered.as_text("loops")
    (want,) = run_module(lowered.compilation.module, [a])
    np.testing.assert_allclose(f(a), want, rtol=1e-5, atol=5e-5)   # K ~ 2600 sums, reordered


def test_thread_count_never_changes_a_bit():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 257)).astype(np.float32), rng.standard_normal((257, 333)).astype(np.float32)
    outs = [solir.jit(lambda a, b: jnp.tanh(a @ b), num_threads=t)(a, b) for t in (1, 2, 3)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vectorize=st.booleans(), parallel=st.booleans(), fuse=st.booleans(),
       shape=st.tuples(st.integers(1, 9), st.integers(1, 70)))
def test_generic_schedules_match_the_interpreter(vectorize, parallel, fuse, shape):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    fn = lambda x: jnp.exp(x - x.max(axis=1, keepdims=True)).sum(axis=1) * jnp.tanh(x[:, 0])  # noqa: E731
    f = solir.jit(fn, options=solir.Options(vectorize=vectorize, parallel=parallel, fuse=fuse,
                                            parallel_min_work=1))
    lowered = f.lower(x)
    (want,) = run_module(lowered.compilation.module, [x])
    np.testing.assert_allclose(f(x), want, rtol=2e-6, atol=1e-6)


@st.composite
def conv_case(draw):
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 9))
    h, w = draw(st.integers(3, 11)), draw(st.integers(3, 11))
    k = draw(st.sampled_from([1, 3]))
    stride = draw(st.sampled_from([1, 2]))
    pad = draw(st.sampled_from(["SAME", "VALID"]))
    choices = [draw(st.sampled_from(["im2col", "loops"] + (["im2col_rows"] if layout == "NCHW" else [])))
               for _ in range(2)]
    return layout, n, c, o, h, w, k, stride, pad, choices


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=conv_case())
def test_algorithm_choices_match_the_interpreter(case):
    """Two convs in a row, each forced to a random algorithm: same results as the reference."""
    import jax
    layout, n, c, o, h, w, k, stride, pad, choices = case
    rng = np.random.default_rng(3)
    dn = (layout, "OIHW" if layout == "NCHW" else "HWIO", layout)
    x = rng.standard_normal((n, c, h, w) if layout == "NCHW" else (n, h, w, c)).astype(np.float32)
    w1 = rng.standard_normal((o, c, k, k) if layout == "NCHW" else (k, k, c, o)).astype(np.float32)
    w2 = rng.standard_normal((o, o, k, k) if layout == "NCHW" else (k, k, o, o)).astype(np.float32)

    def fn(x, w1, w2):
        y = jax.lax.conv_general_dilated(x, w1, (stride, stride), pad, dimension_numbers=dn)
        return jax.lax.conv_general_dilated(jnp.tanh(y), w2, (1, 1), "SAME", dimension_numbers=dn)

    f = solir.jit(fn, algorithms={"conv:0": choices[0], "conv:1": choices[1]})
    lowered = f.lower(x, w1, w2)
    table = lowered.as_text("algorithms")
    assert "conv:0      " in table and choices[0] in table.splitlines()[1]
    (want,) = run_module(lowered.compilation.module, [x, w1, w2])
    np.testing.assert_allclose(f(x, w1, w2), want, rtol=2e-5, atol=2e-5)


def test_impossible_algorithm_is_a_clear_error():
    x = np.ones((1, 4, 5, 5), np.float32)
    w = np.ones((4, 1, 3, 3), np.float32)
    import jax
    fn = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", feature_group_count=4)  # noqa: E731
    with pytest.raises(solir.SolirError, match="conv:0 cannot use 'im2col': a grouped conv"):
        solir.jit(fn, algorithms={"conv": "im2col"})(x, w)
    with pytest.raises(solir.SolirError, match="no algorithm 'fft' for conv"):
        solir.jit(fn, algorithms={"conv": "fft"})


@st.composite
def patches_case(draw):
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 7)), draw(st.integers(1, 9))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h = draw(st.integers((kh - 1) * dh + 1, 24))
    w = draw(st.integers((kw - 1) * dw + 1, 40))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    sh, sw = draw(st.sampled_from([1, 2])), draw(st.sampled_from([1, 2]))
    tiles = (draw(st.integers(1, 8)), draw(st.sampled_from([16, 32, 64])),
             draw(st.integers(1, 40)), draw(st.integers(1, 40)), draw(st.integers(1, 90)), 1)
    return n, c, o, kh, kw, dh, dw, h, w, pads, (sh, sw), tiles


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=patches_case())
# a ResNet stem's geometry (7x7, stride 2, padding 3), small
@example(case=(1, 3, 5, 7, 7, 1, 1, 23, 37, ((3, 3), (3, 3)), (2, 2), (6, 64, 152, 36, 128, 1)))
def test_conv_patches_gathered_while_packing_match_the_interpreter(case):
    """NCHW convs whose B panels are gathered from the image (no patch matrix): random
    windows, dilations, asymmetric padding, row and column strides (column stride 2: every
    other element of a row) and blockings whose KC splits the window of a channel."""
    import jax
    n, c, o, kh, kw, dh, dw, h, w, pads, (sh, sw), tiles = case
    rng = np.random.default_rng(5)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    k = rng.standard_normal((o, c, kh, kw)).astype(np.float32)

    def fn(x, k):
        return jax.lax.conv_general_dilated(x, k, (sh, sw), pads, rhs_dilation=(dh, dw),
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    f = solir.jit(fn, algorithms={"conv": "im2col"}, options=solir.Options(matmul_tiles=tiles))
    lowered = f.lower(x, k)
    pointwise = kh == kw == sh == sw == 1 and pads == ((0, 0), (0, 0))   # reads the image as is
    assert pointwise or "patches = " in lowered.as_text("schedule")
    (want,) = run_module(lowered.compilation.module, [x, k])
    np.testing.assert_allclose(f(x, k), want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(want, np.asarray(jax.jit(fn)(x, k)), rtol=2e-5, atol=2e-5)


@st.composite
def winograd_case(draw):
    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 9)), draw(st.integers(1, 12))
    h, w = draw(st.integers(3, 26)), draw(st.integers(3, 75))     # up to 19 tiles: 2 vectors
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    algorithm = draw(st.sampled_from(["winograd", "winograd2"]))
    constant = draw(st.booleans())        # weights known at compile time: U packed then
    threads = draw(st.sampled_from([1, 2]))
    return n, c, o, h, w, pads, algorithm, constant, threads


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=winograd_case())
# two AVX2 miscompiles of the input transform's masked row loads that random runs found
@example(case=(1, 1, 1, 3, 5, ((2, 2), (2, 2)), "winograd", False, 1))
@example(case=(1, 1, 1, 9, 7, ((1, 1), (1, 1)), "winograd2", False, 1))
def test_winograd_matches_the_interpreter_and_jax(case):
    """F(4x4,3x3) and F(2x2,3x3): images whose tiles overhang the output, asymmetric
    padding, several vectors of tiles per row, batches, constant or runtime weights, one or
    two threads (f64: tests/test_passes.py). F(4x4)'s transforms cost a few bits in f32,
    hence the tolerance relative to the output's scale."""
    import jax
    n, c, o, h, w, pads, algorithm, constant, threads = case
    dtype = np.float32
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    k = rng.standard_normal((o, c, 3, 3)).astype(dtype)

    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), pads,
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"))

    fn, args = ((lambda x: conv(x, k)), [x]) if constant else (conv, [x, k])
    f = solir.jit(fn, algorithms={"conv": algorithm}, num_threads=threads,
                  options=solir.Options(parallel_min_work=1))
    lowered = f.lower(*args)
    text = lowered.as_text("schedule")
    assert "kernel.winograd_input" in text and "kernel.winograd_output" in text
    (want,) = run_module(lowered.compilation.module, args)
    (kernels,) = run_module(lowered.compilation.lower(), args)   # the transforms' references
    got = np.asarray(f(*args))
    direct = np.asarray(jax.jit(conv)(x, k))
    scale = max(1.0, float(np.abs(direct).max()))
    tol = 1e-5 if algorithm == "winograd" else 2e-6
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * scale)
    np.testing.assert_allclose(kernels, want, rtol=0, atol=tol * scale)
    np.testing.assert_allclose(got, direct, rtol=0, atol=tol * scale)


@st.composite
def depthwise_case(draw):
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 6))
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 40))
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = tuple(1 if s > 1 else draw(st.integers(1, 2)) for s in stride)
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    assume = all(size + lo + hi >= (k - 1) * d + 1 for size, (lo, hi), k, d
                 in zip((h, w), pads, (kh, kw), dilation))
    constant = draw(st.booleans())
    threads = draw(st.sampled_from([1, 2]))
    return n, c, h, w, kh, kw, stride, dilation, pads, constant, threads, assume


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=depthwise_case())
# stride 3 with a right pad past the row: LLVM once read a masked-off lane of the strided pad
@example(case=(1, 2, 8, 6, 2, 1, (3, 3), (1, 1), ((2, 0), (2, 2)), False, 1, True))
def test_depthwise_stencil_matches_the_interpreter_and_jax(case):
    """The depthwise kernel (solir/ir/ops/depthwise.py): strides 1-3 (phases), dilation at
    stride 1, asymmetric pads, kernels up to 5x5, batches, rows shorter and longer than a
    vector, constant or runtime weights, one or two threads (f64: tests/test_passes.py)."""
    import jax
    from hypothesis import assume
    n, c, h, w, kh, kw, stride, dilation, pads, constant, threads, fits = case
    assume(fits)
    dtype = np.float32
    rng = np.random.default_rng(3)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    k = rng.standard_normal((c, 1, kh, kw)).astype(dtype)

    def conv(x, k):
        return jax.lax.conv_general_dilated(x, k, stride, pads, rhs_dilation=dilation,
                                            dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                            feature_group_count=c)

    fn, args = ((lambda x: conv(x, k)), [x]) if constant else (conv, [x, k])
    f = solir.jit(fn, algorithms={"conv": "depthwise"}, num_threads=threads,
                  options=solir.Options(parallel_min_work=1))
    lowered = f.lower(*args)
    assert "dw_stencil" in lowered.as_text("lower-to-kernels")
    (want,) = run_module(lowered.compilation.module, args)
    got = np.asarray(f(*args))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, np.asarray(jax.jit(conv)(x, k)), rtol=1e-4, atol=1e-4)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(w=st.integers(1, 80), stride=st.sampled_from([1, 2, 3]), pad=st.integers(0, 2),
       pool=st.booleans(), threads=st.sampled_from([1, 2]))
@example(w=70, stride=2, pad=1, pool=False, threads=1)    # 4 jammed vectors, 3, a remainder
def test_jammed_strided_loop_nests_match_the_interpreter(w, stride, pad, pool, threads):
    """A conv's or pool's own loop nest (`loops`): up to JAM output vectors run through the
    window together, and a strided padded read is one load and a shuffle where the vector
    is inside the row, lane by lane at its edges. Output widths from below a vector to
    several jammed groups plus a remainder; sums and maxima; the reference decides."""
    import jax
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 5, w + 2)).astype(np.float32)
    k = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    pads = ((pad, pad), (pad, pad))
    if pool:
        def fn(x):
            return jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 1, 3, 3),
                                         (1, 1, stride, stride), ((0, 0), (0, 0)) + pads)
    else:
        def fn(x):
            return jax.lax.conv_general_dilated(x, k, (stride, stride), pads,
                                                dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                                feature_group_count=3)
    f = solir.jit(fn, algorithms={} if pool else {"conv": "loops"}, num_threads=threads,
                  options=solir.Options(parallel_min_work=1))
    lowered = f.lower(x)
    out_w = lowered.compilation.module.funcs[0].results[0].type.shape[-1]
    if out_w >= 2 * host_target().lanes(4):       # two vectors or more: jammed
        assert re.search(r'd\d+\.j', lowered.as_text("llvm"))
    (want,) = run_module(lowered.compilation.module, [x])
    got = np.asarray(f(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, np.asarray(jax.jit(fn)(x)), rtol=1e-4, atol=1e-4)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(h=st.integers(1, 12), w=st.integers(1, 40), window=st.integers(1, 5),
       stride=st.sampled_from([1, 2, 3]), dilation=st.sampled_from([1, 2]),
       pads=st.tuples(*[st.integers(0, 4)] * 4), kind=st.sampled_from(["conv", "pool", "pad"]),
       constant=st.booleans(), threads=st.sampled_from([1, 2]))
@example(h=12, w=40, window=3, stride=1, dilation=1, pads=(1, 1, 1, 1), kind="conv",
         constant=True, threads=1)
@example(h=3, w=5, window=5, stride=1, dilation=2, pads=(4, 0, 0, 4), kind="pool",
         constant=False, threads=2)           # every row and column is at the border
def test_loop_nests_split_at_the_border_match_the_interpreter(h, w, window, stride, dilation,
                                                              pads, kind, constant, threads):
    """A loop nest with padded reads runs each loop whose index moves them as border,
    interior, border: the interior's reads are unchecked, and a constant operand's loads are
    invariant (hoisted out of the loops they do not vary in). Images from 1x1 up, windows
    wider than the image, asymmetric and oversized padding (no interior at all), strides,
    dilations; a conv's own loop nest, a pool's and a pad; the reference decides."""
    import jax
    rng = np.random.default_rng(h * 100 + w)
    x = rng.standard_normal((1, 3, h, w)).astype(np.float32)
    k = rng.standard_normal((3, 1, window, window)).astype(np.float32)
    pt, pb, pl, pr = pads
    ext = (window - 1) * dilation + 1
    if (h + pt + pb < ext or w + pl + pr < ext) and kind != "pad":
        return                                   # no output
    if kind == "conv":
        def fn(x, k):
            return jax.lax.conv_general_dilated(x, k, (stride, stride), ((pt, pb), (pl, pr)),
                                                rhs_dilation=(dilation, dilation),
                                                dimension_numbers=("NCHW", "OIHW", "NCHW"),
                                                feature_group_count=3)
    elif kind == "pool":
        def fn(x, k):
            return jax.lax.reduce_window(x, -np.inf, jax.lax.max, (1, 1, window, window),
                                         (1, 1, stride, stride),
                                         ((0, 0), (0, 0), (pt, pb), (pl, pr)),
                                         window_dilation=(1, 1, dilation, dilation))
    else:
        def fn(x, k):
            return jax.lax.pad(x, 0.5, [(0, 0, 0), (0, 0, 0), (pt, pb, 0), (pl, pr, 0)]) * 2
    f1, args = ((lambda x: fn(x, k)), [x]) if constant else (fn, [x, k])
    f = solir.jit(f1, algorithms={"conv": "loops"}, num_threads=threads,
                  options=solir.Options(parallel_min_work=1))
    lowered = f.lower(*args)
    (want,) = run_module(lowered.compilation.module, args)
    got = np.asarray(f(*args))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got, np.asarray(jax.jit(f1)(*args)), rtol=1e-4, atol=1e-4)
    oh = (h + pt + pb - ext) // stride + 1
    inside = [r for r in range(oh) if r * stride >= pt and r * stride - pt + ext <= h]
    if kind == "conv" and oh >= 4 and 2 <= len(inside) < oh:   # rows split (border_splits)
        assert re.search(r"d\d+\.in", lowered.as_text("llvm"))
        assert re.search(r"for d\d+ in 0\.\.\d+:  // .*interior \d+\.\.\d+ unchecked",
                         lowered.as_text("loops"))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blocks=st.integers(1, 3), h=st.integers(1, 4), w=st.integers(1, 40),
       dtype=st.just("float32"), threads=st.sampled_from([1, 2]))
@example(blocks=2, h=3, w=37, dtype="float32", threads=1)   # two whole steps and a rest
def test_transposed_reads_match_the_interpreter(blocks, h, w, dtype, threads):
    """A layout change to channel blocks (NCHW -> NCHWc, with a per-channel scale, shift and
    ReLU): each output vector's lanes are a plane apart in the input. The loop along the
    row steps a vector at a time, reading a vector's worth of rows whole and transposing
    them in registers; the row's rest goes point by point."""
    import jax.numpy as jnp
    lanes = host_target().lanes(np.dtype(dtype).itemsize)
    c = blocks * lanes
    rng = np.random.default_rng(blocks * 1000 + h * 100 + w)
    x = rng.standard_normal((1, c, h, w)).astype(dtype)
    scale, shift = (rng.standard_normal(c).astype(dtype) for _ in range(2))

    def fn(x):
        y = jnp.maximum(x * scale[None, :, None, None] + shift[None, :, None, None], 0)
        return y.reshape(1, blocks, lanes, h, w).transpose(0, 1, 3, 4, 2)
    f = solir.jit(fn, num_threads=threads, options=solir.Options(parallel_min_work=1))
    lowered = f.lower(x)
    if w >= lanes:
        assert re.search(r"d\d+\.t\b", lowered.as_text("llvm"))
        assert f"{lanes} at a time, %arg0 read as rows and transposed" in lowered.as_text("loops")
    (want,) = run_module(lowered.compilation.module, [x])
    got = np.asarray(f(x))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)       # (x s + b: one FMA)
    np.testing.assert_allclose(got, np.asarray(fn(x)), rtol=1e-6, atol=1e-6)


def test_depthwise_cost_model():
    """Stride 1: the stencil; strided: the loop nest;
    a channel multiplier (groups < outputs): the loop nest, and forcing the stencil says why."""
    import jax
    x = np.zeros((1, 32, 56, 56), np.float32)

    def line(stride, mult=1, force=None):
        k = np.ones((32 * mult, 1, 3, 3), np.float32)
        fn = lambda x: jax.lax.conv_general_dilated(   # noqa: E731
            x, k, (stride, stride), ((1, 1), (1, 1)), feature_group_count=32,
            dimension_numbers=("NCHW", "OIHW", "NCHW"))
        return solir.jit(fn, algorithms={"conv": force} if force else None).lower(x).as_text(
            "algorithms").splitlines()[1]
    assert "depthwise" in line(1) and "stride 1" in line(1)
    assert " loops " in line(2) and "stride 2x2" in line(2)
    assert " loops " in line(1, mult=2)
    with pytest.raises(solir.SolirError, match="cannot use 'depthwise': needs one filter per channel"):
        line(1, mult=2, force="depthwise")


def test_winograd_cost_model_and_its_limits():
    """The cost model takes Winograd F(4x4) for a 56x56 image with 64 channels, F(2x2) for
    14x14 with 256 and 7x7 with 512, and never Winograd for a stride-2 conv; a forced
    choice it cannot honour names the reason."""
    import jax
    rng = np.random.default_rng(8)

    def table(c, hw, stride=1, force=None):
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        k = rng.standard_normal((c, c, 3, 3)).astype(np.float32)
        fn = lambda x: jax.lax.conv_general_dilated(x, k, (stride, stride), "SAME",  # noqa: E731
                                                    dimension_numbers=("NCHW", "OIHW", "NCHW"))
        line = solir.jit(fn, algorithms={"conv": force} if force else None).lower(x).as_text(
            "algorithms").splitlines()[1]
        return re.search(r"\s\d+  (\w+) ", line).group(1), line

    chosen, line = table(64, 56)
    assert chosen == "winograd" and "against im2col" in line
    # 7x7 with 512: F(2x2)'s 16 tile columns run on a one-vector edge microkernel
    assert table(512, 7)[0] == "winograd2"
    # 14x14 with 256: F(4x4)'s weights are 4x the kernel's, F(2x2)'s 1.8x
    assert table(256, 14)[0] == "winograd2"
    assert table(64, 56, stride=2)[0] in ("im2col", "im2col_rows")
    with pytest.raises(solir.SolirError, match="cannot use 'winograd': needs stride 1"):
        table(8, 9, stride=2, force="winograd")


@pytest.mark.parametrize("threads", [1, 2])
def test_row_groups_streaming_large_rows(threads):
    """Softmax and layernorm over matrices larger than L2 run as row groups that prefetch the
    next row of what they stream (solir/lower/llvm/kernels/rows.py): the prefetches reach past
    the last row, which must be harmless, and results must match jax and not depend on threads."""
    import jax
    from solir import zoo
    from tests.tolerances import assert_close
    x = np.random.default_rng(0).standard_normal((600, 1030)).astype(np.float32)   # 2.4 MB
    g = np.random.default_rng(1).standard_normal(1030).astype(np.float32)
    for fn, args in ((zoo.softmax, (x,)), (zoo.layernorm, (x, g, g))):
        lowered = solir.jit(fn, num_threads=threads).lower(*args)
        if x.nbytes >= solir.get_target("host").l2_kib * 1024:
            assert "prefetch" in lowered.as_text("asm")
        assert_close(lowered.compile()(*args), np.asarray(jax.jit(fn)(*args)))


_STRIP_AT_A_PAGE_END = r'''
import ctypes, mmap, re, sys
import numpy as np, llvmlite.binding as llvm, solir
rng = np.random.default_rng(5)
w = rng.standard_normal((30, 40)).astype(np.float32)
f = solir.jit(lambda x: w @ x, algorithms={"dot": "matmul"})
txt = f.lower(np.zeros((40, 196), np.float32)).as_text("llvm")
[name] = set(re.findall(r'define internal void @"(solir\.mm\.cols(\d+)x(\d+)of(\d+)[^"]*)"', txt))
name, mr, w_, nr = name[0], int(name[1]), int(name[2]), int(name[3])
txt = txt.replace(f'define internal void @"{name}"', f'define void @"{name}"')
llvm.initialize_native_target(); llvm.initialize_native_asmprinter()
mod = llvm.parse_assembly(txt)
tm = llvm.Target.from_default_triple().create_target_machine(
    cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=2)
ee = llvm.create_mcjit_compiler(mod, tm); ee.finalize_object()
cols = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)(
    ee.get_function_address(name))
page = mmap.PAGESIZE
buf = mmap.mmap(-1, 2 * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
libc = ctypes.CDLL(None)
assert libc.mprotect(ctypes.c_void_p(base + page), page, 0) == 0     # the next page: no access
for k in (1, 2, 3, 5, 37):
    a = rng.standard_normal((k, mr)).astype(np.float32)                 # the panel ends the page
    at = base + page - a.nbytes
    ctypes.memmove(at, a.ctypes.data, a.nbytes)
    bp = rng.standard_normal((k, nr)).astype(np.float32)
    tile = np.zeros((mr, nr), np.float32)
    cols(k, at, bp.ctypes.data, tile.ctypes.data)
    np.testing.assert_allclose(tile[:, :w_], a.T @ bp[:, :w_], rtol=1e-5, atol=1e-5)
print("ok", name)
'''


def test_column_strip_reads_nothing_past_the_a_panel():
    """The last-columns strip (vectors along M) loads a vector of the A panel per k step;
    its lanes past MR run on into the next steps, and past a prepacked A's last panel, the
    array's end. With A's panel ending a page and the next page unmapped, it must not fault
    (AVX-512's 16 lanes over 6 rows reach two steps on). In a child: a fault kills it."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", _STRIP_AT_A_PAGE_END], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("ok")


@st.composite
def nchwc_case(draw):
    n = draw(st.integers(1, 2))
    c = 16 * draw(st.integers(1, 3))
    o = 16 * draw(st.integers(1, 5))
    h, w = draw(st.integers(1, 15)), draw(st.integers(1, 15))
    kh, kw = draw(st.sampled_from([(3, 3), (1, 3), (5, 5)]))
    stride = draw(st.sampled_from([1, 2]))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(2))
    assume = h + sum(pads[0]) >= kh and w + sum(pads[1]) >= kw
    tiles = draw(st.none() | st.tuples(st.integers(1, 8), st.sampled_from([16, 32, 64]),
                                        st.integers(1, 48), st.integers(1, 40),
                                        st.integers(1, 90), st.just(1)))
    threads = draw(st.sampled_from([1, 2]))
    constant = draw(st.booleans())
    return n, c, o, h, w, kh, kw, stride, pads, tiles, threads, constant, assume


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=nchwc_case())
# a MobileNet block: 14x14 (196 positions: 32 row tiles of 6 and one of 4), K split in two
@example(case=(1, 32, 64, 14, 14, 3, 3, 1, ((1, 1), (1, 1)), (6, 64, 16, 36, 64, 1), 1, True,
               True))
# a 7x7 MobileNet block, rows outer: the pointwise conv's weight blocks prefetched by the
# tiles of the block before (K in two blocks of channel blocks, N in two column blocks)
@example(case=(1, 1152, 160, 7, 7, 3, 3, 1, ((1, 1), (1, 1)), (4, 64, 1104, 64, 128, 1), 2,
               True, True))
def test_nchwc_chain_matches_the_interpreter_and_jax(case):
    """A depthwise conv, BN-like scale and shift, ReLU, a pointwise conv, its own scale,
    shift and clip, then another depthwise conv: the cost model puts the chain in NCHWc
    (solir/ir/ops/nchwc.py), whose layout changes cancel between the convs. Random
    channel blocks, images (down to 1x1), windows, strides, asymmetric pads, matmul
    blockings (KC splitting the channel blocks, any MR, column blocks), threads, and
    constant or runtime weights; the reference interpreter and jax.jit decide."""
    import jax
    from hypothesis import assume
    n, c, o, h, w, kh, kw, stride, pads, tiles, threads, constant, fits = case
    assume(fits)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    dw1 = rng.standard_normal((c, 1, kh, kw)).astype(np.float32)
    pw = (rng.standard_normal((o, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    dw2 = rng.standard_normal((o, 1, 3, 3)).astype(np.float32)
    s1, b1 = rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)
    s2, b2 = rng.standard_normal(o).astype(np.float32), rng.standard_normal(o).astype(np.float32)
    dn = ("NCHW", "OIHW", "NCHW")

    def net(x, dw1, pw, dw2):
        y = jax.lax.conv_general_dilated(x, dw1, (stride, stride), pads, dimension_numbers=dn,
                                         feature_group_count=c)
        y = jnp.maximum(y * s1[:, None, None] + b1[:, None, None], 0.0)
        y = jax.lax.conv_general_dilated(y, pw, (1, 1), "VALID", dimension_numbers=dn)
        y = jnp.clip(y * s2[:, None, None] + b2[:, None, None], 0.0, 6.0)
        return jax.lax.conv_general_dilated(y, dw2, (1, 1), "SAME", dimension_numbers=dn,
                                            feature_group_count=o)

    fn, args = ((lambda x: net(x, dw1, pw, dw2)), [x]) if constant else (net, [x, dw1, pw, dw2])
    f = solir.jit(fn, num_threads=threads,
                  options=solir.Options(matmul_tiles=tiles, parallel_min_work=1))
    lowered = f.lower(*args)
    table = lowered.as_text("algorithms")
    assert [line.split()[5] for line in table.splitlines()[1:4]] == ["nchwc"] * 3, table
    kernels = lowered.as_text("lower-to-kernels")
    assert "blocked = 16" in kernels and "dw_nchwc" in kernels
    oh, ow = ((size + sum(pad) - k) // stride + 1 for size, pad, k in zip((h, w), pads, (kh, kw)))
    if oh > 1 and ow > 1:  # (a 1x1 image's scale is a reshape, not a broadcast: changed too)
        # the layout changes between the convs cancelled: one into NCHWc, one out
        assert lowered.as_text("nchwc-layout").count("tensor.transpose") == 2
        # and the pointwise conv's scale, shift and clip run in its tile write-back however
        # small C is (C in channel blocks: solir/lower/epilogue.py)
        assert "epilogue_maps" in lowered.as_text("fuse-epilogues")
    (want,) = run_module(lowered.compilation.module, args)
    got = np.asarray(f(*args))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got, np.asarray(jax.jit(fn)(*args)), rtol=1e-4, atol=1e-4)


@st.composite
def direct_case(draw):
    n = draw(st.integers(1, 2))
    c = draw(st.integers(1, 15))
    o = 16 * draw(st.integers(1, 3))
    kh, kw = draw(st.sampled_from([(3, 3), (1, 1), (2, 3), (5, 5), (7, 7)]))
    h, w = draw(st.integers(1, 20)), draw(st.integers(1, 20))
    stride = draw(st.sampled_from([(1, 1), (2, 2), (1, 2)]))
    dil = draw(st.sampled_from([(1, 1), (2, 1)]))
    pads = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2))
    threads = draw(st.sampled_from([1, 2]))
    constant = draw(st.booleans())
    return n, c, o, kh, kw, h, w, stride, dil, pads, threads, constant


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=direct_case())
# MobileNet's stem: RGB, 3x3 stride 2, pad 1, 32 channels (27 taps: four partial sums)
@example(case=(1, 3, 32, 3, 3, 17, 16, (2, 2), (1, 1), ((1, 1), (1, 1)), 1, True))
def test_direct_nchwc_stem_matches_the_interpreter_and_jax(case):
    """A conv on fewer than 16 input channels (a stem), BN-like scale and shift, ReLU, then a
    depthwise conv: the chain runs in NCHWc from the stem on, the stem as a direct loop nest
    that reads NCHW and writes channel blocks (taps unrolled into partial sums). Random
    channels, windows (where C KH KW fits the unrolled body), strides, dilations,
    asymmetric pads (down to 1x1 outputs and windows wider than the image), threads, and
    constant or runtime weights."""
    import jax
    from hypothesis import assume
    from solir.ir.ops.nchwc import DIRECT_TAPS
    n, c, o, kh, kw, h, w, stride, dil, pads, threads, constant = case
    assume(c * kh * kw <= DIRECT_TAPS)
    assume(h + sum(pads[0]) >= dil[0] * (kh - 1) + 1 and w + sum(pads[1]) >= dil[1] * (kw - 1) + 1)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    k = rng.standard_normal((o, c, kh, kw)).astype(np.float32)
    dw = rng.standard_normal((o, 1, 3, 3)).astype(np.float32)
    s, t = rng.standard_normal(o).astype(np.float32), rng.standard_normal(o).astype(np.float32)
    dn = ("NCHW", "OIHW", "NCHW")

    def net(x, k, dw):
        y = jax.lax.conv_general_dilated(x, k, stride, pads, rhs_dilation=dil,
                                         dimension_numbers=dn)
        y = jnp.maximum(y * s[:, None, None] + t[:, None, None], 0.0)
        return jax.lax.conv_general_dilated(y, dw, (1, 1), "SAME", dimension_numbers=dn,
                                            feature_group_count=o)

    fn, args = ((lambda x: net(x, k, dw)), [x]) if constant else (net, [x, k, dw])
    f = solir.jit(fn, num_threads=threads, options=solir.Options(parallel_min_work=1))
    lowered = f.lower(*args)
    table = lowered.as_text("algorithms")
    assert [line.split()[5] for line in table.splitlines()[1:3]] == ["nchwc"] * 2, table
    assert "direct_nchwc" in lowered.as_text("lower-to-kernels")
    (want,) = run_module(lowered.compilation.module, args)
    got = np.asarray(f(*args))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(got, np.asarray(jax.jit(fn)(*args)), rtol=1e-4, atol=1e-4)


def test_nchwc_only_where_it_applies():
    """nchwc needs channels in whole blocks (or, for a direct stem, fewer than a block in
    and a small window) and a 1x1 stride-1 or a depthwise conv; forcing it elsewhere is a
    clear error, and a lone such conv keeps its NCHW algorithm (two layout changes for one
    conv would cost more than they save)."""
    import jax
    x = np.ones((1, 24, 8, 8), np.float32)
    w = np.ones((32, 24, 1, 1), np.float32)
    conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "VALID")  # noqa: E731
    with pytest.raises(solir.SolirError, match="cannot use 'nchwc': needs input channels in "
                                               r"whole blocks of 16 \(has 24\)"):
        solir.jit(conv, algorithms={"conv": "nchwc"})(x, w)
    with pytest.raises(solir.SolirError, match=r"needs output channels in whole blocks of 16 "
                                               r"\(has 24\)"):
        solir.jit(conv, algorithms={"conv": "nchwc"})(np.ones((1, 16, 8, 8), np.float32),
                                                      np.ones((24, 16, 1, 1), np.float32))
    with pytest.raises(solir.SolirError, match=r"at most 64 taps \(C KH KW: 147\)"):
        solir.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (2, 2), "SAME"),
                  algorithms={"conv": "nchwc"})(np.ones((1, 3, 16, 16), np.float32),
                                                np.ones((32, 3, 7, 7), np.float32))
    w3 = np.ones((32, 32, 3, 3), np.float32)
    x32 = np.ones((1, 32, 8, 8), np.float32)
    with pytest.raises(solir.SolirError, match="1x1 window, stride 1 and no padding"):
        solir.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME"),
                  algorithms={"conv": "nchwc"})(x32, w3)
    lone = solir.jit(conv).lower(x32, np.ones((32, 32, 1, 1), np.float32))
    assert "nchwc" not in lone.as_text("algorithms")
