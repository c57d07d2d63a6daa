#!/usr/bin/env bash
# Install everything (runtime, local runtime, dev and infra tools, the dashboard's npm packages and
# Chromium) and run lint, types, the dashboard's unit tests and the whole suite.
source "$(dirname "$0")/_venv.sh" dev,infra
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
bash scripts/web.sh test  # the dashboard: npm ci, build, vitest; Chromium for the browser tests
ruff check .
mypy
STEPWISE_REQUIRE_BROWSER=1 python -m pytest -n 2 --dist loadgroup "$@"
