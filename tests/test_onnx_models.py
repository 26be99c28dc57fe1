"""Whole ONNX models (built with onnx.helper in solir.zoo_onnx, seeded weights) against ONNX
Runtime: a ResNet-style CNN with BatchNorm, a depthwise-separable CNN, a transformer encoder
with an attention mask and an embedding Gather, and a stacked LSTM."""

import numpy as np
import pytest

import solir.onnx as sonnx
from solir import zoo_onnx


@pytest.mark.parametrize("name", ["resnet_cnn", "depthwise_cnn", "transformer_encoder", "lstm_model"])
def test_model_matches_onnxruntime(name):
    import onnxruntime as ort
    model = zoo_onnx.MODELS[name]()
    inputs = zoo_onnx.example_inputs(model, seed=1)
    want = ort.InferenceSession(model.SerializeToString()).run(None, inputs)
    got = sonnx.prepare(model).run(inputs)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip(got, want):
        # within 1e-4 relative, elementwise (an absolute floor of 1e-5 of the output's scale)
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * float(np.abs(w).max()))


def test_mobilenet_v1_matches_onnxruntime():
    """MobileNet-v1 at 64x64 (every layer of the 224 network, smaller images): its convs run
    as one chain in NCHWc (the pointwise ones on the microkernel, the stem as a direct loop
    nest from the NCHW image), at 1 and 2 threads."""
    import onnxruntime as ort
    model = zoo_onnx.mobilenet_v1(batch=1, image=64)
    inputs = zoo_onnx.example_inputs(model, seed=1)
    want = ort.InferenceSession(model.SerializeToString()).run(None, inputs)[0]
    from solir.driver import Compilation
    from solir.frontends.onnx import from_onnx
    from solir.targets import get_target
    table = Compilation(from_onnx(model), get_target("host")).as_text("algorithms")
    assert table.count(" nchwc ") == 27     # the stem too: a direct conv from NCHW into blocks
    for threads in (1, 2):
        got = sonnx.prepare(model, num_threads=threads).run(inputs)[0]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


def test_padding_mask_changes_only_what_it_should():
    """The mask is live: padded positions do not affect the real tokens' outputs."""
    model = zoo_onnx.transformer_encoder()
    inputs = zoo_onnx.example_inputs(model, seed=2)
    rep = sonnx.prepare(model)
    base = rep.run(inputs)[0]
    ids = inputs["input_ids"].copy()
    ids[0, -1] = (ids[0, -1] + 1) % 100          # row 0's last token is padding
    changed = rep.run({**inputs, "input_ids": ids})[0]
    np.testing.assert_allclose(changed[0, :-4], base[0, :-4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(changed[0, -1], base[0, -1])
