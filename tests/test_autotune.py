"""--autotune: candidates timed on this machine, the winner used and remembered per op shape,
target and thread count (solir/lower/autotune.py)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import solir
from solir.errors import SolirWarning
from solir.lower import autotune
from solir.lower.algorithms import contractions


def conv(x, w, b):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return jax.nn.relu(y + b[None, :, None, None])


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SOLIR_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def inputs(rng):
    return (rng.standard_normal((1, 8, 12, 12)).astype(np.float32),
            rng.standard_normal((16, 8, 3, 3)).astype(np.float32),
            rng.standard_normal(16).astype(np.float32))


def test_autotune_times_every_candidate_and_remembers_the_winner(own_cache, inputs, monkeypatch):
    timed = []
    real = autotune._time_candidates

    def spy(modules, args, flush_bytes):
        timed.append(sorted(modules))
        return real(modules, args, flush_bytes)
    monkeypatch.setattr(autotune, "_time_candidates", spy)

    f = solir.jit(conv, autotune=True, num_threads=1)
    got = f(*inputs)
    np.testing.assert_allclose(got, jax.jit(conv)(*inputs), rtol=2e-4, atol=2e-4)
    # a 3x3 stride-1 conv under a million multiply-adds: every algorithm is a candidate
    assert timed == [["im2col", "im2col_rows", "loops", "winograd", "winograd2"]]
    db = json.loads((own_cache / autotune.DB_NAME).read_text())
    (key, entry), = db.items()
    assert "threads=1" in key and "conv(" in key
    assert entry["choice"] == min(entry["ms"], key=entry["ms"].__getitem__)
    table = f.lower(*inputs).as_text("algorithms")
    assert f"{entry['choice']:9} timed at 1 thread" in table

    # the same op shape again (another function, same cache): nothing is timed
    g = solir.jit(lambda x, w, b: conv(x, w, b) * 2.0, autotune=True, num_threads=1)
    np.testing.assert_allclose(g(*inputs), 2 * np.asarray(got), rtol=1e-5, atol=1e-5)
    assert len(timed) == 1
    # ...but at another thread count it is
    solir.jit(conv, autotune=True, num_threads=2)(*inputs)
    assert len(timed) == 2
    assert len(json.loads((own_cache / autotune.DB_NAME).read_text())) == 2


def test_a_forced_choice_beats_autotuning(own_cache, inputs, monkeypatch):
    monkeypatch.setattr(autotune, "_time_candidates", lambda *a: pytest.fail("timed a forced op"))
    f = solir.jit(conv, autotune=True, algorithms={"conv": "winograd2"})
    assert "winograd2 forced by the user" in f.lower(*inputs).as_text("algorithms")


def test_tune_keys_tell_shapes_targets_and_threads_apart(inputs):
    from solir.targets import get_target

    def op_of(fn, *args):
        from solir.lower.pipeline import PassContext, run_pipeline
        comp = solir.jit(fn).lower(*args).compilation
        m = run_pipeline(comp.module, PassContext(comp.target),
                         passes=["canonicalize", "fold-constants", "decompose"])
        return next(op for kind, _, op in contractions(m))

    a = op_of(conv, *inputs)
    b = op_of(conv, inputs[0][:, :, :10], *inputs[1:])
    host, avx2 = get_target("host"), get_target("avx2")
    keys = {autotune.tune_key("conv", a, host, 1), autotune.tune_key("conv", b, host, 1),
            autotune.tune_key("conv", a, avx2, 1), autotune.tune_key("conv", a, host, 2)}
    assert len(keys) == 4
    assert autotune.tune_key("conv", a, host, 1) == autotune.tune_key("conv", op_of(conv, *inputs), host, 1)


def test_a_target_that_cannot_run_here_falls_back_to_the_cost_model(own_cache, inputs):
    f = solir.jit(conv, autotune=True, target="neon")
    with pytest.warns(SolirWarning, match="cannot run target 'neon'"):
        table = f.lower(*inputs).as_text("algorithms")
    assert "timed at" not in table and "effective multiply-adds" in table


def test_cli_autotune_compiles_and_reports(own_cache, tmp_path, inputs):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    x, w, b = inputs
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], name="c0")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    path = tmp_path / "conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    env = dict(os.environ, SOLIR_CACHE_DIR=str(own_cache), SOLIR_NUM_THREADS="1")
    run = subprocess.run([sys.executable, "-m", "solir.cli", "show", str(path), "--stage",
                          "algorithms", "--autotune", "--no-summary"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "autotune conv:0: timing" in run.stderr
    assert "timed at 1 thread" in run.stdout and "[c0]" in run.stdout
    out = tmp_path / "art"
    run = subprocess.run([sys.executable, "-m", "solir.cli", "compile", str(path), "-o", str(out),
                          "--autotune", "--quiet"], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    y, = solir.load(out)(x)
    ref = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                       dimension_numbers=("NCHW", "OIHW", "NCHW"))
    np.testing.assert_allclose(y, ref + b[None, :, None, None], rtol=2e-4, atol=2e-4)
