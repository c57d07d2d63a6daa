#!/usr/bin/env bash
# Install Stepwise with its local runtime and run one build end to end (mock AI provider, no AWS).
# Usage: bash scripts/demo.sh ["your prompt"] [stepwise build options...]
source "$(dirname "$0")/_venv.sh" local
prompt="${1:-Create a landing page with a hero section}"
shift || true
exec stepwise build "$prompt" --out ./stepwise-out "$@"
