"""Targets: every one cross-compiles (object code for its architecture, assembly), and the
generated hot loops use the target's vectors: ymm FMAs on avx2, zmm on avx512, NEON/SVE
fmla on AArch64, RVV vfmadd/vfmacc on RISC-V."""

import os
import re
import struct

import numpy as np
import llvmlite.ir as ir
import pytest

import solir
from solir import zoo
from solir.driver import Compilation
from solir.lower.llvm.emit import module_weights
from solir.ir.parser import parse_module
from solir.lower.pipeline import Options
from solir.targets import TARGETS, get_target, host_target, machine

_in_children = machine._in_children

MULADD = """func @muladd(%a: tensor<64x256xf32>, %b: tensor<64x256xf32>, %c: tensor<64x256xf32>) -> tensor<64x256xf32> {
  %m = tensor.mul %a, %b : tensor<64x256xf32>
  %s = tensor.add %m, %c : tensor<64x256xf32>
  return %s : tensor<64x256xf32>
}"""

ELF_MACHINE = {"x86_64": 62, "aarch64": 183, "riscv64": 243, "ve": 251}


def asm_of(src: str, target: str) -> str:
    return Compilation(parse_module(src), get_target(target), Options()).as_text("asm")


def instructions(asm: str) -> list[str]:
    return [line.strip() for line in asm.splitlines()
            if line.startswith("\t") and not line.strip().startswith(".")]


@pytest.mark.parametrize("target,fma,register", [
    ("avx2", r"vfmadd\d+ps", r"%ymm"), ("avx512", r"vfmadd\d+ps", r"%zmm"),
    ("neon", r"fmla", r"v\d+\.4s"), ("sve", r"fmla", r"z\d+\.s"), ("rvv", r"vf(madd|macc)\.vv", r"v\d+")])
def test_hot_loop_uses_vector_fma(target, fma, register):
    ins = instructions(asm_of(MULADD, target))
    fmas = [i for i in ins if re.match(fma, i)]
    assert fmas, f"no {fma} in the {target} code"
    assert all(re.search(register, i) for i in fmas), fmas
    if target == "avx2":
        assert not any("%zmm" in i for i in ins), "avx2 code must not use zmm"


def test_avx512_prefers_512_bit_vectors():
    ins = instructions(asm_of(MULADD, "avx512"))
    assert sum("%zmm" in i for i in ins) > sum("%ymm" in i for i in ins)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_cross_compiles(target, rng):
    """A model with matmuls, reductions, exp/erf and a strided conv: an ELF object for the
    target's architecture and its assembly."""
    t = get_target(target)
    params = zoo.conv_net_params(rng, c1=4, c2=8)
    x = zoo.normal(rng, 1, 9, 9, 3)
    lowered = solir.jit(zoo.conv_net_nhwc, target=target).lower(x, params)
    obj = machine.compile_object(lowered.compilation.llvm(), t)
    assert obj[:4] == b"\x7fELF"
    assert struct.unpack_from("<H", obj, 18)[0] == ELF_MACHINE[t.arch]
    assert lowered.as_text("asm").count("\n") > 20


def test_host_target_runs_here(rng):
    t = host_target()
    assert t.missing_features() == []
    x = rng.standard_normal((3, 100)).astype(np.float32)
    np.testing.assert_array_equal(solir.jit(lambda v: v * 2 + 1, target=t)(x), x * 2 + 1)


