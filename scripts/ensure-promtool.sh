#!/bin/sh
# Makes sure promtool (Prometheus's own checker, from Debian's `prometheus` package) is installed: the
# /metrics exposition test runs `promtool check metrics` on a live scrape and the dashboard test
# `promtool check rules` on the dashboard's queries. `npm test` runs this first (pretest), .ci/run too.
# Installs the package when promtool is missing and this runs as root (the package's server is not
# started: only the binary is wanted); otherwise says what to install. Outside CI a missing promtool
# is only a warning (the tests fall back to the pure parser and say so); with CI=true it fails, so CI
# never skips the check silently.
set -eu

command -v promtool >/dev/null 2>&1 && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "ensure-promtool: installing prometheus (for promtool) from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d 101: the package's postinst must not start a Prometheus server on this machine.
  policy=/usr/sbin/policy-rc.d
  created=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created=yes
  fi
  # Another apt (a parallel installer) may hold the lock for a while: wait for it rather than fail.
  lock="-o DPkg::Lock::Timeout=600"
  apt-get install $lock -y --no-install-recommends prometheus >/dev/null 2>&1 ||
    { apt-get $lock update -qq && apt-get install $lock -y --no-install-recommends prometheus; } || true
  [ -n "$created" ] && rm -f "$policy"
  command -v promtool >/dev/null 2>&1 && exit 0
fi

echo "ensure-promtool: promtool is needed by the /metrics and dashboard tests (promtool check metrics / check rules)." >&2
echo "  Debian/Ubuntu: sudo apt-get install -y --no-install-recommends prometheus    macOS: brew install prometheus" >&2
if [ "${CI:-}" = "true" ]; then
  exit 1
fi
echo "  (not CI: the tests fall back to the pure exposition parser and say so)" >&2
exit 0
