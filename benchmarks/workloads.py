"""The workloads of ../shared/PERF.md as JAX functions with seeded inputs, their work (FLOP)
and the bytes they must move. Every peer runs exactly these functions on exactly these
inputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from benchmarks import onnx_models as ox
from solir import zoo


@dataclass(frozen=True)
class Workload:
    name: str
    fn: Callable[..., Any] | None   # the JAX function (None: an ONNX-only workload)
    make_inputs: Callable[[np.random.Generator], tuple]
    flops: float           # useful floating-point operations per call
    bytes: float           # compulsory memory traffic per call (inputs + outputs)
    bound: str             # "compute" or "memory": which machine limit to compare with
    tier: str = "quick"    # "quick" runs by default, "full" with --all
    onnx: Callable[..., Any] | None = None   # the same computation as an ONNX graph (for ORT)

    def inputs(self, seed: int = 0) -> tuple:
        return self.make_inputs(np.random.default_rng(seed))


def _gemm(n: int, tier: str) -> Workload:
    return Workload(f"gemm_{n}", zoo.gemm, lambda r: (zoo.normal(r, n, n), zoo.normal(r, n, n)),
                    2.0 * n ** 3, 3 * 4 * n * n, "compute", tier, ox.gemm)


def _mlp(act: str) -> Workload:
    sizes = [784, 1024, 1024, 10]
    flops = 2 * 256 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return Workload(f"mlp_{act}", lambda x, p: zoo.mlp(x, p, act),
                    lambda r: (zoo.normal(r, 256, 784), zoo.mlp_params(r, sizes)),
                    flops, 4 * (256 * 784 + sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))),
                    "compute", onnx=ox.mlp(act))


def _conv(batch: int, tier: str) -> Workload:
    c, hw = 64, 56
    return Workload(f"conv3x3_b{batch}", zoo.conv2d_nchw,
                    lambda r: (zoo.normal(r, batch, c, hw, hw), zoo.normal(r, c, c, 3, 3, scale=0.05),
                               zoo.normal(r, c, scale=0.1)),
                    2.0 * batch * c * c * 9 * hw * hw, 4 * (2 * batch * c * hw * hw + c * c * 9),
                    "compute", tier, ox.conv2d)


def _transformer(batch: int, d: int, heads: int, ffn: int, tier: str) -> Workload:
    seq = 128
    tokens = batch * seq
    flops = 2 * tokens * (4 * d * d + 2 * d * ffn) + 2 * 2 * batch * seq * seq * d
    return Workload(f"transformer_b{batch}",
                    lambda x, p: zoo.transformer_block(x, p, heads=heads),
                    lambda r: (zoo.normal(r, batch, seq, d), zoo.transformer_params(r, d, ffn)),
                    flops, 4 * (2 * tokens * d + 4 * d * d + 2 * d * ffn), "compute", tier,
                    ox.transformer(heads))


N_ELT = 1 << 24
ROWS, COLS = 4096, 1024

WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    _gemm(256, "quick"), _gemm(512, "quick"), _gemm(1024, "quick"), _gemm(2048, "full"),
    _mlp("relu"), _mlp("gelu"),
    Workload("eltwise_chain", zoo.eltwise_chain, lambda r: (zoo.normal(r, N_ELT),),
             6.0 * N_ELT, 2 * 4 * N_ELT, "memory", onnx=ox.eltwise_chain),
    Workload("softmax", zoo.softmax, lambda r: (zoo.normal(r, ROWS, COLS),),
             5.0 * ROWS * COLS, 2 * 4 * ROWS * COLS, "memory", onnx=ox.softmax),
    Workload("layernorm", zoo.layernorm,
             lambda r: (zoo.normal(r, ROWS, COLS), 1 + zoo.normal(r, COLS, scale=0.1),
                        zoo.normal(r, COLS, scale=0.1)),
             8.0 * ROWS * COLS, 2 * 4 * ROWS * COLS, "memory", onnx=ox.layernorm),
    _conv(1, "quick"), _conv(8, "full"),
    _transformer(1, 256, 4, 1024, "quick"), _transformer(8, 768, 12, 3072, "full"),
    # ONNX only (no JAX version): solir through solir.onnx against ONNX Runtime
    Workload("resnet18", None, lambda r: (zoo.normal(r, 1, 3, 224, 224),), 3.63e9,
             4 * (3 * 224 * 224 + 11.7e6), "compute", "quick", ox.resnet18),
    Workload("mobilenet_v1", None, lambda r: (zoo.normal(r, 1, 3, 224, 224),), 1.137e9,
             4 * (3 * 224 * 224 + 4.25e6), "compute", "quick", ox.mobilenet_v1),
]}
