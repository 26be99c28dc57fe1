"""Printer, parser and verifier: golden files round-trip, invalid IR gives the tested message."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from solir.errors import ParseError, VerifyError
from solir.ir import Block, Builder, Func, Module, TensorType
from solir.ir.interpreter import run_module
from solir.ir.parser import parse_module
from solir.ir.printer import print_module
from solir.ir.types import DType
from solir.ir.verifier import verify_module

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", ["mlp.sir", "softmax.sir", "kinds.sir"])
def test_golden_round_trip(name):
    text = (GOLDEN / name).read_text()
    m = parse_module(text, name)
    verify_module(m)
    printed = print_module(m)
    assert print_module(parse_module(printed)) == printed
    generic = print_module(m, generic=True, debug_info=True)
    assert print_module(parse_module(generic)) == printed


def test_printer_is_stable_text():
    m = parse_module((GOLDEN / "mlp.sir").read_text())
    assert print_module(m) == (GOLDEN / "mlp.sir").read_text()


def test_dense_special_values_round_trip():
    m = parse_module((GOLDEN / "kinds.sir").read_text())
    k = m.funcs[0].body.ops[0].attrs["value"]
    assert k[0] == 1.5 and np.isneginf(k[1]) and np.isnan(k[2]) and k[3] == np.float32(0.1)


def test_large_constants_print_as_hex_and_round_trip():
    b = Builder(Block())
    value = np.arange(100, dtype=np.float32).reshape(10, 10) / 7
    c = b("tensor.constant", value=value)
    b.op("return", [c], result_types=[])
    m = Module([Func("big", b.block)])
    text = print_module(m)
    assert 'dense<"0x' in text
    assert np.array_equal(parse_module(text).funcs[0].body.ops[0].attrs["value"], value)


def _cases():
    text = (GOLDEN / "invalid.sir").read_text()
    for chunk in text.split("// -----"):
        msg = chunk.split("// error:")[1].strip()
        yield pytest.param(chunk, msg, id=msg[:40])


@pytest.mark.parametrize("source,message", list(_cases()))
def test_invalid_ir_messages(source, message):
    with pytest.raises((VerifyError, ParseError)) as info:
        verify_module(parse_module(source, "invalid.sir"))
    assert message in str(info.value)


def test_verifier_marks_the_failing_op():
    chunk = (GOLDEN / "invalid.sir").read_text().split("// -----")[0]
    with pytest.raises(VerifyError) as info:
        verify_module(parse_module(chunk, "invalid.sir"))
    text = str(info.value)
    assert "  >   %c = tensor.add %a, %b : tensor<4xf32>" in text
    assert "at invalid.sir:3" in text


def test_parse_error_names_line_and_column():
    with pytest.raises(ParseError) as info:
        parse_module("func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n  return %a ? tensor<4xf32>\n}")
    assert "<string>:2:13" in str(info.value)


UNARY = ["neg", "exp", "tanh", "abs", "sqrt", "floor"]


@st.composite
def modules(draw):
    """Random straight-line elementwise modules, for the round-trip property."""
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    t = TensorType(shape, DType.F32)
    block = Block()
    vals = [block.add_arg(t, "x"), block.add_arg(t, "")]
    b = Builder(block)
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            op = draw(st.sampled_from(UNARY))
            vals.append(b(f"tensor.{op}", draw(st.sampled_from(vals)), name_hint=draw(st.sampled_from(["", "v", "x"]))))
        else:
            op = draw(st.sampled_from(["add", "mul", "max", "sub"]))
            vals.append(b(f"tensor.{op}", draw(st.sampled_from(vals)), draw(st.sampled_from(vals))))
    b.op("return", [vals[-1]], result_types=[])
    return Module([Func("gen", block)])


@given(modules())
def test_round_trip_property(m):
    verify_module(m)
    text = print_module(m)
    again = parse_module(text)
    assert print_module(again) == text
    x = np.linspace(-1, 1, m.funcs[0].args[0].type.size, dtype=np.float32).reshape(m.funcs[0].args[0].type.shape)
    np.testing.assert_array_equal(run_module(m, [x, x])[0], run_module(again, [x, x])[0])


def test_nchwc_layout_output_round_trips():
    """The NCHWc pass's output (tensor.conv_nchwc, 5-d broadcasts, the layout changes) prints
    and parses back to the same text, and verifies."""
    from solir.lower.pipeline import TENSOR_PIPELINE, PassContext, run_pipeline
    from solir.targets import get_target
    path = GOLDEN / "passes" / "nchwc-layout.sir"
    upto = TENSOR_PIPELINE[: TENSOR_PIPELINE.index("nchwc-layout") + 1]
    m = run_pipeline(parse_module(path.read_text(), path.name), PassContext(get_target("avx512")),
                     passes=upto)
    printed = print_module(m)
    assert "tensor.conv_nchwc" in printed
    again = parse_module(printed)
    verify_module(again)
    assert print_module(again) == printed


STEM = """
func @f(%x: tensor<1x3x16x16xf32>, %w: tensor<16x3x3x3xf32>, %dw: tensor<16x1x3x3xf32>) -> tensor<1x16x8x8xf32> {
  %c = tensor.conv %x, %w {lhs_spec = [0, 1, 2, 3], rhs_spec = [0, 1, 2, 3], out_spec = [0, 1, 2, 3], strides = [2, 2], padding = [[1, 1], [1, 1]]} : tensor<1x16x8x8xf32>
  %z = tensor.constant {value = dense<0.0> : tensor<f32>} : tensor<f32>
  %zb = tensor.broadcast_in_dim %z {broadcast_dimensions = [], shape = [1, 16, 8, 8]} : tensor<1x16x8x8xf32>
  %r = tensor.max %c, %zb : tensor<1x16x8x8xf32>
  %y = tensor.conv %r, %dw {lhs_spec = [0, 1, 2, 3], rhs_spec = [0, 1, 2, 3], out_spec = [0, 1, 2, 3], padding = [[1, 1], [1, 1]], feature_group_count = 16} : tensor<1x16x8x8xf32>
  return %y : tensor<1x16x8x8xf32>
}
"""


def test_direct_nchwc_stem_prints_reads_nchw_and_round_trips():
    """A stem on 3 channels before a depthwise conv: the NCHWc pass gives it the image as it
    is (a direct tensor.conv_nchwc on a rank-4 input, no layout change in), the chain stays
    blocked to its end, and the output prints, parses back, verifies and computes the same."""
    from solir.lower.pipeline import TENSOR_PIPELINE, PassContext, run_pipeline
    from solir.targets import get_target
    upto = TENSOR_PIPELINE[: TENSOR_PIPELINE.index("nchwc-layout") + 1]
    m = run_pipeline(parse_module(STEM, "stem.sir"), PassContext(get_target("avx512")), passes=upto)
    printed = print_module(m)
    assert ("tensor.conv_nchwc %x, %w {block = 16, padding = [[1, 1], [1, 1]], strides = [2, 2]}"
            " : tensor<1x1x8x8x16xf32>") in printed, printed
    assert printed.count("tensor.transpose") == 1, printed          # the chain's end only
    again = parse_module(printed)
    verify_module(again)
    assert print_module(again) == printed
    rng = np.random.default_rng(3)
    args = [rng.standard_normal(a.type.shape).astype(np.float32) for a in m.funcs[0].args]
    want = run_module(parse_module(STEM, "stem.sir"), args)[0]
    np.testing.assert_allclose(run_module(again, args)[0], want, rtol=1e-5, atol=1e-5)
