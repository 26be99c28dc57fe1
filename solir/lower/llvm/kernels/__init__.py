"""One emitter per loop-nest kind. Dispatch is the table below."""

from solir.lower.llvm.kernels.generic import emit_generic

EMITTERS = {"kernel.generic": emit_generic}
