"""solir: compile JAX functions and ONNX models to fast native code for CPUs and vector
processors, without changing the model code.

    @solir.jit
    def f(x, w): ...
    f(x, w)                                  # numpy in, numpy out
    f.lower(x, w).as_text("loops")           # any stage of the pipeline
    mod = solir.load("build/model")          # a compiled artifact
    rep = solir.onnx.prepare("model.onnx")   # the onnx.backend API (import solir.onnx)
"""

from solir.driver import STAGES, VERSION, compile_module
from solir.errors import (ArgumentError, CacheError, CompileError, ParseError, PassError,
                          SolirError, SolirWarning, TargetError, UnsupportedOpError, VerifyError)
from solir.jit import jit
from solir.lower.pipeline import Options
from solir.runtime.load import load
from solir.targets import TARGETS, get_target

__version__ = VERSION
__all__ = ["ArgumentError", "CacheError", "CompileError", "Options", "ParseError", "PassError",
           "STAGES", "SolirError", "SolirWarning", "TARGETS", "TargetError", "UnsupportedOpError", "VerifyError",
           "compile_module", "get_target", "jit", "load"]
