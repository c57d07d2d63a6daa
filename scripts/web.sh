#!/usr/bin/env bash
# The web dashboard (web/): install its exact npm packages (npm ci, only when package-lock.json
# changed) and build it into web/dist when its sources changed.
#   bash scripts/web.sh build   # what `stepwise serve` needs
#   bash scripts/web.sh test    # also Debian's Chromium for the browser tests, and the vitest unit tests
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../web"
mode="${1:-build}"
command -v npm >/dev/null || { echo "The dashboard needs Node.js 20+ and npm." >&2; exit 2; }

stamp=node_modules/.stepwise-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi
if [ ! -f dist/index.html ] || [ -n "$(find src public index.html vite.config.ts tsconfig.json package-lock.json -newer dist/index.html -print -quit)" ]; then
  npm run --silent build
fi

if [ "$mode" = test ]; then
  if [ ! -x /usr/bin/chromium ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
  fi
  npx vitest run
fi
