#!/usr/bin/env bash
# PostgreSQL server binaries for the test suite (tests start their own throw-away cluster with
# initdb + pg_ctl; nothing here starts a server). Idempotent and quick when already installed.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null || command -v pg_ctl >/dev/null; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "postgres.sh: PostgreSQL is missing; install Debian's 'postgresql' package (needs root)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Only the server binaries: no cluster is created and no service is started by the package.
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# Debian's package creates a cluster and may start it; the tests do not use it.
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
        pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
fi
