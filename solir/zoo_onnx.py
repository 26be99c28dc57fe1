"""Example ONNX models built with onnx.helper (no exporter needed), with seeded random weights:
the whole-model tests and the benchmarks use them.

    resnet_cnn()          ResNet-style: conv-BN-ReLU stem, max pool, basic blocks with
                          identity and strided 1x1 projection shortcuts, global pool, Gemm
    resnet18()            the real ResNet-18 graph (ImageNet shapes), for the benchmark
    depthwise_cnn()       MobileNet-style depthwise-separable blocks (group=C convs), Clip (ReLU6)
    transformer_encoder() token embedding Gather + positions, multi-head self-attention with an
                          additive padding mask, LayerNormalization, GELU MLP, residuals
    lstm_model()          two stacked LSTMs (the second bidirectional) and a linear head

Each returns an onnx.ModelProto with a fixed batch; `example_inputs(model, seed)` makes inputs.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

F32 = np.float32


class GraphBuilder:
    """Accumulates nodes and initializers; each helper returns its output's name."""

    def __init__(self, name: str, seed: int = 0, opset: int = 17):
        self.name, self.opset = name, opset
        self.rng = np.random.default_rng(seed)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.inputs: list[Any] = []
        self.outputs: list[Any] = []
        self._n = 0

    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def input(self, name: str, shape: Sequence[int | str], dtype: Any = F32) -> str:
        import onnx.helper as oh
        self.inputs.append(oh.make_tensor_value_info(name, oh.np_dtype_to_tensor_dtype(np.dtype(dtype)),
                                                     list(shape)))
        return name

    def output(self, name: str, dtype: Any = F32) -> None:
        import onnx.helper as oh
        self.outputs.append(oh.make_tensor_value_info(name, oh.np_dtype_to_tensor_dtype(np.dtype(dtype)), None))

    def const(self, value: Any, base: str = "c") -> str:
        import onnx.numpy_helper as nh
        name = self.fresh(base)
        self.inits.append(nh.from_array(np.asarray(value), name))
        return name

    def weight(self, shape: Sequence[int], scale: float | None = None, base: str = "w") -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])
        s = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        return self.const((s * self.rng.standard_normal(shape)).astype(F32), base)

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, name: str | None = None,
             out: str | None = None, **attrs: Any) -> Any:
        """Add a node; `out` names its (single) output, e.g. a graph output."""
        import onnx.helper as oh
        name = name or self.fresh(op.lower())
        outs = [f"{name}_out{k}" if n_out > 1 else (out or f"{name}_out") for k in range(n_out)]
        self.nodes.append(oh.make_node(op, list(inputs), outs, name=name, **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self) -> Any:
        import onnx
        import onnx.helper as oh
        g = oh.make_graph(self.nodes, self.name, self.inputs, self.outputs, self.inits)
        m = oh.make_model(g, opset_imports=[oh.make_opsetid("", self.opset)],
                          producer_name="solir.zoo_onnx")
        m.ir_version = min(m.ir_version, 10)       # readable by older onnxruntime too
        return onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)

    # -- layers -------------------------------------------------------------------------------------
    def conv_bn(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1,
                act: str | None = "Relu", name: str = "conv") -> str:
        w = self.weight((cout, cin // group, k, k), base=f"{name}_w")
        y = self.node("Conv", [x, w], name=self.fresh(name), kernel_shape=[k, k],
                      strides=[stride, stride], pads=[k // 2] * 4, group=group)
        gamma = self.const((1 + 0.1 * self.rng.standard_normal(cout)).astype(F32), f"{name}_gamma")
        beta = self.const((0.1 * self.rng.standard_normal(cout)).astype(F32), f"{name}_beta")
        mean = self.const((0.1 * self.rng.standard_normal(cout)).astype(F32), f"{name}_mean")
        var = self.const((1 + 0.1 * self.rng.random(cout)).astype(F32), f"{name}_var")
        y = self.node("BatchNormalization", [y, gamma, beta, mean, var], epsilon=1e-5)
        if act == "Relu":
            y = self.node("Relu", [y])
        elif act == "Relu6":
            y = self.node("Clip", [y, self.const(np.array(0, F32)), self.const(np.array(6, F32))])
        return y

    def linear(self, x: str, din: int, dout: int, name: str = "fc", out: str | None = None) -> str:
        w = self.weight((din, dout), base=f"{name}_w")
        b = self.const((0.1 * self.rng.standard_normal(dout)).astype(F32), f"{name}_b")
        return self.node("Add", [self.node("MatMul", [x, w], name=self.fresh(name)), b], out=out)


def _basic_block(g: GraphBuilder, x: str, cin: int, cout: int, stride: int, name: str) -> str:
    y = g.conv_bn(x, cin, cout, 3, stride, name=f"{name}_a")
    y = g.conv_bn(y, cout, cout, 3, 1, act=None, name=f"{name}_b")
    short = x if stride == 1 and cin == cout else g.conv_bn(x, cin, cout, 1, stride, act=None,
                                                              name=f"{name}_proj")
    return g.node("Relu", [g.node("Add", [y, short])])


def _resnet(name: str, batch: int, image: int, widths: Sequence[int], blocks: Sequence[int],
            classes: int, seed: int) -> Any:
    g = GraphBuilder(name, seed)
    x = g.input("image", [batch, 3, image, image])
    y = g.conv_bn(x, 3, widths[0], 7, 2, name="stem")
    y = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = widths[0]
    for stage, (w, n) in enumerate(zip(widths, blocks)):
        for k in range(n):
            y = _basic_block(g, y, cin, w, 2 if k == 0 and stage > 0 else 1, f"s{stage}b{k}")
            cin = w
    y = g.node("Flatten", [g.node("GlobalAveragePool", [y])])
    w = g.weight((classes, cin), base="fc_w")
    b = g.const((0.1 * g.rng.standard_normal(classes)).astype(F32), "fc_b")
    g.node("Gemm", [y, w, b], name="fc", out="logits", transB=1)
    g.output("logits")
    return g.model()


def resnet_cnn(batch: int = 2, image: int = 32, seed: int = 0) -> Any:
    """A small ResNet (widths 8/16/32, one basic block per stage) with BatchNorm."""
    return _resnet("resnet_cnn", batch, image, (8, 16, 32), (1, 1, 1), 10, seed)


def resnet18(batch: int = 1, image: int = 224, seed: int = 0) -> Any:
    """ResNet-18 (He et al. 2016): 64/128/256/512 widths, two basic blocks per stage."""
    return _resnet("resnet18", batch, image, (64, 128, 256, 512), (2, 2, 2, 2), 1000, seed)


def depthwise_cnn(batch: int = 2, image: int = 32, seed: int = 0) -> Any:
    """MobileNet-v1 style: a stem, then depthwise 3x3 (group = channels) + pointwise 1x1 blocks."""
    g = GraphBuilder("depthwise_cnn", seed)
    x = g.input("image", [batch, 3, image, image])
    y = g.conv_bn(x, 3, 16, 3, 2, act="Relu6", name="stem")
    c = 16
    for k, (cout, stride) in enumerate(((32, 1), (64, 2), (64, 1), (128, 2))):
        y = g.conv_bn(y, c, c, 3, stride, group=c, act="Relu6", name=f"dw{k}")
        y = g.conv_bn(y, c, cout, 1, 1, act="Relu6", name=f"pw{k}")
        c = cout
    y = g.node("Flatten", [g.node("GlobalAveragePool", [y])])
    g.linear(y, c, 10, "head", out="logits")
    g.output("logits")
    return g.model()


MOBILENET_V1 = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def mobilenet_v1(batch: int = 1, image: int = 224, seed: int = 0) -> Any:
    """MobileNet-v1 (Howard et al. 2017), width 1.0: a 3x3 stride-2 stem, 13 depthwise 3x3 +
    pointwise 1x1 blocks (BatchNorm, ReLU), global average pool, a 1000-way classifier."""
    g = GraphBuilder("mobilenet_v1", seed)
    x = g.input("image", [batch, 3, image, image])
    y = g.conv_bn(x, 3, 32, 3, 2, name="stem")
    c = 32
    for k, (cout, stride) in enumerate(MOBILENET_V1):
        y = g.conv_bn(y, c, c, 3, stride, group=c, name=f"dw{k}")
        y = g.conv_bn(y, c, cout, 1, 1, name=f"pw{k}")
        c = cout
    y = g.node("Flatten", [g.node("GlobalAveragePool", [y])])
    w = g.weight((1000, c), base="fc_w")
    b = g.const((0.1 * g.rng.standard_normal(1000)).astype(F32), "fc_b")
    g.node("Gemm", [y, w, b], name="fc", out="logits", transB=1)
    g.output("logits")
    return g.model()


def transformer_encoder(batch: int = 2, seq: int = 16, vocab: int = 100, d: int = 32,
                        heads: int = 4, layers: int = 2, seed: int = 0) -> Any:
    """Token ids [batch, seq] (int64) and a padding mask [batch, seq] (1 = real token) ->
    hidden states [batch, seq, d]."""
    g = GraphBuilder("transformer_encoder", seed)
    ids = g.input("input_ids", [batch, seq], np.int64)
    mask = g.input("attention_mask", [batch, seq], F32)
    emb = g.weight((vocab, d), scale=1.0, base="tok_emb")
    pos = g.weight((seq, d), scale=0.1, base="pos_emb")
    h = g.node("Add", [g.node("Gather", [emb, ids], axis=0), pos])
    # additive mask: 0 where attended, -1e4 where padded; [batch, 1, 1, seq]
    neg = g.node("Mul", [g.node("Sub", [g.const(np.array(1, F32)), mask]), g.const(np.array(-1e4, F32))])
    neg = g.node("Unsqueeze", [neg, g.const(np.array([1, 2], np.int64))])
    dh = d // heads

    def heads_of(x: str) -> str:      # [b, s, d] -> [b, h, s, dh]
        x = g.node("Reshape", [x, g.const(np.array([batch, seq, heads, dh], np.int64))])
        return g.node("Transpose", [x], perm=[0, 2, 1, 3])

    def layer_norm(x: str, name: str, out: str | None = None) -> str:
        gamma = g.const((1 + 0.1 * g.rng.standard_normal(d)).astype(F32), f"{name}_g")
        beta = g.const((0.1 * g.rng.standard_normal(d)).astype(F32), f"{name}_b")
        return g.node("LayerNormalization", [x, gamma, beta], out=out, axis=-1, epsilon=1e-5)

    for k in range(layers):
        x = layer_norm(h, f"ln1_{k}")
        q, kk, v = (heads_of(g.linear(x, d, d, f"{p}{k}")) for p in "qkv")
        s = g.node("MatMul", [q, g.node("Transpose", [kk], perm=[0, 1, 3, 2])])
        s = g.node("Add", [g.node("Mul", [s, g.const(np.array(1 / np.sqrt(dh), F32))]), neg])
        a = g.node("MatMul", [g.node("Softmax", [s], axis=-1), v])
        a = g.node("Reshape", [g.node("Transpose", [a], perm=[0, 2, 1, 3]),
                               g.const(np.array([batch, seq, d], np.int64))])
        h = g.node("Add", [h, g.linear(a, d, d, f"o{k}")])
        x = layer_norm(h, f"ln2_{k}")
        x = _gelu_erf(g, g.linear(x, d, 4 * d, f"up{k}"))
        x = g.linear(x, 4 * d, d, f"down{k}")
        h = g.node("Add", [h, x])
    layer_norm(h, "ln_f", out="hidden")
    g.output("hidden")
    return g.model()


def _gelu_erf(g: GraphBuilder, x: str) -> str:
    """GELU as exporters write it (the Gelu op is opset 20+): 0.5 x (1 + erf(x / sqrt 2))."""
    e = g.node("Erf", [g.node("Div", [x, g.const(np.array(np.sqrt(2), F32))])])
    return g.node("Mul", [g.node("Mul", [x, g.const(np.array(0.5, F32))]),
                          g.node("Add", [e, g.const(np.array(1, F32))])])


def lstm_model(batch: int = 3, seq: int = 12, features: int = 8, hidden: int = 16,
               seed: int = 0) -> Any:
    """x [seq, batch, features] -> a stacked LSTM (forward, then bidirectional) -> per-step
    linear head [seq, batch, 4], and the final hidden state."""
    g = GraphBuilder("lstm_model", seed)
    x = g.input("x", [seq, batch, features])

    def lstm(x: str, din: int, direction: str, name: str) -> tuple[str, str]:
        nd = 2 if direction == "bidirectional" else 1
        w = g.weight((nd, 4 * hidden, din), base=f"{name}_W")
        r = g.weight((nd, 4 * hidden, hidden), base=f"{name}_R")
        b = g.const((0.1 * g.rng.standard_normal((nd, 8 * hidden))).astype(F32), f"{name}_B")
        y, yh, _ = g.node("LSTM", [x, w, r, b], n_out=3, name=name, hidden_size=hidden,
                          direction=direction)
        return y, yh

    y, _ = lstm(x, features, "forward", "lstm1")
    y = g.node("Squeeze", [y, g.const(np.array([1], np.int64))])           # [seq, batch, hidden]
    y, yh = lstm(y, hidden, "bidirectional", "lstm2")                       # [seq, 2, batch, h]
    y = g.node("Reshape", [g.node("Transpose", [y], perm=[0, 2, 1, 3]),
                           g.const(np.array([seq, batch, 2 * hidden], np.int64))])
    g.linear(y, 2 * hidden, 4, "head", out="y")
    g.output("y")
    g.node("Identity", [yh], out="final_h")
    g.output("final_h")
    return g.model()


MODELS = {"resnet_cnn": resnet_cnn, "depthwise_cnn": depthwise_cnn,
          "transformer_encoder": transformer_encoder, "lstm_model": lstm_model,
          "resnet18": resnet18, "mobilenet_v1": mobilenet_v1}


def example_inputs(model: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for a model's graph inputs: normal floats, token ids in range, and for
    an input named attention_mask a padding mask with the tail of every other row padded."""
    import onnx.helper as oh
    rng = np.random.default_rng(seed)
    inits = {i.name for i in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        dt = oh.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        if vi.name == "attention_mask":
            m = np.ones(shape, dt)
            m[::2, shape[1] * 3 // 4:] = 0
            out[vi.name] = m
        elif np.issubdtype(dt, np.integer):
            vocab = next(int(i.dims[0]) for i in model.graph.initializer if i.name.startswith("tok_emb"))
            out[vi.name] = rng.integers(0, vocab, size=shape).astype(dt)
        else:
            out[vi.name] = rng.standard_normal(shape).astype(dt)
    return out
