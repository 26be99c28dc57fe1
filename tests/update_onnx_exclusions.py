"""Rewrite tests/onnx_backend_exclusions.txt from a run of every ONNX backend test.

    python tests/update_onnx_exclusions.py            # runs the tests (a few minutes)
    python tests/update_onnx_exclusions.py --xml F    # or reads a junit xml of such a run

Each failing test gets one line with its reason. A reason written by hand (anything but the
generated "known failure ...") is kept while the test still fails; other reasons come from the
error: an unsupported dtype or operator, or "known failure" (a bug to fix) for the rest.
Tests of the operators issue 3 lists are marked "[listed operator]".
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.onnx_conformance import LISTED_OPERATORS, operator_of  # noqa: E402

FILE = HERE / "onnx_backend_exclusions.txt"
HEADER = """\
# ONNX backend tests solir does not pass, one regex per line with its reason after "#".
# Regexes match the runner test names (test_<case>_cpu). Regenerate with
# `python tests/update_onnx_exclusions.py`; reasons written by hand are kept.
"""

_PATTERNS = [
    (r"ONNX data type (\S+) is not supported", "unsupported dtype: {0}"),
    (r"constant of dtype (\S+)", "unsupported dtype: {0}"),
    (r"ONNX operator (\S+) \(opset \d+\) is not supported", "operator not implemented: {0}"),
    (r"operator (\S+) \(domain", "operator domain not supported: {0}"),
    (r"not a tensor \(sequences, maps", "sequence/optional/map types are not supported"),
]


def reason_for(message: str) -> str:
    for pat, fmt in _PATTERNS:
        m = re.search(pat, message)
        if m:
            return fmt.format(*m.groups())
    first = message.strip().splitlines()[0][:100] if message.strip() else ""
    return f"known failure: {first}"


def old_reasons() -> dict[str, str]:
    out = {}
    for line in FILE.read_text().splitlines():
        if line.startswith("^"):
            pat, _, reason = line.partition("#")
            out[pat.strip()] = reason.strip().removesuffix("[listed operator]").strip()
    return out


def failures(xml: Path) -> dict[str, str]:
    out = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        for tag in ("failure", "error"):
            el = case.find(tag)
            if el is not None:
                out[case.get("name")] = (el.get("message") or "") + "\n" + (el.text or "")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xml", type=Path, help="a junit xml of a SOLIR_ONNX_ALL=1 run")
    args = ap.parse_args()
    xml = args.xml
    if xml is None:
        xml = Path(tempfile.mkdtemp()) / "onnx.xml"
        env = dict(os.environ, SOLIR_ONNX_ALL="1")
        subprocess.run([sys.executable, "-m", "pytest", str(HERE / "test_onnx_backend.py"),
                        "-p", "no:cacheprovider", f"--junitxml={xml}"], env=env, cwd=HERE.parent)
    old = old_reasons()
    lines = []
    for name, msg in sorted(failures(xml).items()):
        pat = f"^{name}$"
        reason = old.get(pat, "")
        if not reason or reason.startswith("known failure"):
            reason = reason_for(msg)
        if operator_of(name) in LISTED_OPERATORS:
            reason += " [listed operator]"
        lines.append(f"{pat}  # {reason}")
    FILE.write_text(HEADER + "\n".join(lines) + "\n")
    known = sum("known failure" in ln for ln in lines)
    print(f"{FILE.name}: {len(lines)} exclusions ({known} known failures)")


if __name__ == "__main__":
    main()