def test_split_codegen_matches_one_module(rng, monkeypatch, tmp_path):
    """A module compiled as parts in child processes (code cut by kernel, the first part with
    the small constants and the weights' address slot), its large weights in a file beside
    the library, links into the same function: every function and constant defined once,
    the entry still exported."""
    params = zoo.conv_net_params(rng, c1=16, c2=32)      # conv2's 18 KB of weights: in the file
    x = zoo.normal(rng, 2, 9, 9, 3)

    def net(v):                                           # the weights as constants
        return zoo.conv_net_nhwc(v, params)
    comp = solir.jit(net).lower(x).compilation
    llmod = comp.llvm()
    weights = module_weights(llmod)
    assert weights is not None and weights.size >= 16 * 32 * 9 * 4
    assert all(offset % 64 == 0 and value.nbytes >= 4096 for offset, value in weights.arrays)
    text = machine.module_text(llmod)
    assert re.search(rf'call ptr @"solir_weights"\(ptr @"solir.weights", [^@]*@"net", i64 {weights.size}\)', text)
    assert machine.split_parts(llmod, 2) is None         # too small to be worth it by default
    monkeypatch.setattr(machine, "SPLIT_MIN_INSTRUCTIONS", 0)
    groups = machine.split_parts(llmod, 2)
    assert groups is not None and len(groups) == 2
    code = [machine.part_text(llmod, g, first=k == 0) for k, g in enumerate(groups)]
    defined = [re.findall(r'^define [^@]*@"([^"]+)"', p, re.M) for p in code]
    assert sorted(defined[0] + defined[1]) == sorted(re.findall(r'^define [^@]*@"([^"]+)"', text, re.M))
    assert not set(defined[0]) & set(defined[1])
    assert any(re.search(r'^define i32 @"net"', p, re.M) for p in code)
    constants = [re.findall(r'^(@"[^"]+") = hidden (?:constant|global)', p, re.M) for p in code]
    assert constants[0] and not constants[1]     # defined by the first part, declared by the rest
    assert '@"solir.weights" = hidden global ptr null' in code[0]
    assert '@"solir.weights" = external hidden global ptr' in code[1]
    monkeypatch.setenv("SOLIR_CACHE_DIR", str(tmp_path))     # an empty cache: compiled now
    calls = []

    def spy(texts, *a, **kw):
        texts = list(texts)
        calls.append((len(texts), kw.get("workers")))
        return _in_children(texts, *a, **kw)
    monkeypatch.setattr(machine, "_in_children", spy)
    want = np.asarray(net(x))
    got = solir.jit(net)(x)
    workers = min(4, len(os.sched_getaffinity(0)))
    if workers > 1:
        [(parts, used)] = calls
        assert parts >= 2 and used == workers
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def _tiny_function(name: str) -> str:
    return (f'define float @"{name}"(float %x) {{\n  %y = fmul float %x, %x\n  ret float %y\n}}\n')


def test_children_take_parts_in_turn_and_answer_in_order():
    """More parts than workers: each child compiles several in turn; the results come back
    in the order of the parts."""
    texts = [_tiny_function(f"f{k}") for k in range(5)]
    out = _in_children(iter(texts), get_target("host"), "asm", workers=2)
    assert len(out) == 5
    for k, asm in enumerate(out):
        assert re.search(rf"^f{k}:", asm, re.M), asm[:300]


def test_a_part_llvm_rejects_is_a_compile_error_not_a_crash():
    texts = [_tiny_function("ok0"), "define float @bad(float %x) {\n  ret i32 0\n}\n",
             _tiny_function("ok1"), _tiny_function("ok2")]
    with pytest.raises(solir.CompileError, match="LLVM rejected"):
        _in_children(iter(texts), get_target("host"), "obj", workers=2)


def test_a_hung_child_is_killed_and_reported(tmp_path, monkeypatch):
    """A child still working after CHILD_TIMEOUT_S is killed: a CompileError that says so,
    not a compile that never returns."""
    import types
    hang = tmp_path / "hang.py"
    hang.write_text("import time\ntime.sleep(60)\n")
    job = machine.llvm_job
    monkeypatch.setattr(machine, "llvm_job", types.SimpleNamespace(
        __file__=str(hang), write_frame=job.write_frame, read_frame=job.read_frame))
    monkeypatch.setattr(machine, "CHILD_TIMEOUT_S", 1)
    with pytest.raises(solir.CompileError, match="killed after 1 s"):
        _in_children(iter([_tiny_function("f")]), get_target("host"), "obj")


def test_matmuls_with_the_same_epilogue_share_one_microkernel(rng):
    """Two layers whose epilogues differ only in their operands (bias + ReLU, other sizes and
    row strides) run one epilogue microkernel, named by the epilogue's structure; a third
    with another epilogue (bias + tanh) has its own. Results agree with numpy."""
    import jax.numpy as jnp
    def layer(k, n):                                 # scaled so activations stay O(1)
        return ((rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32),
                rng.standard_normal(n).astype(np.float32))
    x = rng.standard_normal((64, 300)).astype(np.float32)
    (w1, b1), (w2, b2), (w3, b3) = layer(300, 256), layer(256, 128), layer(128, 64)

    def mlp(x, w1, b1, w2, b2, w3, b3):
        h = jnp.maximum(x @ w1 + b1, 0)
        h = jnp.maximum(h @ w2 + b2, 0)
        return jnp.tanh(h @ w3 + b3)
    args = (x, w1, b1, w2, b2, w3, b3)
    # avx2's 6x16 tiles on any host that runs them (an AVX-512 host's own are 6x64)
    lowered = solir.jit(mlp, target="avx2",
                        options=solir.Options(epilogue_bytes=0)).lower(*args)  # fuse all
    llvm_text = lowered.as_text("llvm")
    micros = set(re.findall(r'^define [^@]*@"(solir\.mm\.matmul[^"]*\.micro6x16[^"]*)"', llvm_text, re.M))
    assert len(micros) == 2, micros             # one for both ReLU layers, one for the tanh
    h = np.maximum(np.maximum(x @ w1 + b1, 0) @ w2 + b2, 0)
    np.testing.assert_allclose(lowered.compile()(*args), np.tanh(h @ w3 + b3), rtol=1e-4, atol=1e-4)


