"""The ONNX project's own backend tests (onnx.backend.test: the node tests and the
`simple`, `pytorch-converted` and `pytorch-operator` models) through the standard
BackendTest runner, with its data and tolerances. Every exclusion is listed, with its
reason, in tests/onnx_backend_exclusions.txt; the pass counts (overall and for the
operators issue 3 lists) are printed at the end of the run.

SOLIR_ONNX_ALL=1 runs the excluded tests as well; tests/update_onnx_exclusions.py rewrites
the exclusion file from such a run."""

import os
from pathlib import Path

import onnx.backend.test

from solir.onnx import SolirBackend

EXCLUSIONS = Path(__file__).with_name("onnx_backend_exclusions.txt")


def exclusions() -> list[tuple[str, str]]:
    out = []
    for line in EXCLUSIONS.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        pattern, _, reason = line.partition("#")
        assert reason.strip(), f"exclusion {pattern!r} needs a reason"
        out.append((pattern.strip(), reason.strip()))
    return out


backend_test = onnx.backend.test.BackendTest(SolirBackend, __name__)
if os.environ.get("SOLIR_ONNX_ALL") != "1":   # SOLIR_ONNX_ALL=1 runs the excluded tests too
    for _pattern, _reason in exclusions():
        backend_test.exclude(_pattern)
globals().update(backend_test.test_cases)
