#!/bin/sh
# Makes sure SoftHSM2 (the software PKCS#11 token the master-key tests run against) and pkcs11-tool
# (OpenSC, used by the QSA walkthrough of docs/key-management.md) are installed: `npm test` runs it
# first (pretest), .ci/run too. Installs Debian's packages when they are missing and this runs as
# root; otherwise says what to install and fails: the PKCS#11 tests are never skipped silently.
set -eu

have_softhsm() {
  command -v softhsm2-util >/dev/null 2>&1 && command -v pkcs11-tool >/dev/null 2>&1 &&
    for module in "${SOFTHSM2_MODULE:-}" /usr/lib/softhsm/libsofthsm2.so \
      /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so /usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so \
      /usr/local/lib/softhsm/libsofthsm2.so; do
      [ -n "$module" ] && [ -f "$module" ] && return 0
    done
  return 1
}

have_softhsm && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-softhsm: installing softhsm2 and opensc from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends softhsm2 opensc >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y --no-install-recommends softhsm2 opensc; }
  have_softhsm && exit 0
fi

echo "ensure-softhsm: SoftHSM2 and pkcs11-tool are required by the PKCS#11 master-key tests." >&2
echo "  Debian/Ubuntu: sudo apt-get install -y softhsm2 opensc    macOS: brew install softhsm opensc" >&2
echo "  (set SOFTHSM2_MODULE to libsofthsm2.so if it is somewhere else)" >&2
exit 1
