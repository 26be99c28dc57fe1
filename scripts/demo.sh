#!/usr/bin/env bash
# Sets up a virtual environment with solir, then compiles and runs the quick-start demo.
source "$(dirname "$0")/setup.sh" ""
exec .venv/bin/python examples/quickstart.py
