#!/usr/bin/env bash
# Installs the system services and Node packages the test suite needs, when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services/node.sh
scripts/services/chromium.sh
scripts/services/postgres.sh
scripts/services/nginx.sh
scripts/services/ceph-rgw.sh install
scripts/services/redis.sh
scripts/services/clamav.sh
exit 0
