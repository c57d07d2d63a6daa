#!/usr/bin/env bash
# Install everything and run every benchmark beside its baseline; writes BENCHMARKS.md.
# Usage: bash scripts/bench.sh [--quick] [--only NAME]
source "$(dirname "$0")/_venv.sh" dev,infra
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
exec python -m bench "$@"
