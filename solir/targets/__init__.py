"""Targets are small descriptions, not code paths: what LLVM needs (triple, cpu, features,
function attributes) and what the scheduler reads (vector width, registers, caches).
Adding a target is one `Target(...)` entry here."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass, field, replace

from solir.errors import TargetError


@dataclass(frozen=True)
class Target:
    name: str
    triple: str
    cpu: str
    features: str                      # LLVM feature string, "+avx2,+fma"
    vector_bits: int                   # widest vector the scheduler uses
    vector_registers: int
    l1_kib: int = 32
    l2_kib: int = 512
    l3_kib: int = 8192
    fn_attrs: tuple[tuple[str, str], ...] = ()   # LLVM function attributes, e.g. vector width
    requires: tuple[str, ...] = ()     # CPU features (as /proc/cpuinfo names) needed to run it
    llvm_options: tuple[str, ...] = ()  # LLVM command-line options (backend workarounds)
    description: str = ""
    arch: str = field(default="x86_64")
    vector_ldexp: bool = False         # llvm.ldexp on vectors is one instruction (vscalef, fscale)
    # hardware vectors per logical vector in elementwise kernels with long dependency chains
    # (exp, tanh, erf: ~30 dependent instructions per vector), so that independent chains
    # interleave where the out-of-order window holds about one of them (Zen 3's FP
    # scheduler; four beat two and eight in one-process A/Bs, sessions 9 and 10)
    chain_interleave: int = 1
    # non-temporal (streaming) vector stores exist and need aligned addresses (MOVNTPS): a
    # row group writing a large output row by row streams it past the caches (no read for
    # ownership of lines it overwrites whole), and ends with a store fence
    streaming_stores: bool = False

    def lanes(self, itemsize: int) -> int:
        return max(1, self.vector_bits // (8 * itemsize))

    @property
    def can_link_here(self) -> bool:
        return self.arch == platform.machine()

    def missing_features(self) -> list[str]:
        """CPU features this target needs that the running CPU lacks ([] when it can run)."""
        if self.arch != platform.machine():
            return [f"an {self.arch} CPU (this is {platform.machine()})"]
        have = host_cpu_flags()
        return [f for f in self.requires if f not in have]


_X86 = "x86_64-unknown-linux-gnu"
_A64 = "aarch64-unknown-linux-gnu"
TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("x86-64", _X86, "x86-64", "+sse2", 128, 16, streaming_stores=True,
           description="baseline x86-64 (SSE2)"),
    Target("avx2", _X86, "haswell", "+avx2,+fma,+f16c", 256, 16, requires=("avx2", "fma"),
           chain_interleave=4, streaming_stores=True,
           description="x86-64 with AVX2 and FMA (Haswell, Zen 1-3)"),
    Target("avx512", _X86, "x86-64-v4", "+avx512f,+avx512bw,+avx512dq,+avx512vl,+fma,+f16c",
           512, 32, l2_kib=1024,
           # LLVM splits 512-bit vectors on Intel unless the function asks for them.
           fn_attrs=(("prefer-vector-width", "512"), ("min-legal-vector-width", "512")),
           requires=("avx512f", "avx512bw", "avx512dq", "avx512vl", "fma"), vector_ldexp=True,
           streaming_stores=True, description="x86-64 with AVX-512 (Skylake-SP, Ice Lake, Zen 4/5), zmm vectors"),
    Target("neon", _A64, "generic", "+neon", 128, 32, arch="aarch64", requires=("asimd",),
           description="AArch64 Advanced SIMD (128-bit)"),
    Target("sve", _A64, "generic", "+sve,+neon", 256, 32, arch="aarch64", requires=("sve",),
           fn_attrs=(("vscale_range", "2,2"),), vector_ldexp=True,
           description="AArch64 SVE with 256-bit vectors (Neoverse V1, Graviton3)"),
    Target("rvv", "riscv64-unknown-linux-gnu", "generic-rv64", "+m,+a,+f,+d,+c,+v,+zvl128b",
           128, 32, arch="riscv64", requires=("v",),
           description="RISC-V RV64GCV (vector extension, VLEN >= 128)"),
    # LLVM's VE backend lowers vectors only through its VVP intrinsics, not generic vector IR,
    # so VE gets scalar code (vector_bits = one f32) until solir emits VVP.
    # -disable-lsr: LLVM 22's VE backend asserts (APInt width) on loops that loop strength
    # reduction rewrites around calls (any loop calling libm twice); -unroll-threshold=0: and
    # on loops that unrolling rewrites after a loop nest is split at its border (a conv's
    # im2col over a 5x5 image, whose interior loops have constant trip counts).
    Target("ve", "ve-unknown-linux-gnu", "", "", 32, 64, arch="ve",
           llvm_options=("-disable-lsr", "-unroll-threshold=0"),
           description="NEC SX-Aurora TSUBASA vector engine (LLVM VE backend, scalar code)"),
]}


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features", "isa")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass        # no /proc (not Linux): no features known, host_target says so
    return frozenset()


@functools.cache
def host_target() -> Target:
    """The best named target this CPU runs, renamed 'host' and tuned to its caches."""
    machine = platform.machine()
    flags = host_cpu_flags()
    order = {"x86_64": ["avx512", "avx2", "x86-64"], "aarch64": ["sve", "neon"],
             "riscv64": ["rvv"]}.get(machine, [])
    for name in order:
        t = TARGETS[name]
        if all(f in flags for f in t.requires):
            return replace(t, name="host", description=f"this machine ({name}): {t.description}",
                           **_host_caches())
    raise TargetError(f"no target for this {machine} machine",
                      fix="compile for an explicit target with --target")


def _host_caches() -> dict[str, int]:
    out = {}
    for index, key in ((0, "l1_kib"), (2, "l2_kib"), (3, "l3_kib")):
        try:
            with open(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size") as f:
                text = f.read().strip()
            out[key] = int(text[:-1]) * (1024 if text.endswith("M") else 1)
        except (OSError, ValueError):
            pass    # not reported: the named target's default stays
    return out


def get_target(name: str | Target) -> Target:
    if isinstance(name, Target):
        return name
    if name == "host":
        return host_target()
    try:
        return TARGETS[name]
    except KeyError:
        raise TargetError(f"unknown target '{name}'",
                          fix="choose one of: host, " + ", ".join(TARGETS)) from None
