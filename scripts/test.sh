#!/usr/bin/env bash
# Install everything (runtime, local runtime, dev and infra tools) and run lint, types and the whole suite.
source "$(dirname "$0")/_venv.sh" dev,infra
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
ruff check .
mypy
python -m pytest -n 2 "$@"
