"""The ONNX frontend on hand-built models: results against onnxruntime, and malformed
models (truncated protobuf, dangling input, cycle, unknown op, wrong initializer size) each
giving a clear solir error that names the problem."""

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto

import solir
import solir.onnx as sonnx
from solir.frontends.onnx import from_onnx


def model(nodes, inputs, outputs, inits=(), opset=17):
    g = oh.make_graph(nodes, "g", inputs, outputs, list(inits))
    return oh.make_model(g, opset_imports=[oh.make_opsetid("", opset)])


def vi(name, shape, t=TensorProto.FLOAT):
    return oh.make_tensor_value_info(name, t, shape)


def test_small_cnn_matches_onnxruntime(rng):
    import onnxruntime as ort
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    m = model([oh.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[2, 2]),
               oh.make_node("Relu", ["c"], ["r"]),
               oh.make_node("GlobalAveragePool", ["r"], ["p"]),
               oh.make_node("Flatten", ["p"], ["y"])],
              [vi("x", [2, 3, 9, 9])], [vi("y", None)],
              [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    want = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    got = sonnx.prepare(m).run([x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def ort_run(m, *args):
    import onnxruntime as ort
    sess = ort.InferenceSession(m.SerializeToString())
    return sess.run(None, {i.name: a for i, a in zip(sess.get_inputs(), args)})


def test_three_operand_einsum_keeps_letters_a_later_operand_needs(rng):
    a, b, c = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3), (3, 4), (4, 3)))
    m = model([oh.make_node("Einsum", ["a", "b", "c"], ["y"], equation="ij,jk,kj->i")],
              [vi("a", [2, 3]), vi("b", [3, 4]), vi("c", [4, 3])], [vi("y", None)])
    np.testing.assert_allclose(sonnx.prepare(m).run([a, b, c])[0], ort_run(m, a, b, c)[0],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exclusive,reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_cumsum_matches_onnxruntime(rng, exclusive, reverse):
    x = rng.standard_normal((3, 5)).astype(np.float32)
    m = model([oh.make_node("CumSum", ["x", "axis"], ["y"], exclusive=exclusive, reverse=reverse)],
              [vi("x", [3, 5])], [vi("y", None)],
              [onnx.numpy_helper.from_array(np.array(1, np.int64), "axis")])
    np.testing.assert_allclose(sonnx.prepare(m).run([x])[0], ort_run(m, x)[0], rtol=1e-6, atol=1e-6)


def test_truncated_protobuf():
    m = model([oh.make_node("Relu", ["x"], ["y"])], [vi("x", [3])], [vi("y", [3])])
    data = m.SerializeToString()
    with pytest.raises(solir.ParseError, match="not a valid ONNX model|holds no ONNX graph"):
        from_onnx(data[: len(data) // 2])


def test_dangling_input():
    m = model([oh.make_node("Add", ["x", "ghost"], ["y"], name="add1")], [vi("x", [3])], [vi("y", [3])])
    with pytest.raises(solir.ParseError, match="'add1' \\(Add\\) reads 'ghost'"):
        from_onnx(m)


def test_cycle():
    m = model([oh.make_node("Relu", ["b"], ["a"], name="n1"), oh.make_node("Relu", ["a"], ["b"], name="n2")],
              [vi("x", [3])], [vi("a", [3])])
    with pytest.raises(solir.ParseError, match="cycle"):
        from_onnx(m)


def test_unknown_op_names_node_and_opset():
    m = model([oh.make_node("FancyOp", ["x"], ["y"], name="mystery")], [vi("x", [3])], [vi("y", [3])])
    with pytest.raises(solir.UnsupportedOpError) as e:
        from_onnx(m)
    assert "FancyOp" in str(e.value) and "'mystery'" in str(e.value) and "opset 17" in str(e.value)


def test_wrong_initializer_size():
    bad = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4],
                      raw_data=np.zeros(3, np.float32).tobytes())   # 3 floats for 4
    m = model([oh.make_node("Add", ["x", "w"], ["y"])], [vi("x", [4])], [vi("y", [4])], [bad])
    with pytest.raises(solir.ParseError, match="initializer 'w' cannot be read"):
        from_onnx(m)


@pytest.mark.parametrize("n,largest", [(9, 1), (9, 0), (9000, 1), (9000, 0)])
def test_top_k_with_ties_and_infinities_matches_onnxruntime(rng, n, largest):
    """Short rows take the rank algorithm, long ones the selection one; both keep ties in
    index order and handle infinities."""
    x = rng.integers(-3, 4, size=(2, n)).astype(np.float32)
    x[0, 1] = x[1, -1] = -np.inf
    x[0, -2] = np.inf
    m = model([oh.make_node("TopK", ["x", "k"], ["v", "i"], largest=largest)],
              [vi("x", [2, n])], [vi("v", None), vi("i", None, TensorProto.INT64)],
              [onnx.numpy_helper.from_array(np.array([5], np.int64), "k")])
    got, want = sonnx.prepare(m).run([x]), ort_run(m, x)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def _rnn_model(rng, op, seq, batch, inp, hidden, direction, gates, lens=None, peep=False, **attrs):
    ndir = 2 if direction == "bidirectional" else 1
    f = np.float32
    inits = [onnx.numpy_helper.from_array(0.5 * rng.standard_normal((ndir, gates * hidden, inp)).astype(f), "W"),
             onnx.numpy_helper.from_array(0.5 * rng.standard_normal((ndir, gates * hidden, hidden)).astype(f), "R"),
             onnx.numpy_helper.from_array(rng.standard_normal((ndir, 2 * gates * hidden)).astype(f), "B"),
             onnx.numpy_helper.from_array(np.array(lens or [seq] * batch, np.int32), "L"),
             onnx.numpy_helper.from_array(rng.standard_normal((ndir, batch, hidden)).astype(f), "H0")]
    names = ["x", "W", "R", "B", "L", "H0"]
    if op == "LSTM":
        inits.append(onnx.numpy_helper.from_array(rng.standard_normal((ndir, batch, hidden)).astype(f), "C0"))
        names.append("C0")
        if peep:
            inits.append(onnx.numpy_helper.from_array(rng.standard_normal((ndir, 3 * hidden)).astype(f), "P"))
            names.append("P")
    outs = ["y", "yh"] + (["yc"] if op == "LSTM" else [])
    return model([oh.make_node(op, names, outs, hidden_size=hidden, direction=direction, **attrs)],
                 [vi("x", [seq, batch, inp])], [vi(o, None) for o in outs], inits)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("op,gates,attrs", [
    ("LSTM", 4, dict(peep=True)),
    ("LSTM", 4, dict(clip=0.7)),
    ("GRU", 3, dict(linear_before_reset=0)),
    ("GRU", 3, dict(linear_before_reset=1)),
    ("RNN", 1, dict(activations=["Relu", "Relu"], clip=2.0)),
])
def test_recurrent_layers_with_short_sequences_match_onnxruntime(rng, op, gates, attrs, direction):
    attrs = dict(attrs)
    if "activations" in attrs and direction != "bidirectional":
        attrs["activations"] = attrs["activations"][:1]
    m = _rnn_model(rng, op, seq=5, batch=3, inp=4, hidden=6, direction=direction, gates=gates,
                   lens=[5, 2, 4], **attrs)
    x = rng.standard_normal((5, 3, 4)).astype(np.float32)
    got, want = sonnx.prepare(m).run([x]), ort_run(m, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eq,shapes", [
    ("...ii->...i", [(2, 3, 3)]),
    ("bij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("...j,j", [(2, 3, 4), (4,)]),
    ("ii", [(4, 4)]),
    ("i...,i...->...", [(3, 1, 5), (3, 2, 5)]),
])
def test_einsum_ellipsis_and_diagonals_match_onnxruntime(rng, eq, shapes):
    xs = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    names = [f"x{k}" for k in range(len(xs))]
    m = model([oh.make_node("Einsum", names, ["y"], equation=eq)],
              [vi(n, list(x.shape)) for n, x in zip(names, xs)], [vi("y", None)])
    np.testing.assert_allclose(sonnx.prepare(m).run(xs)[0], ort_run(m, *xs)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs", [
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(kernel_shape=[2, 3], strides=[1, 2], dilations=[2, 1], storage_order=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
])
def test_max_pool_indices_match_onnxruntime(rng, attrs):
    x = rng.integers(-4, 5, size=(2, 3, 7, 8)).astype(np.float32)    # ties: the first wins
    m = model([oh.make_node("MaxPool", ["x"], ["y", "i"], **attrs)],
              [vi("x", [2, 3, 7, 8])], [vi("y", None), vi("i", None, TensorProto.INT64)])
    got, want = sonnx.prepare(m).run([x]), ort_run(m, x)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_compile_ahead_then_run_reuses_it(rng, monkeypatch):
    """rep.compile(inputs) compiles (or loads) for their shapes without running; run then
    reuses it, and a new shape compiles again. Bad inputs are refused as run refuses them."""
    m = model([oh.make_node("Relu", ["x"], ["y"])], [vi("x", ["n", 4])], [vi("y", None)])
    rep = sonnx.prepare(m)
    calls = []
    real = rep._compile
    monkeypatch.setattr(rep, "_compile", lambda arrays: calls.append(arrays[0].shape) or real(arrays))
    x = rng.standard_normal((3, 4)).astype(np.float32)
    assert rep.compile([x]) is None and calls == [(3, 4)]
    np.testing.assert_array_equal(rep.run([x])[0], np.maximum(x, 0))
    assert calls == [(3, 4)]
    rep.run({"x": x[:2]})
    assert calls == [(3, 4), (2, 4)]
    with pytest.raises(solir.ArgumentError, match="takes 1 inputs"):
        rep.compile([x, x])
