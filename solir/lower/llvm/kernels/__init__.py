"""One emitter per loop-nest kind, and how many units of work each one's chunk function
walks (what the thread pool splits). Dispatch is the tables below."""

from solir.lower.llvm.kernels.generic import emit_generic, units_of
from solir.lower.llvm.kernels.matmul import emit_matmul, matmul_units
from solir.lower.llvm.kernels.scatter import emit_scatter

EMITTERS = {"kernel.generic": emit_generic, "kernel.scatter": emit_scatter,
            "kernel.matmul": emit_matmul}
UNITS = {"kernel.generic": units_of, "kernel.scatter": units_of, "kernel.matmul": matmul_units}
