import os
import tempfile

import pytest

# Tests use their own compile cache so they exercise cold and warm paths and never touch ~/.cache.
os.environ.setdefault("SOLIR_CACHE_DIR", tempfile.mkdtemp(prefix="solir-test-cache-"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from hypothesis import settings  # noqa: E402

settings.register_profile("ci", max_examples=6, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=6, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def rng():
    import numpy as np
    return np.random.default_rng(0)


# -- the ONNX conformance report (tests/test_onnx_backend.py) ---------------------------------------
_onnx_outcomes: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if "test_onnx_backend.py" in report.nodeid and report.nodeid.endswith("_cpu"):
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            _onnx_outcomes[report.nodeid.rsplit("::", 1)[1]] = report.outcome


def pytest_terminal_summary(terminalreporter):
    if not _onnx_outcomes:
        return
    from tests.onnx_conformance import LISTED_OPERATORS, operator_of
    listed = {n: o for n, o in _onnx_outcomes.items() if operator_of(n) in LISTED_OPERATORS}
    node = {n: o for n, o in _onnx_outcomes.items() if operator_of(n) is not None}
    terminalreporter.write_sep("-", "ONNX backend conformance")

    def counts(outcomes: dict[str, str]) -> str:
        n = {k: sum(o == k for o in outcomes.values()) for k in ("passed", "failed", "skipped")}
        return (f"{n['passed']} passed of {len(outcomes)} ({n['skipped']} excluded, "
                f"{n['failed']} failed)")
    terminalreporter.write_line(f"all backend tests (cpu): {counts(_onnx_outcomes)}")
    terminalreporter.write_line(f"node tests: {counts(node)}")
    terminalreporter.write_line(f"node tests of issue 3's operators: {counts(listed)}")
