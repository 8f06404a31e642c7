"""The TLS settings of the server's outgoing HTTP clients (webhook deliveries, the hook service)."""

from __future__ import annotations

import functools
import ssl

import httpx

__all__ = ["outgoing_tls"]


@functools.cache
def outgoing_tls() -> ssl.SSLContext:
    """One verifying context (the certifi bundle, no SSL_CERT_* from the environment) built once per
    process: httpx builds a new one for each client otherwise, tens of milliseconds of CPU loading the
    bundle, paid at every start of an app (each test that boots one, each node). An SSLContext is
    safe to share between clients, threads and event loops."""
    return httpx.create_ssl_context(trust_env=False)