def test_a_prepacked_a_is_prefetched_ahead_in_the_k_loop(rng):
    """Weights as A, prepacked at compile time, stream in once per call: the microkernel
    that reads them (named .pa) prefetches their panel ahead inside its k loop, while a
    product whose A is a runtime value (read in place here) has none; the two share a
    module without sharing a microkernel, and both agree with numpy."""
    import jax.numpy as jnp
    w = rng.standard_normal((96, 512)).astype(np.float32)
    x = rng.standard_normal((512, 40)).astype(np.float32)
    y = rng.standard_normal((40, 24)).astype(np.float32)
    lowered = solir.jit(lambda x, y: (jnp.asarray(w) @ x) @ y, target="avx2").lower(x, y)
    text = lowered.as_text("llvm")
    fns = dict(re.findall(r'^define [^@]*@"(solir\.mm\.micro6x16[^"]*)"[^{]*\{(.*?)^\}', text,
                          re.M | re.S))
    pa = [body for name, body in fns.items() if ".pa." in name]
    plain = [body for name, body in fns.items() if ".pa." not in name]
    assert pa and plain, list(fns)
    assert all("llvm.prefetch" in body and "k4" in body for body in pa)
    # (the plain one's only prefetches are of the next tile's C, before its loop)
    assert all(body.count("llvm.prefetch") < pa[0].count("llvm.prefetch") for body in plain)
    assert "prefetched ahead along k" in lowered.as_text("loops")
    np.testing.assert_allclose(lowered.compile()(x, y), (w @ x) @ y, rtol=1e-3, atol=1e-3)


def test_identical_kernels_are_compiled_once(rng):
    """Two softmaxes of one shape (their values named differently) run one row kernel,
    called twice; module_text prints the module as llvmlite does; results agree."""
    import jax
    x = rng.standard_normal((64, 96)).astype(np.float32)
    w = rng.standard_normal((96, 96)).astype(np.float32)

    def f(x, w):
        return jax.nn.softmax(jax.nn.softmax(x) @ w)
    lowered = solir.jit(f).lower(x, w)
    llmod = lowered.compilation.llvm()
    text = machine.module_text(llmod)
    assert text == str(llmod)
    rows = re.findall(r'^define [^@]*@"(f\.k\d+\.rows_[^"]*)"', text, re.M)
    assert len(rows) == 1, rows
    entry = text.split('define i32 @"f"')[1].split("\n}")[0]
    assert entry.count(f'@"{rows[0]}"') == 2
    want = jax.nn.softmax(jax.nn.softmax(x) @ w)
    np.testing.assert_allclose(lowered.compile()(x, w), want, rtol=1e-5, atol=1e-6)


def test_the_builder_folds_index_arithmetic():
    """x * 1, x + 0, x * 0 and constant arithmetic make no instruction; i64 wraps."""
    from solir.lower.llvm.loops import Builder, const64
    fn = ir.Function(ir.Module(), ir.FunctionType(ir.IntType(64), [ir.IntType(64)]), "f")
    b = Builder(fn.append_basic_block("entry"))
    x = fn.args[0]
    assert b.mul(x, const64(1)) is x and b.mul(const64(1), x) is x and b.add(x, const64(0)) is x
    assert b.sub(x, const64(0)) is x and b.add(const64(0), x) is x
    assert b.mul(x, const64(0)).constant == 0
    assert b.add(const64(2), const64(3)).constant == 5 and b.mul(const64(4), const64(-3)).constant == -12
    assert b.add(const64(2**63 - 1), const64(1)).constant == -2**63
    assert not fn.blocks[0].instructions
    assert b.add(x, const64(2)) is not x and len(fn.blocks[0].instructions) == 1


@pytest.mark.parametrize("n", [49, 196, 197])
def test_a_narrow_last_column_panel_runs_along_m(rng, n):
    """A product whose last column panel is narrower than the tile's rows (49 columns leave
    1 of 16; 196, 4; 197, 5) computes that panel with vectors along M (cols6xW), also in
    the epilogue's tiles and with K split into blocks (C accumulated) and a last row tile
    of 4 rows, on AVX2 and on SSE (4 lanes: MR = 6 rows take two vectors, the second
    masked); results agree with numpy."""
    import jax.numpy as jnp
    w = (rng.standard_normal((70, 700)) / np.sqrt(700)).astype(np.float32)   # A: packed
    bias = rng.standard_normal(70).astype(np.float32)
    x = rng.standard_normal((700, n)).astype(np.float32)

    def f(x):
        return jnp.maximum(w @ x + bias[:, None], 0)
    for target, options in [(t, o) for t in ("avx2", "x86-64")
                            for o in (solir.Options(), solir.Options(epilogue_bytes=0))]:
        lowered = solir.jit(f, target=target, options=options).lower(x)
        text = lowered.as_text("llvm")
        nr, lanes = (16, 8) if target == "avx2" else (8, 4)
        assert f'@"solir.mm.cols6x{n % nr}of{nr}.f32x{lanes}"' in text
        cols = n % nr
        assert (f"// 6x{nr} register tiles; A prepacked at compile time, prefetched ahead "
                f"along k; last rows: 4-row microkernel; last {cols} column"
                f"{'s' if cols > 1 else ''}: vectors along M"
                in lowered.as_text("loops"))
        np.testing.assert_allclose(lowered.compile()(x), np.maximum(w @ x + bias[:, None], 0),
                                   rtol=1e-4, atol=1e-4)


