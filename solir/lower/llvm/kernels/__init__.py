"""One emitter per loop-nest kind. Dispatch is the table below."""

from solir.lower.llvm.kernels.generic import emit_generic
from solir.lower.llvm.kernels.matmul import emit_matmul
from solir.lower.llvm.kernels.scatter import emit_scatter

EMITTERS = {"kernel.generic": emit_generic, "kernel.scatter": emit_scatter,
            "kernel.matmul": emit_matmul}
