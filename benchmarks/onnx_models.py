"""The PERF.md workloads as ONNX graphs, for ONNX Runtime (and for solir's ONNX path).

Each builder takes a workload's inputs (the same seeded arrays jax and solir get) and returns
the model and its feed: every array is a graph input, none is baked in, so ORT computes on
exactly the values the other peers see. The graphs mirror `solir.zoo` op for op (GELU as the
erf form exporters write, which ORT fuses).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from solir.zoo_onnx import GraphBuilder, _gelu_erf

Built = tuple[Any, dict[str, np.ndarray]]


def _start(name: str) -> tuple[GraphBuilder, dict[str, np.ndarray]]:
    return GraphBuilder(name, opset=17), {}


def _input(g: GraphBuilder, feed: dict[str, np.ndarray], name: str, a: np.ndarray) -> str:
    feed[name] = np.ascontiguousarray(a)
    return g.input(name, a.shape, a.dtype)


def _finish(g: GraphBuilder, last_out: str, feed: dict[str, np.ndarray]) -> Built:
    g.node("Identity", [last_out], out="y")
    g.output("y")
    return g.model(), feed


def gemm(a: np.ndarray, b: np.ndarray) -> Built:
    g, feed = _start("gemm")
    return _finish(g, g.node("MatMul", [_input(g, feed, "a", a), _input(g, feed, "b", b)]), feed)


def mlp(act: str) -> Callable[..., Built]:
    def build(x: np.ndarray, params: list[tuple[np.ndarray, np.ndarray]]) -> Built:
        g, feed = _start(f"mlp_{act}")
        h = _input(g, feed, "x", x)
        for k, (w, b) in enumerate(params):
            h = g.node("Add", [g.node("MatMul", [h, _input(g, feed, f"w{k}", w)]),
                               _input(g, feed, f"b{k}", b)])
            if k + 1 < len(params):
                h = g.node("Relu", [h]) if act == "relu" else _gelu_erf(g, h)
        return _finish(g, h, feed)
    return build


def eltwise_chain(x: np.ndarray) -> Built:
    g, feed = _start("eltwise_chain")
    f32 = lambda v: g.const(np.array(v, np.float32))  # noqa: E731
    h = _input(g, feed, "x", x)
    t = g.node("Tanh", [g.node("Add", [g.node("Mul", [h, f32(1.5)]), f32(0.5)])])
    r = g.node("Relu", [g.node("Add", [g.node("Mul", [t, h]), f32(1.0)])])
    return _finish(g, g.node("Mul", [r, f32(0.5)]), feed)


def softmax(x: np.ndarray) -> Built:
    g, feed = _start("softmax")
    return _finish(g, g.node("Softmax", [_input(g, feed, "x", x)], axis=-1), feed)


def layernorm(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> Built:
    g, feed = _start("layernorm")
    ins = [_input(g, feed, n, a) for n, a in (("x", x), ("gamma", gamma), ("beta", beta))]
    return _finish(g, g.node("LayerNormalization", ins, axis=-1, epsilon=1e-5), feed)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> Built:
    g, feed = _start("conv3x3")
    ins = [_input(g, feed, n, a) for n, a in (("x", x), ("w", w), ("b", b))]
    return _finish(g, g.node("Conv", ins, kernel_shape=[3, 3], pads=[1, 1, 1, 1]), feed)


def transformer(heads: int) -> Callable[..., Built]:
    def build(x: np.ndarray, p: dict[str, np.ndarray]) -> Built:
        g, feed = _start("transformer")
        bsz, seq, d = x.shape
        dh = d // heads
        h0 = _input(g, feed, "x", x)
        P = {k: _input(g, feed, k, v) for k, v in p.items()}
        i64 = lambda v: g.const(np.array(v, np.int64))  # noqa: E731

        def ln(h: str, gamma: str, beta: str) -> str:
            return g.node("LayerNormalization", [h, P[gamma], P[beta]], axis=-1, epsilon=1e-5)

        qkv = g.node("Reshape", [g.node("MatMul", [ln(h0, "ln1_g", "ln1_b"), P["wqkv"]]),
                                 i64([bsz, seq, 3, heads, dh])])
        q, k, v = (g.node("Transpose", [g.node("Gather", [qkv, i64(i)], axis=2)], perm=[0, 2, 1, 3])
                   for i in range(3))
        s = g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2])])
        s = g.node("Div", [s, g.const(np.array(np.sqrt(dh), np.float32))])
        o = g.node("MatMul", [g.node("Softmax", [s], axis=-1), v])
        o = g.node("Reshape", [g.node("Transpose", [o], perm=[0, 2, 1, 3]), i64([bsz, seq, d])])
        h = g.node("Add", [h0, g.node("MatMul", [o, P["wo"]])])
        f = g.node("Add", [g.node("MatMul", [ln(h, "ln2_g", "ln2_b"), P["w1"]]), P["b1"]])
        f = g.node("Add", [g.node("MatMul", [_gelu_erf(g, f), P["w2"]]), P["b2"]])
        return _finish(g, g.node("Add", [h, f]), feed)
    return build


def mobilenet_v1(image: np.ndarray) -> Built:
    """MobileNet-v1 with seeded weights (solir.zoo_onnx.mobilenet_v1): only the image is fed."""
    from solir.zoo_onnx import mobilenet_v1 as build
    return build(batch=image.shape[0], image=image.shape[2]), {"image": image}


def resnet18(image: np.ndarray) -> Built:
    """ResNet-18 with seeded weights (solir.zoo_onnx.resnet18): only the image is fed."""
    from solir.zoo_onnx import resnet18 as build
    return build(batch=image.shape[0], image=image.shape[2]), {"image": image}
