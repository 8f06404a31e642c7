#!/usr/bin/env bash
# The Fine Uploader library (npm) for the private-message browser test, into tests/node_modules.
set -euo pipefail
cd "$(dirname "$0")/../../tests"
if [ -f node_modules/fine-uploader/package.json ]; then
    exit 0
fi
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
else
    npm install --no-package-lock --no-audit --no-fund --loglevel=error
fi
test -f node_modules/fine-uploader/fine-uploader/fine-uploader.core.js
