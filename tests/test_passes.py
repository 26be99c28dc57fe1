"""Golden tests of each pass, FileCheck style: tests/golden/passes/<pass>.sir holds an input
module, a `// RUN: <pass>` line (the pipeline is run up to and including that pass, for the
avx2 target) and `// CHECK` lines stating what the output must contain."""

from pathlib import Path

import pytest

from solir.ir.parser import parse_module
from solir.ir.printer import print_module
from solir.lower.pipeline import TENSOR_PIPELINE, PassContext, run_pipeline
from solir.targets import get_target
from tests.filecheck import directives, filecheck

GOLDEN = Path(__file__).parent / "golden" / "passes"


def run_file(path: Path) -> str:
    text = path.read_text()
    run = [line.split("RUN:", 1)[1].strip() for line in text.splitlines() if "// RUN:" in line]
    assert len(run) == 1, f"{path.name} needs one '// RUN: <pass>' line"
    upto = TENSOR_PIPELINE[: TENSOR_PIPELINE.index(run[0]) + 1]
    module = run_pipeline(parse_module(text, str(path)), PassContext(get_target("avx2")), passes=upto)
    return print_module(module, elide=True)


def test_every_pass_has_a_golden_file():
    assert sorted(p.stem for p in GOLDEN.glob("*.sir")) == sorted(TENSOR_PIPELINE)


@pytest.mark.parametrize("name", TENSOR_PIPELINE)
def test_pass_golden(name):
    path = GOLDEN / f"{name}.sir"
    checks = directives(path.read_text())
    assert checks, f"{path.name} has no CHECK lines"
    filecheck(run_file(path), checks)


def test_filecheck_reports_what_failed():
    out = "a\nb\nc"
    filecheck(out, [("CHECK", "a"), ("CHECK-NEXT", "b"), ("CHECK-NOT", "z"), ("CHECK", "c")])
    with pytest.raises(AssertionError, match="CHECK-NEXT: 'c' not found"):
        filecheck(out, [("CHECK", "a"), ("CHECK-NEXT", "c")])
    with pytest.raises(AssertionError, match="CHECK-NOT: 'b' found on line 2"):
        filecheck(out, [("CHECK", "a"), ("CHECK-NOT", "b"), ("CHECK", "c")])
    with pytest.raises(AssertionError, match="CHECK: 'a' not found"):
        filecheck(out, [("CHECK", "c"), ("CHECK", "a")])


def test_matmul_printed_ir_after_schedule():
    """A float dot becomes kernel.matmul; the schedule gives it the target's blocking and packs
    a constant weight into panels (a 1-d constant), and the printed module parses back."""
    import numpy as np

    from solir.ir.printer import format_dense
    w = format_dense(np.random.default_rng(0).standard_normal((96, 40)).astype(np.float32))
    text = f"""func @f(%x: tensor<64x96xf32>) -> tensor<64x40xf32> {{
  %w = tensor.constant {{value = {w}}} : tensor<96x40xf32>
  %y = tensor.dot_general %x, %w {{lhs_contract = [1], rhs_contract = [0]}} : tensor<64x40xf32>
  return %y : tensor<64x40xf32>
}}
"""
    upto = TENSOR_PIPELINE[: TENSOR_PIPELINE.index("schedule") + 1]
    module = run_pipeline(parse_module(text, "<test>"), PassContext(get_target("avx2")), passes=upto)
    out = print_module(module)
    # the 40 columns padded to whole 16-wide panels: 48 x 96
    filecheck(print_module(module, elide=True), [("CHECK", "tensor.constant"), ("CHECK", ": tensor<4608xf32>"),
                    ("CHECK", "kernel.matmul"), ("CHECK", "b_packed = true"),
                    ("CHECK", "mr = 6"), ("CHECK", "nr = 16"),
                    ("CHECK", ": tensor<1x64x40xf32>")])
    assert print_module(parse_module(out, "<printed>")) == out


