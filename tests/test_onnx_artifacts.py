"""ONNX models in, deployable artifacts out: `solir compile model.onnx` writes model.so,
model.h and a manifest with the model's facts; `solir.load` checks hash and target;
`solir run` runs it; examples/c/run_model.c runs it without Python; `solir show` prints
any stage of an ONNX model with a summary table."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest

import solir
from solir import zoo_onnx
from solir.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "resnet_cnn.onnx"
    onnx.save(zoo_onnx.resnet_cnn(batch=2, image=16), path)
    return path


@pytest.fixture(scope="module")
def artifact(onnx_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "build"
    assert main(["compile", str(onnx_file), "-o", str(out), "--quiet"]) == 0
    return out


def ort_outputs(path, inputs):
    import onnxruntime as ort
    return ort.InferenceSession(str(path)).run(None, inputs)


def test_manifest_describes_model_and_artifact(onnx_file, artifact):
    m = json.loads((artifact / "manifest.json").read_text())
    assert m["model"]["name"] == "resnet_cnn" and m["model"]["producer"] == "solir.zoo_onnx"
    assert m["model"]["opset"] == 17 and m["model"]["format"] == "onnx"
    assert m["model"]["source_sha256"] == hashlib.sha256(onnx_file.read_bytes()).hexdigest()
    assert m["library_hash"] == hashlib.sha256((artifact / "model.so").read_bytes()).hexdigest()
    weights = (artifact / "model.weights").read_bytes()      # the convs' weights, beside the library
    assert m["weights"] == "model.weights" and m["weights_bytes"] == len(weights)
    assert m["weights_hash"] == hashlib.sha256(weights).hexdigest()
    assert [t["name"] for t in m["inputs"]] == ["image"] and m["inputs"][0]["shape"] == [2, 3, 16, 16]
    assert [t["name"] for t in m["outputs"]] == ["logits"] and m["outputs"][0]["dtype"] == "f32"
    assert m["target"] == "host" and m["workspace_bytes"] > 0 and m["solir_version"] == solir.__version__
    assert m["created"].endswith("Z")
    header = (artifact / "model.h").read_text()
    assert "SOLIR_MODEL_ENTRY" in header and "image: float[2x3x16x16]" in header
    assert f"cannot map model.weights ({len(weights)} bytes" in header


def test_load_and_run_match_onnxruntime(onnx_file, artifact, tmp_path, capsys):
    x = zoo_onnx.example_inputs(zoo_onnx.resnet_cnn(batch=2, image=16))["image"]
    (want,) = ort_outputs(onnx_file, {"image": x})
    mod = solir.load(artifact)
    np.testing.assert_allclose(mod(x)[0], want, rtol=1e-4, atol=1e-5)
    np.save(tmp_path / "x.npy", x)
    assert main(["run", str(artifact), "--input", f"image={tmp_path / 'x.npy'}",
                 "--output", str(tmp_path / "out.npz")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["logits"], want, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(shutil.which("cc") is None or shutil.which("make") is None,
                    reason="needs a C compiler and make")
def test_c_example_runs_the_artifact_without_python(onnx_file, artifact, tmp_path):
    exe = tmp_path / "run_model"
    subprocess.run(["make", "-s", "-C", str(ROOT / "examples" / "c"), f"ARTIFACT={artifact}",
                    f"OUT={exe}"], check=True)
    x = zoo_onnx.example_inputs(zoo_onnx.resnet_cnn(batch=2, image=16), seed=3)["image"]
    x.tofile(tmp_path / "image.bin")
    r = subprocess.run([str(exe), str(tmp_path / "image.bin"), "--out", str(tmp_path / "out"),
                        "--threads", "2"], capture_output=True, text=True, env={})
    assert r.returncode == 0, r.stderr
    got = np.fromfile(tmp_path / "out0.bin", np.float32).reshape(2, 10)
    (want,) = ort_outputs(onnx_file, {"image": x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # a wrong-sized input is refused by the program, not read past its end
    np.zeros(5, np.float32).tofile(tmp_path / "short.bin")
    r = subprocess.run([str(exe), str(tmp_path / "short.bin")], capture_output=True, text=True)
    assert r.returncode != 0 and "expected exactly" in r.stderr


def test_avx512_artifact_is_refused_on_an_avx2_cpu(onnx_file, tmp_path, monkeypatch):
    out = tmp_path / "avx512"
    assert main(["compile", str(onnx_file), "--target", "avx512", "-o", str(out), "--quiet"]) == 0
    import solir.targets
    avx2_only = {"sse2", "avx", "avx2", "fma", "f16c", "bmi2"}
    monkeypatch.setattr(solir.targets, "host_cpu_flags", lambda: avx2_only)
    with pytest.raises(solir.TargetError, match="avx512f"):
        solir.load(out)


def test_cross_compile_onnx_writes_an_object(onnx_file, tmp_path, capsys):
    out = tmp_path / "neon"
    assert main(["compile", str(onnx_file), "--target", "neon", "-o", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["library"] == "model.o" and info["model"]["name"] == "resnet_cnn"
    assert info["flops"] > 0 and info["inputs"][0]["name"] == "image"
    assert (out / "model.o").read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize("stage", ["onnx", "tensor", "fuse", "loops", "llvm", "asm"])
def test_show_onnx_at_every_kind_of_stage(onnx_file, stage, capsys):
    assert main(["show", str(onnx_file), "--stage", stage]) == 0
    out = capsys.readouterr().out
    assert "summary" in out and "parameters" in out
    if stage == "onnx":
        assert "BatchNormalization" in out and "initializer" in out
    else:
        assert "FLOPs" in out
    if stage != "onnx" and stage != "tensor":
        assert "loop nests" in out


def test_symbolic_dims_need_an_input_shape(tmp_path, capsys):
    model = zoo_onnx.resnet_cnn(batch=2, image=16)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    assert main(["compile", str(path), "-o", str(tmp_path / "a"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "symbolic dim 'N'" in err and "--input-shape image=" in err
    assert main(["compile", str(path), "-o", str(tmp_path / "a"), "--quiet",
                 "--input-shape", "image=1x3x16x16"]) == 0
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["inputs"][0]["shape"] == [1, 3, 16, 16]


def test_onnx_operator_listing(capsys):
    assert main(["ops", "--onnx"]) == 0
    out = capsys.readouterr().out
    for op in ("LSTM", "Resize", "TopK", "Conv", "Einsum"):
        assert op in out.split()


def test_algorithms_stage_and_override_by_onnx_node_name(onnx_file, tmp_path, capsys):
    assert main(["show", str(onnx_file), "--stage", "algorithms", "--no-summary"]) == 0
    table = capsys.readouterr().out
    assert "conv:0" in table and "im2col" in table and "[" in table
    node = table.splitlines()[1].rsplit("[", 1)[1].rstrip("]")       # the first conv's node
    assert main(["show", str(onnx_file), "--stage", "algorithms", "--no-summary",
                 "--algorithm", f"{node}=loops"]) == 0
    line = capsys.readouterr().out.splitlines()[1]
    assert "loops" in line and "forced by the user" in line
    out = tmp_path / "loops"
    assert main(["compile", str(onnx_file), "-o", str(out), "--quiet", "--algorithm", "conv=loops"]) == 0
    x = zoo_onnx.example_inputs(zoo_onnx.resnet_cnn(batch=2, image=16))["image"]
    (want,) = ort_outputs(onnx_file, {"image": x})
    np.testing.assert_allclose(solir.load(out)(x)[0], want, rtol=1e-4, atol=1e-5)
    assert main(["compile", str(onnx_file), "-o", str(out), "--algorithm", "conv=fft"]) == 1
    assert "no algorithm 'fft' for conv" in capsys.readouterr().err
