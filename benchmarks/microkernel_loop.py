"""What the matmul microkernel's k loop can reach on this machine, on its own (x86; the
command line writes AVX-512 loops, loop_asm also AVX2 ones).

    python benchmarks/microkernel_loop.py                  # the table below, K = 128 and 256
    python benchmarks/microkernel_loop.py --tiles 6x4 8x3 --unroll 1 4 --stream b

Writes the register tile's k loop in assembly (MR rows x NV vectors of 16 floats, one
vbroadcastss per row and k step, NV vector loads of B), in several variants, builds each with
the system compiler and times it over the same panels many times:

- `full`: the loop as solir emits it (benchmarks the loads as they are);
- `b-only`: the B vector loads, no broadcasts (the broadcast registers stay fixed);
- `bcast-only`: the broadcasts, B's vectors loaded once outside the loop;
- `no-loads`: the FMAs alone, the peak the tile's dependence pattern allows;
- `+N<kind>`: `no-loads` plus N loads per k step into a register no FMA reads (kind: zmm,
  ymm, bcast, gpr, or nop as the control): what a load costs by itself (`--load-cost`).

`--clock` times a chain of dependent 3-cycle multiplies beside FMAs and loads that leave it
the critical path: its rate is the core clock, with and without the loads (whether loads
cost FMA throughput by lowering the clock, or by the pipeline).

`--stream a|b` cycles the A panels or the B panels over a block of about 512 KB (from L2,
as in a product; default: both panels fixed, in L1). Rates are GFLOP/s, against the FMA
peak of benchmarks/peak.c. Session 23 used it to find that on the Xeon VM loads in the loop
cost FMA throughput, session 24 what they cost and that the clock does not move (NOTES.md,
"built in sessions 23 and 24"). benchmarks/run.py times the `full` loop of the host's tile
(loop_rate) for its header's ceiling line.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
void micro(long K, const float *A, const float *B);
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc, char **argv) {
    long K = atol(argv[1]), MR = atol(argv[2]), NR = atol(argv[3]), NA = atol(argv[4]), NB = atol(argv[5]);
    float *A = aligned_alloc(64, 4 * MR * K * NA + 64), *B = aligned_alloc(64, 4 * NR * K * NB + 64);
    for (long i = 0; i < MR * K * NA; i++) A[i] = 1e-3f;
    for (long i = 0; i < NR * K * NB; i++) B[i] = 1e-3f;
    double work = argc > 6 ? atof(argv[6]) : 1e10;   /* flops per timing */
    long reps = (long)(work / (2.0 * MR * NR * K));
    double best = 1e30;
    for (int r = 0; r < 7; r++) {
        double t = now();
        for (long n = 0; n < reps; n++) micro(K, A + n % NA * MR * K, B + n % NB * NR * K);
        t = now() - t; if (t < best) best = t;
    }
    printf("%.1f\n", 2.0 * MR * NR * K * reps / best / 1e9);
    return 0;
}
"""


EXTRA_LOADS = {"zmm": "vmovaps {o}(%rdx), %zmm31", "ymm": "vmovaps {o}(%rdx), %ymm31",
               "bcast": "vbroadcastss {o}(%rdx), %zmm31", "gpr": "mov {o}(%rdx), %rax",
               "nop": "nop"}


def extra_loads(variant: str) -> tuple[int, str]:
    """`+N<kind>` -> (N, kind); (0, "") for the plain variants."""
    if not variant.startswith("+"):
        return 0, ""
    kind = variant.lstrip("+0123456789")
    return int(variant[1:len(variant) - len(kind)]), kind


