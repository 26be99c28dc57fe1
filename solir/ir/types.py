"""Element types and tensor types: `f32`, `tensor<4x128xf32>`, `tensor<f32>` (rank 0)."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

import ml_dtypes
import numpy as np


class DType(enum.Enum):
    F32 = "f32"
    F64 = "f64"
    F16 = "f16"
    BF16 = "bf16"
    I1 = "i1"
    I8 = "i8"
    I32 = "i32"
    I64 = "i64"

    def __str__(self) -> str:
        return self.value

    @property
    def is_float(self) -> bool:
        return self in (DType.F32, DType.F64, DType.F16, DType.BF16)

    @property
    def is_int(self) -> bool:
        return self in (DType.I8, DType.I32, DType.I64)

    @property
    def is_bool(self) -> bool:
        return self is DType.I1

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def numpy(self) -> np.dtype:
        return _TO_NUMPY[self]

    @property
    def bits(self) -> int:
        return 1 if self is DType.I1 else self.itemsize * 8

    @staticmethod
    def from_numpy(dtype: object) -> "DType":
        dt = np.dtype(dtype)
        for k, v in _TO_NUMPY.items():
            if v == dt:
                return k
        from solir.errors import UnsupportedOpError

        raise UnsupportedOpError(
            f"dtype {dt} is not supported",
            fix="use one of " + ", ".join(str(d) for d in DType) + " (numpy: "
            + ", ".join(str(v) for v in _TO_NUMPY.values()) + ")",
        )

    @staticmethod
    def parse(text: str) -> "DType":
        return DType(text)


_TO_NUMPY = {
    DType.F32: np.dtype(np.float32),
    DType.F64: np.dtype(np.float64),
    DType.F16: np.dtype(np.float16),
    DType.BF16: np.dtype(ml_dtypes.bfloat16),
    DType.I1: np.dtype(np.bool_),
    DType.I8: np.dtype(np.int8),
    DType.I32: np.dtype(np.int32),
    DType.I64: np.dtype(np.int64),
}

f32, f64, f16, bf16, i1, i8, i32, i64 = (DType.F32, DType.F64, DType.F16, DType.BF16,
                                         DType.I1, DType.I8, DType.I32, DType.I64)


@dataclass(frozen=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> "TensorType":
        return TensorType(tuple(shape), self.dtype)

    def with_dtype(self, dtype: DType) -> "TensorType":
        return TensorType(self.shape, dtype)

    def __str__(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        return f"tensor<{dims}{self.dtype}>"

    @staticmethod
    def parse(text: str) -> "TensorType":
        m = _TENSOR_RE.fullmatch(text.strip())
        if not m:
            raise ValueError(f"not a tensor type: {text!r}")
        dims = m.group(1)
        shape = tuple(int(d) for d in dims.split("x") if d) if dims else ()
        return TensorType(shape, DType.parse(m.group(2)))


_TENSOR_RE = re.compile(r"tensor<((?:\d+x)*)(f32|f64|f16|bf16|i1|i8|i32|i64)>")


def scalar(dtype: DType) -> TensorType:
    return TensorType((), dtype)
