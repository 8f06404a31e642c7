#!/usr/bin/env bash
# openapi-python-client for tests/e2e/test_openapi_client.py, in a virtualenv of its own: it pins
# typer<0.28, which must not downgrade the typer chunkd's own CLI runs on.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=.cache/openapi-python-client
if [ ! -x "$VENV/bin/openapi-python-client" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q 'openapi-python-client>=0.29'
fi
