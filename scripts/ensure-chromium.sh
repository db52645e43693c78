#!/bin/sh
# Makes sure Debian's chromium is installed: the browser test of the API reference
# (test/docs/browser.test.ts) drives it with playwright-core, which downloads no browser of its own.
# `npm test` runs this first (pretest), .ci/run too. Installs Debian's package when it is missing and
# this runs as root; otherwise says what to install and fails: the browser test is never skipped
# silently. CHROMIUM_PATH names another binary (the test reads it too).
set -eu

have_chromium() {
  for binary in "${CHROMIUM_PATH:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    [ -n "$binary" ] && [ -x "$binary" ] && return 0
  done
  return 1
}

have_chromium && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-chromium: installing chromium from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y --no-install-recommends chromium; }
  have_chromium && exit 0
fi

echo "ensure-chromium: chromium is required by the browser test of /docs (test/docs/browser.test.ts)." >&2
echo "  Debian/Ubuntu: sudo apt-get install -y chromium    elsewhere: set CHROMIUM_PATH to a Chromium or Chrome binary" >&2
exit 1
