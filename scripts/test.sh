#!/usr/bin/env bash
# The whole test suite: install what it needs, lint, type-check, run every test.
# README's second command and .ci/run both call this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
PY=${PYTHON:-$(bash scripts/python)}
echo "== ruff"
$PY -m ruff check klpinspect gdb tests benchmarks examples
echo "== mypy --strict"
$PY -m mypy klpinspect
$PY -m mypy gdb/klpinspect.py
$PY -m mypy --strict examples/*.py
echo "== pytest"
exec $PY -m pytest -q -p no:cacheprovider "$@"
