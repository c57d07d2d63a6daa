#!/usr/bin/env bash
# Install Stepwise with its local runtime, build the web dashboard, and serve both: the API, its
# workers and the dashboard on one local address (mock AI provider, no AWS). Open the printed
# dashboard address (it carries the dev token). Usage: bash scripts/serve.sh [stepwise serve options]
source "$(dirname "$0")/_venv.sh" local
bash scripts/web.sh build
exec stepwise serve "$@"
