#!/usr/bin/env bash
# Makes this checkout runnable: npm dependencies from the lockfile, then a build when sources changed.
# Idempotent and quiet when nothing is to do; safe to call before every command.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "agentbox: installing npm dependencies (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

stamp=node_modules/.agentbox-build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find packages/*/src packages/*/native packages/*/build.mjs packages/*/package.json packages/*/vite.config.ts packages/*/index.html tsconfig.base.json -newer "$stamp" -print -quit 2>/dev/null)" ]; then
  echo "agentbox: building" >&2
  npm run --silent build >&2
  touch "$stamp"
fi