def loop_asm(variant: str, mr: int, nv: int, unroll: int, bits: int = 512) -> str:
    """The k loop: rdi = K (a multiple of `unroll`), rsi = A panel, rdx = B panel; vectors of
    `bits` (512: 32 zmm registers; 256: 16 ymm, as on AVX2)."""
    n_extra, kind = extra_loads(variant)
    lanes, regs, v = bits // 32, 32 if bits == 512 else 16, "zmm" if bits == 512 else "ymm"
    if n_extra and (mr * nv + nv > 31 or bits != 512):
        raise SystemExit(f"{variant}: needs a tile that leaves zmm31 free")
    nr = nv * lanes
    acc = [[f"%{v}{i * nv + j}" for j in range(nv)] for i in range(mr)]
    breg = [f"%{v}{mr * nv + j}" for j in range(nv)]
    spare = regs - mr * nv - nv
    if spare < 1:
        raise SystemExit(f"a {mr}x{nr} tile leaves no register for the broadcasts")
    areg = [f"%{v}{mr * nv + nv + i % spare}" for i in range(mr)]
    out = [".globl micro", ".type micro,@function", "micro:"]
    out += [f"  vxorps {r}, {r}, {r}" for row in acc for r in row]
    if variant == "bcast-only":
        out += [f"  vmovaps {4 * lanes * j}(%rdx), {breg[j]}" for j in range(nv)]
    out += ["  .p2align 5", ".Lk:"]
    for u in range(unroll):
        if variant in ("full", "b-only"):
            out += [f"  vmovaps {4 * (u * nr + lanes * j)}(%rdx), {breg[j]}" for j in range(nv)]
        for i in range(mr):
            if variant in ("full", "bcast-only"):
                out.append(f"  vbroadcastss {4 * (u * mr + i)}(%rsi), {areg[i]}")
                out += [f"  vfmadd231ps {breg[j]}, {areg[i]}, {acc[i][j]}" for j in range(nv)]
            else:   # the multiplier a register the loop never writes
                out += [f"  vfmadd231ps {breg[j]}, {breg[(j + 1) % nv]}, {acc[i][j]}"
                        for j in range(nv)]
            # the extra loads spread over the step's rows (the (n i / mr)-th to the next)
            out += ["  " + EXTRA_LOADS[kind].format(o=64 * ((u * n_extra + q) % 64))
                    for q in range(n_extra * i // mr, n_extra * (i + 1) // mr)]
    out += [f"  add ${4 * unroll * mr}, %rsi", f"  add ${4 * unroll * nr}, %rdx",
            f"  sub ${unroll}, %rdi", "  jg .Lk", "  vzeroupper", "  ret",
            '.section .note.GNU-stack,"",@progbits']
    return "\n".join(out) + "\n"


def clock_asm(fmas: int, loads: int) -> str:
    """rdi iterations of 12 dependent imuls (36 cycles), `fmas` FMAs over 24 accumulators
    and `loads` 64-byte loads: at most 60 and 24, so that the chain stays the critical path
    and the loop's rate is the clock."""
    out = [".globl micro", ".type micro,@function", "micro:", "  mov $1, %eax", "  mov $1, %ecx"]
    out += [f"  vxorps %zmm{i}, %zmm{i}, %zmm{i}" for i in range(26)]
    out += ["  .p2align 5", ".Lk:"]
    for i in range(12):
        out.append("  imul %rcx, %rax")
        out += ["  vfmadd231ps %zmm24, %zmm25, %zmm" + str(f % 24)
                for f in range(fmas * i // 12, fmas * (i + 1) // 12)]
        out += [f"  vmovaps {64 * q}(%rdx), %zmm31" for q in range(loads * i // 12, loads * (i + 1) // 12)]
    out += ["  sub $1, %rdi", "  jg .Lk", "  vzeroupper", "  ret",
            '.section .note.GNU-stack,"",@progbits']
    return "\n".join(out) + "\n"


def build(tmp: str, asm: str) -> Path:
    src, exe = Path(tmp, "k.S"), Path(tmp, "k")
    src.write_text(asm)
    subprocess.run(["cc", "-O2", str(Path(tmp, "drv.c")), str(src), "-o", str(exe)], check=True)
    return exe


def run(exe: Path, *args: int) -> str:
    return subprocess.run([str(exe), *map(str, args)], check=True, capture_output=True,
                          text=True).stdout.strip()


def loop_rate(mr: int, nv: int, bits: int = 512, k: int = 256, variant: str = "full",
              unroll: int = 4, stream: str = "none") -> float:
    """GFLOP/s of one variant of the k loop, its panels in L1 (or streamed: --stream)."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "drv.c").write_text(DRIVER)
        exe = build(tmp, loop_asm(variant, mr, nv, unroll, bits))
        nr = nv * bits // 32
        panel = 4 * k * (mr if stream == "a" else nr)       # bytes
        count = 1 if stream == "none" else (512 << 10) // panel   # cycled
        na, nb = (count, 1) if stream == "a" else (1, count)
        return float(run(exe, k, mr, nr, na, nb))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", nargs="+", default=["6x4", "8x3", "12x2"],
                   help="MRxNV: rows x vectors of 16 floats")
    p.add_argument("--variants", nargs="+", default=["full", "b-only", "bcast-only", "no-loads"])
    p.add_argument("--unroll", nargs="+", type=int, default=[4])
    p.add_argument("--k", nargs="+", type=int, default=[128, 256])
    p.add_argument("--stream", choices=["none", "a", "b"], default="none")
    p.add_argument("--load-cost", action="store_true",
                   help="the no-loads loop plus 2-12 loads of each kind per k step")
    p.add_argument("--clock", action="store_true",
                   help="the core clock beside FMAs, with and without loads")
    args = p.parse_args()
    if args.load_cost:
        args.variants = ["no-loads"] + [f"+{n}{kind}" for kind in EXTRA_LOADS
                                        for n in (2, 4, 6, 8, 12)]
    if args.clock:
        print("FMAs loads  GHz  (per 36 cycles: a 3-cycle imul chain x 12)")
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "drv.c").write_text(DRIVER)
            for fmas, loads in [(0, 0), (0, 24), (60, 0), (60, 12), (60, 24)]:
                # timed as 360 "flops" per iteration, ten per cycle: the rate / 10 is in GHz
                ghz = float(run(build(tmp, clock_asm(fmas, loads)), 10000, 1, 180, 1, 1, 1e10)) / 10
                print(f"{fmas:>4} {loads:>5}  {ghz:.2f}")
        return
    print(f"{'tile':>6} {'variant':>10} {'unroll':>6} {'K':>5}  GFLOP/s  (stream: {args.stream})")
    for tile in args.tiles:
        mr, nv = map(int, tile.split("x"))
        for variant in args.variants:
            for unroll in args.unroll:
                for k in args.k:
                    rate = loop_rate(mr, nv, 512, k, variant, unroll, args.stream)
                    print(f"{mr}x{nv * 16:<4} {variant:>10} {unroll:>6} {k:>5}  {rate:>7.1f}")


if __name__ == "__main__":
    main()