def test_the_last_rows_run_a_microkernel_of_their_height(rng):
    """64 rows in tiles of 6 leave a 4-row tile in each column: with a fused epilogue it
    runs a 4-row epilogue microkernel straight into C (only the heights M and MC give are
    compiled), and results agree with numpy."""
    import jax.numpy as jnp
    x = rng.standard_normal((64, 96)).astype(np.float32)
    w = rng.standard_normal((96, 256)).astype(np.float32)
    v = rng.standard_normal(256).astype(np.float32)
    fn = lambda x, w, v: jnp.maximum(x @ w + v, 0)      # noqa: E731
    lowered = solir.jit(fn, target="avx2",
                        options=solir.Options(epilogue_bytes=0)).lower(x, w, v)
    text = lowered.as_text("llvm")
    heights = set(re.findall(r'^define [^@]*@"solir\.mm\.matmul[^"]*\.micro(\d+)of6x16', text, re.M))
    assert heights == {"4"}, heights
    np.testing.assert_allclose(lowered.compile()(x, w, v), np.maximum(x @ w + v, 0),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["full", "b-only", "bcast-only", "no-loads", "+4zmm",
                                     "+12gpr", "+6nop", "clock"])
def test_the_microkernel_loop_probe_writes_the_loop_it_names(variant, tmp_path, monkeypatch):
    """benchmarks/microkernel_loop.py (session 23's probe of the k loop alone): each variant
    has the tile's FMAs and exactly the loads its name says, and assembles; the clock loop
    is a chain of 12 multiplies beside the FMAs and loads asked for."""
    import platform
    import shutil
    import subprocess
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), ".."))
    from benchmarks.microkernel_loop import clock_asm, loop_asm
    mr, nv, unroll = 6, 4, 2
    if variant == "clock":
        text = clock_asm(60, 12)
        body = text.split(".Lk:")[1]
        assert (body.count("imul"), body.count("vfmadd231ps"), body.count("vmovaps")) == (12, 60, 12)
    else:
        text = loop_asm(variant, mr, nv, unroll)
        body = text.split(".Lk:")[1]
        n = int(variant[1:-3]) * unroll if variant.startswith("+") else 0
        assert body.count("vfmadd231ps") == mr * nv * unroll
        assert body.count("vmovaps") == (nv * unroll if variant in ("full", "b-only")
                                         else n if variant.endswith("zmm") else 0)
        assert body.count("vbroadcastss") == (mr * unroll if variant in ("full", "bcast-only")
                                              else 0)
        assert body.count("mov ") == (n if variant.endswith("gpr") else 0)
        assert body.count("  nop") == (n if variant.endswith("nop") else 0)
    if shutil.which("cc") and platform.machine() == "x86_64":
        src = tmp_path / "k.S"
        src.write_text(text)
        subprocess.run(["cc", "-c", str(src), "-o", str(tmp_path / "k.o")], check=True)


def test_the_benchmark_measures_the_matmul_loop_ceiling_of_the_host_tile(monkeypatch):
    """benchmarks/run.py's header line: solir's register tile for the host, its k loop run
    alone in assembly (ymm on AVX2, zmm on AVX-512), timed, named after the tile."""
    import platform
    import shutil
    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(__file__), ".."))
    from benchmarks.microkernel_loop import loop_asm
    from benchmarks.run import matmul_loop_ceiling
    ymm = loop_asm("full", 6, 2, 2, bits=256)
    assert "zmm" not in ymm and ymm.split(".Lk:")[1].count("vfmadd231ps %ymm") == 24
    if not (shutil.which("cc") and platform.machine() == "x86_64"):
        pytest.skip("the probe runs on x86 with a C compiler")
    from solir.lower.schedule import matmul_blocking
    from solir.targets import host_target
    got = matmul_loop_ceiling()
    if host_target().lanes(4) not in (8, 16):
        assert got == {}
        return
    blk = matmul_blocking(host_target(), 4, 1024, 1024, 1024)
    assert got["loop_tile"] == f"{blk['mr']}x{blk['nr']}"
    assert got["loop_gflops"] > 0
