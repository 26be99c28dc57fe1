#!/usr/bin/env bash
# Sets up a virtual environment with solir and its test extra, then runs the test suite.
source "$(dirname "$0")/setup.sh" "[test]"
exec .venv/bin/python -m pytest -q "$@"
