#!/usr/bin/env bash
# Sourced by the service scripts: `apt_install [--recommends] PKG...` installs Debian packages.
#
# The package lists are refreshed once for all the scripts `make test` runs, not once per script
# (each `apt-get update` costs about 5 s here), and dpkg skips its per-file fsyncs: these are
# throw-away test dependencies, and on a fresh CI machine the fsyncs of a large package set
# (chromium, ceph) are a good part of the install time.
APT_STAMP="${TMPDIR:-/tmp}/chunkd-apt-lists.stamp"

apt_install() {
    local recommends="--no-install-recommends"
    if [ "${1:-}" = "--recommends" ]; then
        recommends=""
        shift
    fi
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    if [ -z "$(find "$APT_STAMP" -mmin -60 2>/dev/null)" ]; then
        $sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
        touch "$APT_STAMP"
    fi
    # shellcheck disable=SC2086  # $recommends is one option or none
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=600 \
        -o Dpkg::Options::=--force-unsafe-io install -y -qq $recommends "$@" >/dev/null
}
