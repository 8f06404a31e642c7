#!/usr/bin/env bash
# nginx for the load-balancer test (tests/e2e/test_nginx.py starts its own instance with the
# sample config from docs/; nothing here starts a server). Idempotent and quick when installed.
set -euo pipefail
present() { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }
if [ "${1:-}" = packages ]; then present || echo nginx; exit 0; fi
if present; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "nginx.sh: nginx is missing; install Debian's 'nginx' package (needs root)" >&2
    exit 1
fi
# shellcheck source=apt.sh
. "$(dirname "$0")/apt.sh"
apt_install nginx
# The package may start a default server on port 80; the tests run their own.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl stop nginx || true
elif [ -f /run/nginx.pid ]; then
    kill "$(cat /run/nginx.pid)" 2>/dev/null || true
fi
