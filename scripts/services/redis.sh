#!/usr/bin/env bash
# Installs redis-server (Debian package) for the rate-limit tests that share a budget across
# processes; quick and silent when it is already there. The tests start and stop it themselves.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
# The package starts a system instance on :6379 on some machines; the tests never use it.
