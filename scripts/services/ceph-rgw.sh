#!/usr/bin/env bash
# A one-node Ceph cluster with a RADOS Gateway (a real S3-compatible store) on 127.0.0.1, for tests.
#
#   ceph-rgw.sh install        install Debian's packages when missing (idempotent, quick when present)
#   ceph-rgw.sh packages       print the Debian packages `install` would install (none when present)
#   ceph-rgw.sh start DIR      bootstrap mon + memstore osd + radosgw in DIR on free ports; prints env lines
#   ceph-rgw.sh env DIR        print the env lines of a running gateway (CHUNKD_S3_ENDPOINT=... etc.)
#   ceph-rgw.sh stop DIR       stop the daemons started in DIR (by their pid files only)
#   ceph-rgw.sh stop-gateway DIR / start-gateway DIR
#                              stop the radosgw alone (an S3 outage; the cluster keeps the objects),
#                              and start it again on its port
#
# CEPH_MEMSTORE_BYTES (default 2 GiB) caps the RAM the memstore OSD may hold; a benchmark that keeps
# more bytes in flight (staged parts count twice until completion) needs more.
# CEPH_RGW_EXTRA_CONF (default empty): lines added to the gateway's section of ceph.conf, e.g.
# "rgw multipart min part size = 1048576" for a benchmark that sends 1 MiB parts.
#
# Why these settings: see docs in the header of tests/support/s3.py (pool size 1 or RGW hangs; fast
# paxos intervals cut bootstrap from ~13 s to ~2 s; memstore keeps data in RAM).
set -euo pipefail

ACCESS_KEY=${CEPH_RGW_ACCESS_KEY:-chunkdtestaccesskey}
SECRET_KEY=${CEPH_RGW_SECRET_KEY:-chunkdtestsecretkey0123456789abcdefghij}
RGW_NAME=gw

