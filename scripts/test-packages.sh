#!/usr/bin/env bash
# Debian packages only the tests need (today: `chromium`, driven by playwright-core in the
# dashboard's browser test). Idempotent: installs only what is missing; needs root to install.
set -euo pipefail
packages=(chromium)
missing=()
for pkg in "${packages[@]}"; do
  if ! dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "agentbox tests: missing Debian packages ${missing[*]}; run: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "agentbox tests: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
