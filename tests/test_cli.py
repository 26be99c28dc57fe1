"""The `solir` command: every subcommand runs, and errors print one clear line (exit 1),
never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from solir.cli import main

GOLDEN = Path(__file__).parent / "golden"


def test_show_every_stage(capsys):
    from solir.driver import STAGES
    for stage in STAGES:
        assert main(["show", str(GOLDEN / "softmax.sir"), "--stage", stage, "--target", "avx2"]) == 0
        out = capsys.readouterr().out
        assert out.strip(), stage
    assert main(["show", str(GOLDEN / "softmax.sir"), "--stage", "loops", "--target", "avx2"]) == 0
    assert "reduce for d1 in 0..5" in capsys.readouterr().out


def test_compile_and_run(tmp_path, capsys):
    out = tmp_path / "build"
    assert main(["compile", str(GOLDEN / "softmax.sir"), "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["library"] == "model.so" and (out / "model.h").exists()
    assert info["weights"] == "" and info["weights_bytes"] == 0      # no constant of 4 KB
    assert not (out / "model.weights").exists()
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(out), "--input", f"x={tmp_path / 'x.npy'}",
                 "--output", str(tmp_path / "out.npz")]) == 0
    got = np.load(tmp_path / "out.npz")
    (name,) = got.files
    want = np.exp(x - x.max(1, keepdims=True))
    np.testing.assert_allclose(got[name], want / want.sum(1, keepdims=True), rtol=1e-5)


def test_cross_compile_writes_an_object(tmp_path, capsys):
    assert main(["compile", str(GOLDEN / "mlp.sir"), "--target", "rvv", "-o", str(tmp_path),
                 "--quiet"]) == 0
    assert (tmp_path / "model.o").read_bytes()[:4] == b"\x7fELF"
    assert json.loads((tmp_path / "manifest.json").read_text())["triple"].startswith("riscv64")


@pytest.mark.parametrize("argv,message", [
    (["show", "missing.sir"], "no such file"),
    (["show", "{bad}"], "'tensor.add' cannot take operands (tensor<3xf32>, tensor<4xf32>)"),
    (["show", str(GOLDEN / "softmax.sir"), "--target", "pdp11"], "unknown target"),
    (["run", "/nonexistent-artifact"], "CacheError"),
])
def test_errors_are_one_line_not_a_traceback(argv, message, capsys, tmp_path):
    bad = tmp_path / "bad.sir"
    bad.write_text("func @f(%x: tensor<3xf32>, %y: tensor<4xf32>) -> tensor<3xf32> {\n"
                   "  %z = tensor.add %x, %y : tensor<3xf32>\n  return %z : tensor<3xf32>\n}\n")
    assert main([a.format(bad=bad) for a in argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("solir: ") and message in err
    assert "Traceback" not in err


def test_console_script_and_listing_commands():
    for cmd in (["targets"], ["ops"], ["--help"]):
        proc = subprocess.run([sys.executable, "-m", "solir.cli", *cmd], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip()