die() { echo "ceph-rgw: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PACKAGES="ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl"

present() {
    command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && command -v radosgw >/dev/null \
        && command -v ceph >/dev/null && command -v uuidgen >/dev/null && command -v curl >/dev/null
}

install() {
    if present; then
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "ceph packages missing and not root (install: ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl)"
    # shellcheck source=apt.sh
    . "$(dirname "${BASH_SOURCE[0]}")/apt.sh"
    # shellcheck disable=SC2086  # a list of package names
    apt_install $PACKAGES
}

# Start a daemon in its own session, stdio redirected, no inherited descriptors beyond 0-2.
spawn() {
    local name=$1; shift
    setsid "$@" </dev/null >>"$DIR/log/$name.out" 2>&1 &
    echo $! >"$DIR/run/$name.pid"
}

wait_for() {
    local what=$1 tries=$2; shift 2
    for _ in $(seq "$tries"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    die "timed out waiting for $what (logs in $DIR/log)"
}

print_env() {
    local port
    port=$(cat "$DIR/rgw.port")
    echo "CHUNKD_S3_ENDPOINT=http://127.0.0.1:$port"
    echo "CHUNKD_S3_ACCESS_KEY=$ACCESS_KEY"
    echo "CHUNKD_S3_SECRET_KEY=$SECRET_KEY"
    echo "CHUNKD_S3_REGION=us-east-1"
}

start() {
    install
    mkdir -p "$DIR"/{log,run,mon,osd}
    DIR=$(cd "$DIR" && pwd)
    if [ -f "$DIR/rgw.port" ] && curl -fsS "http://127.0.0.1:$(cat "$DIR/rgw.port")/" >/dev/null 2>&1; then
        print_env; return 0
    fi
    local mon_port rgw_port fsid osd_uuid
    mon_port=$(free_port); rgw_port=$(free_port)
    fsid=$(uuidgen); osd_uuid=$(uuidgen)
    cat >"$DIR/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind msgr2 = true
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
log file = $DIR/log/\$name.log
pid file = $DIR/run/\$name.daemon.pid
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
mon allow pool delete = true
paxos propose interval = 0.05
paxos min wait = 0.01
mon data avail warn = 1
mon data avail crit = 0
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-2147483648}
osd fast shutdown = false
osd data = $DIR/osd
osd crush chooseleaf type = 0
[mon]
mon data = $DIR/mon
[client.rgw.$RGW_NAME]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw dns name = 127.0.0.1
rgw gc obj min wait = 60
rgw gc processor period = 60
rgw data = $DIR/rgw
${CEPH_RGW_EXTRA_CONF:-}
EOF
    local conf=(--conf "$DIR/ceph.conf")
    ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-authtool "$DIR/keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
    ceph-authtool "$DIR/keyring" --gen-key -n osd.0 --cap mon 'allow profile osd' --cap osd 'allow *' >/dev/null
    ceph-authtool "$DIR/keyring" --gen-key -n "client.rgw.$RGW_NAME" --cap mon 'allow rw' --cap osd 'allow rwx' >/dev/null
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/monmap" >/dev/null
    ceph-mon "${conf[@]}" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" >/dev/null 2>&1 \
        || die "ceph-mon --mkfs failed"
    spawn mon ceph-mon -f "${conf[@]}" --id a
    wait_for "monitor quorum" 300 ceph "${conf[@]}" --connect-timeout 2 mon stat
    ceph "${conf[@]}" osd new "$osd_uuid" 0 >/dev/null
    ceph-osd "${conf[@]}" --id 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1 || die "ceph-osd --mkfs failed"
    spawn osd ceph-osd -f "${conf[@]}" --id 0
    wait_for "osd.0 active" 300 sh -c "ceph --conf '$DIR/ceph.conf' daemon osd.0 status 2>/dev/null | grep -q '\"state\": \"active\"'"
    mkdir -p "$DIR/rgw"
    spawn rgw radosgw -f "${conf[@]}" --id "rgw.$RGW_NAME"
    echo "$rgw_port" >"$DIR/rgw.port"
    wait_for "radosgw" 600 sh -c "curl -fsS http://127.0.0.1:$rgw_port/ | grep -q ListAllMyBucketsResult"
    radosgw-admin "${conf[@]}" user create --uid=chunkd --display-name=chunkd \
        --access-key="$ACCESS_KEY" --secret="$SECRET_KEY" >/dev/null
    print_env
}

# Stop the named daemons (rgw, osd, mon), by their pid files only.
stop_daemons() {
    local name pid
    for name in "$@"; do
        [ -f "$DIR/run/$name.pid" ] || continue
        pid=$(cat "$DIR/run/$name.pid")
        kill "$pid" 2>/dev/null || true
    done
    for name in "$@"; do
        [ -f "$DIR/run/$name.pid" ] || continue
        pid=$(cat "$DIR/run/$name.pid")
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$DIR/run/$name.pid"
    done
}

stop() {
    stop_daemons rgw osd mon
    rm -f "$DIR/rgw.port"
}

# The gateway alone, for outage tests: its cluster (and the objects in it) stays up meanwhile, and
# it comes back on the same port.
stop_gateway() {
    stop_daemons rgw
}

start_gateway() {
    DIR=$(cd "$DIR" && pwd)
    local port
    port=$(cat "$DIR/rgw.port")
    spawn rgw radosgw -f --conf "$DIR/ceph.conf" --id "rgw.$RGW_NAME"
    wait_for "radosgw" 600 sh -c "curl -fsS http://127.0.0.1:$port/ | grep -q ListAllMyBucketsResult"
}

cmd=${1:-}
case "$cmd" in
    install) install ;;
    packages) present || echo "$PACKAGES" ;;
    start|stop|env|stop-gateway|start-gateway)
        [ $# -ge 2 ] || die "usage: $0 $cmd DIR"
        DIR=$2
        case "$cmd" in
            start) start ;;
            stop) stop ;;
            env) print_env ;;
            stop-gateway) stop_gateway ;;
            start-gateway) start_gateway ;;
        esac ;;
    *) die "usage: $0 install | packages | start DIR | stop DIR | env DIR | stop-gateway DIR | start-gateway DIR" ;;
esac
