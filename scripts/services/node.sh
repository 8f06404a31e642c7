#!/usr/bin/env bash
# Node.js and the npm packages under tests/ (real JavaScript clients the e2e tests run with node) and
# bench/node/ (@tus/server, the peer bench/compare.py measures chunkd against).
# Idempotent: does nothing when node and every package of both package.json files are installed.
set -euo pipefail
cd "$(dirname "$0")/../.."

present() { command -v node >/dev/null && command -v npm >/dev/null; }
if [ "${1:-}" = packages ]; then present || echo nodejs npm; exit 0; fi
if ! present; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        # shellcheck source=apt.sh
        . scripts/services/apt.sh
        apt_install --recommends nodejs npm
    else
        echo "scripts/services/node.sh: node and npm are needed (apt-get install nodejs npm)" >&2
        exit 1
    fi
fi

missing_packages() {
    DIR="$1" node -e '
const dir = process.env.DIR;
const deps = require(`./${dir}/package.json`).dependencies || {};
const fs = require("fs");
console.log(Object.keys(deps).filter(n => !fs.existsSync(`${dir}/node_modules/${n}/package.json`)).join(" "));
'
}
for dir in tests bench/node; do
    if [ -n "$(missing_packages "$dir")" ]; then
        (cd "$dir" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
        # The e2e tests load files from these packages (e.g. fine-uploader.core.js): refuse a partial install.
        still=$(missing_packages "$dir")
        if [ -n "$still" ]; then
            echo "scripts/services/node.sh: npm install in $dir left out: $still" >&2
            exit 1
        fi
    fi
done