def test_conv_patches_printed_ir():
    """An NCHW 3x3 conv lowers to kernel.matmul reading the image through `patches` (no
    im2col loop nest); the printed module parses back and runs like the interpreter."""
    import numpy as np

    from solir.ir.interpreter import run_module
    text = """func @f(%x: tensor<1x4x9x10xf32>, %w: tensor<6x4x3x3xf32>) -> tensor<1x6x9x10xf32> {
  %y = tensor.conv %x, %w {lhs_spec = [0, 1, 2, 3], rhs_spec = [0, 1, 2, 3], out_spec = [0, 1, 2, 3], padding = [[1, 1], [1, 1]]} : tensor<1x6x9x10xf32>
  return %y : tensor<1x6x9x10xf32>
}
"""
    upto = TENSOR_PIPELINE[: TENSOR_PIPELINE.index("schedule") + 1]
    module = run_pipeline(parse_module(text, "<test>"), PassContext(get_target("avx2")), passes=upto)
    out = print_module(module)
    filecheck(out, [("CHECK", "kernel.matmul"), ("CHECK", "patches = [3, 3, 1, 1, 1, 1, 1, 1, 9, 10]"),
                    ("CHECK", ": tensor<1x6x90xf32>")])
    assert "im2col" not in out
    assert print_module(parse_module(out, "<printed>")) == out
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 9, 10)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    (got,) = run_module(module, [x, w])
    (want,) = run_module(parse_module(text, "<test>"), [x, w])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_depthwise_printed_ir():
    """A depthwise 3x3 stride-2 conv forced to the stencil: pad into 2x2 phases, a stencil of
    nine reads of the flat planes (tap (1, 1) the fourth phase's first element), a crop; at batch 1 the three run as one row group
    over the channels (the views between them included) and the padded plane and stencil
    live in row buffers. The printed module parses back; in f64 the compiled code and the
    interpreter agree to rounding."""
    import numpy as np

    from solir.driver import compile_module
    from solir.ir.interpreter import run_module
    from solir.lower.pipeline import Options
    rng = np.random.default_rng(0)
    text = """func @f(%x: tensor<1x5x9x13xf64>, %w: tensor<5x1x3x3xf64>) -> tensor<1x5x5x7xf64> {
  %y = tensor.conv %x, %w {lhs_spec = [0, 1, 2, 3], rhs_spec = [0, 1, 2, 3], out_spec = [0, 1, 2, 3], padding = [[1, 1], [1, 1]], strides = [2, 2], feature_group_count = 5} : tensor<1x5x5x7xf64>
  return %y : tensor<1x5x5x7xf64>
}
"""
    options = Options(algorithms=(("conv", "depthwise"),))
    module = run_pipeline(parse_module(text, "<test>"), PassContext(get_target("avx2"), options))
    out = print_module(module)
    filecheck(out, [("CHECK", 'kernel = "dw_pad"'), ("CHECK-SAME", "row_group = 0"),
                    ("CHECK-SAME", "row_local = true"), ("CHECK-SAME", ": tensor<5x2x2x7x8xf64>"),
                    ("CHECK", "kernel.view"), ("CHECK-SAME", "row_group = 0"),
                    ("CHECK", 'kernel = "dw_stencil"'),
                    ("CHECK-SAME", "(d0, d1 + 168)"),
                    ("CHECK-SAME", "(d0, 1, 1)"), ("CHECK-SAME", "(d0, 2, 2)"),
                    ("CHECK-SAME", "row_group = 0"), ("CHECK-SAME", ": tensor<5x40xf64>"),
                    ("CHECK", 'kernel = "dw_crop"'), ("CHECK-SAME", "row_group = 0"),
                    ("CHECK-SAME", ": tensor<5x5x7xf64>")])
    assert print_module(parse_module(out, "<printed>")) == out
    x, w = rng.standard_normal((1, 5, 9, 13)), rng.standard_normal((5, 1, 3, 3))
    (want,) = run_module(parse_module(text, "<test>"), [x, w])
    (interp,) = run_module(module, [x, w])
    np.testing.assert_allclose(interp, want, rtol=1e-12, atol=1e-12)
    (got,) = compile_module(parse_module(text, "<test>"), "host", options)(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_winograd_printed_ir():
    """A 3x3 conv forced to F(4x4,3x3) prints as input transform, kernel transform (a loop
    nest, the kernel being an argument), a batch of 36 products and output transform; the
    printed module
    parses back, and in f64 the compiled code and the interpreter agree to rounding."""
    import numpy as np

    from solir.driver import compile_module
    from solir.ir.interpreter import run_module
    from solir.lower.pipeline import Options
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 4, 3, 3))
    text = """func @f(%x: tensor<2x4x9x23xf64>, %w: tensor<6x4x3x3xf64>) -> tensor<2x6x9x23xf64> {
  %y = tensor.conv %x, %w {lhs_spec = [0, 1, 2, 3], rhs_spec = [0, 1, 2, 3], out_spec = [0, 1, 2, 3], padding = [[1, 1], [1, 1]]} : tensor<2x6x9x23xf64>
  return %y : tensor<2x6x9x23xf64>
}
"""
    options = Options(algorithms=(("conv", "winograd"),))
    upto = TENSOR_PIPELINE[: TENSOR_PIPELINE.index("schedule") + 1]
    module = run_pipeline(parse_module(text, "<test>"), PassContext(get_target("avx2"), options),
                          passes=upto)
    out = print_module(module)
    filecheck(out, [("CHECK", "kernel.winograd_input %x {kernel = \"winograd_in\", m = 4, pad = [1, 1], "
                              "tiles = [3, 6]}"),
                    ("CHECK-SAME", ": tensor<36x4x36xf64>"),
                    ("CHECK", 'kernel = "winograd_weights"'),
                    ("CHECK", "kernel.matmul"), ("CHECK-SAME", ": tensor<36x6x36xf64>"),
                    ("CHECK", "kernel.winograd_output"),
                    ("CHECK-SAME", '{batch = 2, kernel = "winograd_out", m = 4, size = [9, 23]}'),
                    ("CHECK-SAME", ": tensor<2x6x9x23xf64>")])
    assert print_module(parse_module(out, "<printed>")) == out
    x = rng.standard_normal((2, 4, 9, 23))
    (want,) = run_module(parse_module(text, "<test>"), [x, w])
    (interp,) = run_module(module, [x, w])
    np.testing.assert_allclose(interp, want, rtol=1e-12, atol=1e-12)
    (got,) = compile_module(parse_module(text, "<test>"), "host", options)(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
