"""Which ONNX backend tests exercise which operator, and the operator list of issue 3, so the
suite can report pass counts overall and for those operators."""

from __future__ import annotations

import functools
import re

LISTED_OPERATORS = frozenset("""
Abs Acos Add And ArgMax ArgMin AveragePool BatchNormalization Cast Ceil Celu Clip Concat Constant
ConstantOfShape Conv ConvTranspose Cos CumSum DepthToSpace Div Dropout Einsum Elu Equal Erf Exp
Expand EyeLike Flatten Floor GRU Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
GlobalMaxPool Greater GreaterOrEqual HardSigmoid HardSwish Identity InstanceNormalization LRN LSTM
LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax MatMul Max MaxPool Mean Min Mish Mod
Mul Neg Not Or PRelu Pad Pow Range Reciprocal ReduceL1 ReduceL2 ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize Round Selu Shape
Sigmoid Sign Sin Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh Tile TopK Transpose Trilu Unsqueeze Where Xor""".split())


@functools.cache
def node_test_operators() -> dict[str, str]:
    """Node test case name (test_abs) -> the operator it tests ('?' when unclear)."""
    from onnx.backend.test.case.node import collect_testcases
    cases = {c.name: c for c in collect_testcases()}
    out = {}
    for name in cases:
        base = name.removesuffix("_expanded")
        nodes = cases.get(base, cases[name]).model.graph.node
        ops = {n.op_type for n in nodes}
        if len(ops) == 1:
            out[name] = ops.pop()
            continue
        snake = {o: re.sub(r"(?<!^)(?=[A-Z])", "_", o).lower() for o in ops | LISTED_OPERATORS}
        hits = [o for o, s in snake.items() if base.startswith(f"test_{s}")]
        out[name] = max(hits, key=len) if hits else "?"
    return out


def operator_of(runner_test_name: str) -> str | None:
    """For a runner test (test_abs_cpu): the operator, or None for a model test."""
    name = runner_test_name.removesuffix("_cpu")
    return node_test_operators().get(name)
