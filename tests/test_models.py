"""Whole functions through solir.jit against jax.jit: MLP, layernorm, softmax, causal multi-head
attention, a transformer block, a strided NHWC conv net, and gradients of MLP and conv-net
losses. Results must also not depend on the thread count."""

import jax
import numpy as np
import pytest

import solir
from solir import zoo
from tests.tolerances import assert_close


def same_as_jax(fn, *args, scale=1.0, **jit_kwargs):
    want = jax.jit(fn, **jit_kwargs)(*args)
    got = solir.jit(fn, **jit_kwargs)(*args)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        assert_close(g, np.asarray(w), scale=scale)
    return got


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_mlp(rng, activation):
    params = zoo.mlp_params(rng, [33, 64, 17, 10])
    x = zoo.normal(rng, 7, 33)
    same_as_jax(lambda x, p: zoo.mlp(x, p, activation), x, params, scale=5)


def test_layernorm_and_softmax(rng):
    x = zoo.normal(rng, 5, 3, 37)
    g, b = zoo.normal(rng, 37), zoo.normal(rng, 37)
    same_as_jax(zoo.layernorm, x, g, b, scale=5)
    same_as_jax(zoo.softmax, x * 4)
    same_as_jax(lambda x: jax.nn.softmax(x, axis=0), x)   # a non-last reduction axis


def test_causal_attention(rng):
    d, heads = 24, 3
    x = zoo.normal(rng, 2, 9, d)
    wqkv, wo = zoo.normal(rng, d, 3 * d, scale=0.3), zoo.normal(rng, d, d, scale=0.3)
    same_as_jax(lambda x, a, b: zoo.attention(x, a, b, heads, causal=True), x, wqkv, wo, scale=10)


def test_transformer_block(rng):
    p = zoo.transformer_params(rng, 32, 64)
    x = zoo.normal(rng, 2, 11, 32)
    same_as_jax(lambda x, p: zoo.transformer_block(x, p, heads=4), x, p, scale=20)


def test_strided_nhwc_conv_net(rng):
    params = zoo.conv_net_params(rng)
    x = zoo.normal(rng, 2, 13, 12, 3)
    same_as_jax(zoo.conv_net_nhwc, x, params, scale=10)


def test_grad_of_mlp_loss(rng):
    params = zoo.mlp_params(rng, [20, 32, 10])
    x, labels = zoo.normal(rng, 16, 20), rng.integers(0, 10, 16).astype(np.int32)
    same_as_jax(jax.value_and_grad(zoo.mlp_loss), params, x, labels, scale=10)


def test_grad_of_conv_net_loss(rng):
    params = zoo.conv_net_params(rng)
    x, labels = zoo.normal(rng, 2, 12, 12, 3), rng.integers(0, 10, 2).astype(np.int32)
    same_as_jax(jax.grad(zoo.conv_net_loss), params, x, labels, scale=20)


def test_results_do_not_depend_on_thread_count(rng):
    p = zoo.transformer_params(rng, 32, 64)
    x = zoo.normal(rng, 4, 16, 32)
    fn = solir.jit(lambda x, p: zoo.transformer_block(x, p, heads=4))
    compiled = fn.lower(x, p).compile()
    runs = []
    for n in (1, 2, 3):
        compiled.module.set_num_threads(n)
        runs.append(compiled(x, p))
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])
