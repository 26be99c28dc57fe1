"""The ONNX frontend: `from_onnx(model) -> Module`. The graph walk is in onnx_graph.py and
the operator rules in onnx_ops.py (importing it fills the rule table)."""

from solir.frontends import onnx_ops, onnx_resize, onnx_rnn  # noqa: F401  (register the rules)
from solir.frontends.onnx_graph import MAX_OPSET, MIN_OPSET, RULES, from_onnx, load_model

SUPPORTED_OPS = sorted(RULES)

__all__ = ["MAX_OPSET", "MIN_OPSET", "SUPPORTED_OPS", "from_onnx", "load_model"]
