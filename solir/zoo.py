"""Small reference models written in plain JAX: the functions the tests check against jax.jit,
the demo compiles and the benchmarks time (the workloads of PERF.md). Each is an ordinary
function of arrays, so `solir.jit(fn)` and `jax.jit(fn)` take it unchanged; `inputs_*`
builds seeded inputs of the right shapes."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


# -- dense -----------------------------------------------------------------------------------------
def gemm(a, b):
    return a @ b


def mlp(x, params, activation="relu"):
    """Dense layers with bias; ReLU or exact (erf) GELU between them."""
    act = {"relu": jax.nn.relu, "gelu": lambda h: jax.nn.gelu(h, approximate=False)}[activation]
    for k, (w, b) in enumerate(params):
        x = x @ w + b
        if k + 1 < len(params):
            x = act(x)
    return x


def mlp_params(rng: np.random.Generator, sizes: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(normal(rng, m, n, scale=1 / np.sqrt(m)), normal(rng, n, scale=0.1))
            for m, n in zip(sizes[:-1], sizes[1:])]


def mlp_loss(params, x, labels):
    logits = mlp(x, params)
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


# -- row kernels -----------------------------------------------------------------------------------
def eltwise_chain(x):
    return jax.nn.relu(jnp.tanh(x * 1.5 + 0.5) * x + 1) * 0.5


def softmax(x):
    return jax.nn.softmax(x, axis=-1)


def layernorm(x, gamma, beta, eps=1e-5):
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * gamma + beta


# -- convolution -----------------------------------------------------------------------------------
def conv2d_nchw(x, w, b, stride=1, padding=1):
    y = jax.lax.conv_general_dilated(x, w, (stride, stride), [(padding, padding)] * 2,
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return y + b[None, :, None, None]


def conv_net_nhwc(x, params):
    """A strided NHWC conv net: conv(s2) -> relu -> conv -> relu -> max-pool -> mean -> dense."""
    (w1, b1), (w2, b2), (wd, bd) = params
    dn = ("NHWC", "HWIO", "NHWC")
    h = jax.lax.conv_general_dilated(x, w1, (2, 2), "SAME", dimension_numbers=dn) + b1
    h = jax.nn.relu(h)
    h = jax.lax.conv_general_dilated(h, w2, (1, 1), [(1, 1), (1, 1)], dimension_numbers=dn) + b2
    h = jax.nn.relu(h)
    h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
    h = jnp.mean(h, axis=(1, 2))
    return h @ wd + bd


def conv_net_params(rng: np.random.Generator, cin=3, c1=8, c2=16, classes=10) -> list[Any]:
    return [(normal(rng, 3, 3, cin, c1, scale=0.3), normal(rng, c1, scale=0.1)),
            (normal(rng, 3, 3, c1, c2, scale=0.2), normal(rng, c2, scale=0.1)),
            (normal(rng, c2, classes, scale=0.3), normal(rng, classes, scale=0.1))]


def conv_net_loss(params, x, labels):
    logp = jax.nn.log_softmax(conv_net_nhwc(x, params))
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


# -- attention -------------------------------------------------------------------------------------
def attention(x, wqkv, wo, heads, causal=True):
    """Multi-head self-attention over x: (batch, seq, d)."""
    bsz, seq, d = x.shape
    dh = d // heads
    qkv = (x @ wqkv).reshape(bsz, seq, 3, heads, dh)
    q, k, v = (jnp.transpose(qkv[:, :, i], (0, 2, 1, 3)) for i in range(3))
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(dh).astype(np.float32)
    if causal:
        mask = jnp.tril(jnp.ones((seq, seq), bool))
        s = jnp.where(mask, s, -1e9)
    p = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("bhqk,bhkd->bhqd", p, v)
    return jnp.transpose(o, (0, 2, 1, 3)).reshape(bsz, seq, d) @ wo


def transformer_block(x, p, heads, causal=False):
    """A pre-LN encoder block: x + attn(ln(x)); then x + ffn(ln(x)) with erf GELU."""
    h = x + attention(layernorm(x, p["ln1_g"], p["ln1_b"]), p["wqkv"], p["wo"], heads, causal)
    f = layernorm(h, p["ln2_g"], p["ln2_b"]) @ p["w1"] + p["b1"]
    f = jax.nn.gelu(f, approximate=False) @ p["w2"] + p["b2"]
    return h + f


def transformer_params(rng: np.random.Generator, d: int, ffn: int) -> dict[str, np.ndarray]:
    return {"ln1_g": 1 + normal(rng, d, scale=0.1), "ln1_b": normal(rng, d, scale=0.1),
            "wqkv": normal(rng, d, 3 * d, scale=1 / np.sqrt(d)),
            "wo": normal(rng, d, d, scale=1 / np.sqrt(d)),
            "ln2_g": 1 + normal(rng, d, scale=0.1), "ln2_b": normal(rng, d, scale=0.1),
            "w1": normal(rng, d, ffn, scale=1 / np.sqrt(d)), "b1": normal(rng, ffn, scale=0.1),
            "w2": normal(rng, ffn, d, scale=1 / np.sqrt(ffn)), "b2": normal(rng, d, scale=0.1)}
