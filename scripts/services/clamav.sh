#!/usr/bin/env bash
# ClamAV's clamd for the virus-scan tests: installs Debian's clamav-daemon when missing. The tests
# start their own clamd with a tiny signature database (the EICAR test signature, written by the
# test itself), so nothing is downloaded: freshclam is never run, and the service the package may
# register is neither needed nor used.
set -euo pipefail
present() { command -v clamd >/dev/null || [ -x /usr/sbin/clamd ]; }
if [ "${1:-}" = packages ]; then present || echo clamav-daemon; exit 0; fi
if present; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "clamav: clamd missing and not root (install: apt-get install clamav-daemon)" >&2
    exit 0
fi
# shellcheck source=apt.sh
. "$(dirname "$0")/apt.sh"
apt_install clamav-daemon
# The package's own daemon and updater (if the package started them) would look for the signature
# download this machine never does; the tests do not use them.
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now clamav-daemon clamav-freshclam >/dev/null 2>&1 || true
fi
