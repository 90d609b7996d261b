#!/usr/bin/env bash
# Headless Chromium for the dashboard's browser tests (idempotent): Debian's chromium and
# chromium-driver. Playwright (a test dependency) drives this browser; its own browser download
# is never used. Elsewhere than Debian as root: say what is missing and exit 1.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
CHROMIUM=${BEPBUILD_CHROMIUM:-/usr/bin/chromium}
say() { echo "browser: $*"; }

if [ -x "$CHROMIUM" ] && [ -x /usr/bin/chromedriver ]; then
  say "ready: $CHROMIUM"
  exit 0
fi
if ! { [ -f /etc/debian_version ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; }; then
  say "no Chromium at $CHROMIUM; install Debian's chromium and chromium-driver (or set BEPBUILD_CHROMIUM) and re-run" >&2
  exit 1
fi
t=$(date +%s)
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
say "installed chromium and chromium-driver in $(( $(date +%s) - t )) s"
