#!/usr/bin/env bash
# Node.js and the npm packages under tests/ (real JavaScript clients the e2e tests run with node).
# Idempotent: does nothing when node and every package of tests/package.json are installed.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    else
        echo "scripts/services/node.sh: node and npm are needed (apt-get install nodejs npm)" >&2
        exit 1
    fi
fi

missing_packages() {
    node -e '
const deps = require("./tests/package.json").dependencies || {};
const fs = require("fs");
console.log(Object.keys(deps).filter(n => !fs.existsSync(`tests/node_modules/${n}/package.json`)).join(" "));
'
}
if [ -n "$(missing_packages)" ]; then
    (cd tests && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
    # The e2e tests load files from these packages (e.g. fine-uploader.core.js): refuse a partial install.
    still=$(missing_packages)
    if [ -n "$still" ]; then
        echo "scripts/services/node.sh: npm install left out: $still" >&2
        exit 1
    fi
fi
