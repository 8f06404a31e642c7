#!/usr/bin/env bash
# Installs the system services and Node packages the test suite needs, when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services/node.sh
scripts/services/chromium.sh
exit 0
