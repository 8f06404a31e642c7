#!/usr/bin/env bash
# Installs redis-server (Debian package) for the rate-limit tests that share a budget across
# processes; quick and silent when it is already there. The tests start and stop it themselves.
set -euo pipefail
present() { command -v redis-server >/dev/null 2>&1; }
if [ "${1:-}" = packages ]; then present || echo redis-server; exit 0; fi
if present; then
    exit 0
fi
# shellcheck source=apt.sh
. "$(dirname "$0")/apt.sh"
apt_install redis-server
# The package starts a system instance on :6379 on some machines; the tests never use it.
