"""One emitter per loop-nest kind, and how many units of work each one's chunk function
walks (what the thread pool splits). Dispatch is the tables below."""

from solir.lower.llvm.kernels.generic import emit_generic, units_of
from solir.lower.llvm.kernels.matmul import emit_matmul, matmul_units
from solir.lower.llvm.kernels.scatter import emit_scatter
from solir.lower.llvm.kernels.winograd import (emit_winograd_input, emit_winograd_output,
                                               winograd_units)

EMITTERS = {"kernel.generic": emit_generic, "kernel.scatter": emit_scatter,
            "kernel.matmul": emit_matmul, "kernel.winograd_input": emit_winograd_input,
            "kernel.winograd_output": emit_winograd_output}
UNITS = {"kernel.generic": units_of, "kernel.scatter": units_of, "kernel.matmul": matmul_units,
         "kernel.winograd_input": winograd_units, "kernel.winograd_output": winograd_units}
