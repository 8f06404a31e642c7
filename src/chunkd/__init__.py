"""chunkd: a self-hosted upload server."""

import sys

# Two optional extras that libraries chunkd uses load whenever they are installed, and chunkd
# never uses: httpx's command-line client (which loads rich and pygments, ~95 ms and 4 MiB) and
# mako's pygments highlighting of template errors (loaded by Alembic's migrations: pygments'
# lexers, ~3 MiB more). Marking those two modules absent makes each library take its own
# documented fallback (httpx: a stub ``main``; mako: plain escaping). Measured RSS of a started
# server on a fresh data directory, 2026-11-30: 107 → see docs/benchmarks.md.
for _unused in ("httpx._main", "mako.ext.pygmentplugin"):
    sys.modules.setdefault(_unused, None)  # type: ignore[arg-type]
