#!/usr/bin/env bash
# Installs the system services and Node packages the test suite needs, when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
S=scripts/services

# openapi-python-client's own virtualenv needs only PyPI: it is made while apt works.
$S/openapi-client.sh &
openapi_client=$!

# Every missing Debian package in two apt-get runs (with and without recommends) rather than one run
# per service: each run costs 5-10 s here even when it has little to do. No service a package
# registers is started meanwhile (policy-rc.d): the tests start their own instances on their own ports.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # shellcheck disable=SC2207  # package names: no spaces, no globs
    with_recommends=($($S/node.sh packages) $($S/chromium.sh packages))
    # shellcheck disable=SC2207
    plain=($($S/postgres.sh packages) $($S/nginx.sh packages) $($S/ceph-rgw.sh packages)
        $($S/redis.sh packages) $($S/clamav.sh packages))
    if [ $((${#with_recommends[@]} + ${#plain[@]})) -gt 0 ]; then
        # shellcheck source=services/apt.sh
        . $S/apt.sh
        policy=""
        if [ ! -e /usr/sbin/policy-rc.d ]; then  # one already there is the machine's own: kept
            policy=/usr/sbin/policy-rc.d
            printf '#!/bin/sh\nexit 101\n' >$policy
            chmod 755 $policy
            trap 'rm -f "$policy"' EXIT
        fi
        if [ ${#with_recommends[@]} -gt 0 ]; then apt_install --recommends "${with_recommends[@]}"; fi
        if [ ${#plain[@]} -gt 0 ]; then apt_install "${plain[@]}"; fi
        if [ -n "$policy" ]; then
            rm -f "$policy"
            trap - EXIT
        fi
    fi
fi

# Each script finishes its own service (npm packages, a package's default instance stopped, ...) and
# installs, one by one, whatever the batch above could not.
$S/node.sh
$S/chromium.sh
$S/postgres.sh
$S/nginx.sh
$S/ceph-rgw.sh install
$S/redis.sh
$S/clamav.sh
wait $openapi_client
exit 0
