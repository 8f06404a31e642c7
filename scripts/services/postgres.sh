#!/usr/bin/env bash
# PostgreSQL server binaries for the test suite (tests start their own throw-away cluster with
# initdb + pg_ctl; nothing here starts a server). Idempotent and quick when already installed.
set -euo pipefail
present() { compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null; }
if [ "${1:-}" = packages ]; then present || echo postgresql; exit 0; fi
if present; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "postgres.sh: PostgreSQL is missing; install Debian's 'postgresql' package (needs root)" >&2
    exit 1
fi
# shellcheck source=apt.sh
. "$(dirname "$0")/apt.sh"
# Only the server binaries: no cluster is created and no service is started by the package.
apt_install postgresql
# Debian's package creates a cluster and may start it; the tests do not use it.
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
        pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
fi
