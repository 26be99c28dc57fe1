"""What the matmul microkernel's k loop can reach on this machine, on its own (x86 AVX-512).

    python benchmarks/microkernel_loop.py                  # the table below, K = 128 and 256
    python benchmarks/microkernel_loop.py --tiles 6x4 8x3 --unroll 1 4 --stream b

Writes the register tile's k loop in assembly (MR rows x NV vectors of 16 floats, one
vbroadcastss per row and k step, NV vector loads of B), in several variants, builds each with
the system compiler and times it over the same panels many times:

- `full`: the loop as solir emits it (benchmarks the loads as they are);
- `b-only`: the B vector loads, no broadcasts (the broadcast registers stay fixed);
- `bcast-only`: the broadcasts, B's vectors loaded once outside the loop;
- `no-loads`: the FMAs alone, the peak the tile's dependence pattern allows.

`--stream a|b` cycles the A panels or the B panels over a block of about 512 KB (from L2,
as in a product; default: both panels fixed, in L1). Rates are GFLOP/s, against the FMA
peak of benchmarks/peak.c. Session 23 used it to find that on the Xeon VM loads in the loop
cost FMA throughput (NOTES.md, "built in session 23"); it is a probe, not part of run.py.
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
    long reps = (long)(1e10 / (2.0 * MR * NR * K));
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


def loop_asm(variant: str, mr: int, nv: int, unroll: int) -> str:
    """The k loop: rdi = K (a multiple of `unroll`), rsi = A panel, rdx = B panel."""
    nr = nv * 16
    acc = [[f"%zmm{i * nv + j}" for j in range(nv)] for i in range(mr)]
    breg = [f"%zmm{mr * nv + j}" for j in range(nv)]
    spare = 32 - mr * nv - nv
    areg = [f"%zmm{mr * nv + nv + i % spare}" for i in range(mr)]
    out = [".globl micro", ".type micro,@function", "micro:"]
    out += [f"  vxorps {r}, {r}, {r}" for row in acc for r in row]
    if variant == "bcast-only":
        out += [f"  vmovaps {64 * j}(%rdx), {breg[j]}" for j in range(nv)]
    out += ["  .p2align 5", ".Lk:"]
    for u in range(unroll):
        if variant in ("full", "b-only"):
            out += [f"  vmovaps {4 * (u * nr + 16 * j)}(%rdx), {breg[j]}" for j in range(nv)]
        for i in range(mr):
            if variant in ("full", "bcast-only"):
                out.append(f"  vbroadcastss {4 * (u * mr + i)}(%rsi), {areg[i]}")
                out += [f"  vfmadd231ps {breg[j]}, {areg[i]}, {acc[i][j]}" for j in range(nv)]
            else:   # the multiplier a register the loop never writes
                out += [f"  vfmadd231ps {breg[j]}, {breg[(j + 1) % nv]}, {acc[i][j]}"
                        for j in range(nv)]
    out += [f"  add ${4 * unroll * mr}, %rsi", f"  add ${4 * unroll * nr}, %rdx",
            f"  sub ${unroll}, %rdi", "  jg .Lk", "  vzeroupper", "  ret",
            '.section .note.GNU-stack,"",@progbits']
    return "\n".join(out) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiles", nargs="+", default=["6x4", "8x3", "12x2"],
                   help="MRxNV: rows x vectors of 16 floats")
    p.add_argument("--variants", nargs="+", default=["full", "b-only", "bcast-only", "no-loads"])
    p.add_argument("--unroll", nargs="+", type=int, default=[4])
    p.add_argument("--k", nargs="+", type=int, default=[128, 256])
    p.add_argument("--stream", choices=["none", "a", "b"], default="none")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        drv = Path(tmp, "drv.c")
        drv.write_text(DRIVER)
        print(f"{'tile':>6} {'variant':>10} {'unroll':>6} {'K':>5}  GFLOP/s  (stream: {args.stream})")
        for tile in args.tiles:
            mr, nv = map(int, tile.split("x"))
            for variant in args.variants:
                for unroll in args.unroll:
                    src = Path(tmp, "k.S")
                    src.write_text(loop_asm(variant, mr, nv, unroll))
                    exe = Path(tmp, "k")
                    subprocess.run(["cc", "-O2", str(drv), str(src), "-o", str(exe)], check=True)
                    for k in args.k:
                        panel = 4 * k * (mr if args.stream == "a" else nv * 16)   # bytes
                        count = 1 if args.stream == "none" else (512 << 10) // panel   # cycled
                        na, nb = (count, 1) if args.stream == "a" else (1, count)
                        rate = subprocess.run([str(exe), str(k), str(mr), str(nv * 16), str(na), str(nb)],
                                              check=True, capture_output=True, text=True).stdout.strip()
                        print(f"{mr}x{nv * 16:<4} {variant:>10} {unroll:>6} {k:>5}  {rate:>7}")


if __name__ == "__main__":
    main()
