"""Every registered op is complete: a reference, and a lowering, an element emitter or a
decomposition. Half-added ops fail here rather than in a user's model."""

from solir.ir.registry import ELEMENTWISE, all_ops
from solir.lower.fold import DECOMPOSITIONS
from solir.lower.llvm.kernels import EMITTERS

STRUCTURE_ONLY = {"return", "kernel.yield", "kernel.index", "kernel.read", "kernel.view",
                  "tensor.constant"}


def test_every_op_has_reference_and_lowering():
    for name, od in all_ops().items():
        if name in STRUCTURE_ONLY:
            continue
        assert od.reference is not None, f"{name} has no numpy reference"
        lowered = od.lower is not None or od.decompose is not None or name in DECOMPOSITIONS
        assert lowered or od.has_region or name in EMITTERS, \
            f"{name} has no lowering, decomposition or LLVM emitter"
        if od.kind == ELEMENTWISE:
            assert od.emit is not None or name in DECOMPOSITIONS, f"{name} cannot be emitted"


def test_every_op_has_a_doc_or_is_obvious():
    for name, od in all_ops().items():
        assert od.name == name
