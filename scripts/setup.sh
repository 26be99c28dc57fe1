# Sourced by demo.sh and test.sh: create .venv (Python 3.11) and install solir with extras "$1".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
[ -d .venv ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ -n "${1:-}" ]; then .venv/bin/python -m pip install -q -e ".$1"; else .venv/bin/python -m pip install -q -e .; fi
