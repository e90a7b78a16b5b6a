#!/usr/bin/env bash
# Lint, validate the napari manifest, and run the whole test suite (widget tests run on a
# virtual X display through pytest-xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
.venv/bin/npe2 validate napari-unet
.venv/bin/python -m pytest "$@"
