#!/usr/bin/env bash
# Debian's chromium for the browser tests (Playwright drives it through executable_path; its own
# downloaded browser builds are not used). Quick when already installed.
set -euo pipefail
present() { command -v chromium >/dev/null 2>&1; }
if [ "${1:-}" = packages ]; then present || echo chromium; exit 0; fi
if present; then
    exit 0
fi
# shellcheck source=apt.sh
. "$(dirname "$0")/apt.sh"
apt_install --recommends chromium
command -v chromium
