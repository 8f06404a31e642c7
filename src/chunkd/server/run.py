"""Run chunkd under an ASGI server with the request limits of the settings.

**uvicorn** (the default) runs chunkd's own HTTP protocol (:mod:`chunkd.server.protocol`): head cap
(431), header timeout (408), quiet disconnects, informational responses; plus ``limit_concurrency``
and ``timeout_keep_alive``.

**granian** enforces what its options allow: the header timeout (``header_read_timeout``, whole
milliseconds, at most 60 s), the head size through hyper's read buffer (``max_buffer_size``, at
least 8 KiB: a head that does not fit in it is refused with 431), keep-alive on or off only (no idle
timeout), and ``backpressure`` (most requests in flight per worker) for ``limit_concurrency``.
It cannot send informational responses, and a client disconnect is reported its own way. The
minimum body rate and the idle body timeout are enforced by the body guard, under both servers.
"""

from __future__ import annotations

import copy
import logging.config
import os
import re
import socket
import sys
from collections.abc import Callable
from typing import Any

from chunkd.settings import Settings

__all__ = ["log_config", "run_granian", "run_uvicorn"]


# The last line of a failed start's traceback when chunkd refused to start for a reason it words for
# the operator: the database unreachable or full, its schema not this version's, the store another
# database's. Every StorageError subclass by its own name: a PostgreSQL down at start raises
# DatabaseUnavailable, which is what a node restarted during a database outage meets.
_REFUSAL = re.compile(
    r"^chunkd\.[\w.]+\.(?:StorageError|DatabaseUnavailable|StorageFull|ForeignStore|SchemaMismatch): (?P<why>.+)$"
)


class StartRefusals(logging.Filter):
    """uvicorn logs a failed start as the lifespan's whole traceback (some 150 lines through
    Starlette, SQLAlchemy and the driver); a refusal of chunkd's own is shown as its one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("Traceback") and (refused := _REFUSAL.match(message.rstrip().splitlines()[-1])):
            record.msg, record.args = "chunkd cannot start: %s", (refused["why"],)
        return True


class OneLineFaults(logging.Filter):
    """A dependency's warning about a service being down, said with its cause in one line. asyncpg
    warns "Failed to restore the pool connection floor; retrying" with the connection error's whole
    traceback at every retry while PostgreSQL is down; the cause is all an operator can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage()}: {type(exc).__name__}: {exc}", ()
            record.exc_info, record.exc_text = None, None
        return True


class OneLineWarnings(logging.Filter):
    """A Python warning routed through logging is ``file:line: Category: message`` and then the
    source line it points at, on a line of its own (and a trailing line break): kept to its
    first line, so it is one line of the log like any other."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = record.getMessage().strip().splitlines()[0], ()
        return True


def log_config(log_format: str = "text") -> dict[str, Any]:
    """uvicorn's logging set-up plus chunkd's server logger (disconnects, refused heads) and its
    start-up line (storage and store capabilities) at info level, while uvicorn's own stay at warning;
    a start chunkd refused is said in one line (``StartRefusals``). Every other logger (chunkd's
    readiness, storage, hooks, webhooks, reaper; a library's warnings) writes through the same
    handler, with its level: without a handler of their own they reached stderr through Python's
    last-resort handler, with no level, and their info lines ("webhook delivery resumed") not at all.
    Sets the ``chunkd`` logger's level to info here, not in the returned dict: a logger named there
    has its existing children reset by ``dictConfig``, and ``chunkd.access`` (made with the app,
    before uvicorn applies the dict) would lose its own handler.

    Python warnings go through logging too, one line each (``OneLineWarnings``): they wrote their
    own two lines to stderr, with no level. ``log_format="json"`` (``CHUNKD_LOG_FORMAT``) writes
    every line as one JSON object (:mod:`chunkd.observability.logformat`), uvicorn's and the
    libraries' lines included."""
    from uvicorn.config import LOGGING_CONFIG

    logging.getLogger("chunkd").setLevel(logging.INFO)
    config = copy.deepcopy(LOGGING_CONFIG)
    config["root"] = {"handlers": ["default"], "level": "WARNING"}
    config["loggers"]["chunkd.server"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config["loggers"]["chunkd.startup"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    config.setdefault("filters", {})["start_refusals"] = {"()": StartRefusals}
    config["loggers"]["uvicorn.error"] = {**config["loggers"].get("uvicorn.error", {}), "filters": ["start_refusals"]}
    config["filters"]["one_line_faults"] = {"()": OneLineFaults}
    config["loggers"]["asyncpg.pool"] = {
        "handlers": ["default"],
        "level": "WARNING",
        "propagate": False,
        "filters": ["one_line_faults"],
    }
    logging.captureWarnings(True)  # the "py.warnings" logger
    config["filters"]["one_line_warnings"] = {"()": OneLineWarnings}
    config["loggers"]["py.warnings"] = {
        "handlers": ["default"],
        "level": "WARNING",
        "propagate": False,
        "filters": ["one_line_warnings"],
    }
    if log_format == "json":
        json_lines = {"()": "chunkd.observability.logformat.JsonLines"}
        config["formatters"] = {"default": json_lines, "access": json_lines}
    return config


def _uvicorn_options(settings: Settings) -> dict[str, Any]:
    from chunkd.server.protocol import protocol_class

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": "warning",
        "log_config": log_config(settings.log_format),
        "loop": "uvloop",
        "http": protocol_class(
            max_header_bytes=settings.max_header_bytes,
            header_timeout=settings.header_timeout_seconds,
            informational=settings.informational_responses,
            send_timeout=settings.send_timeout_seconds,
            min_send_rate=settings.min_body_rate_bytes_per_second,
        ),
        # As given: int() made 0.5 s a 0 (keep-alive off) and 2.9 s 2 s (uvicorn takes a float).
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
        "timeout_graceful_shutdown": max(1, round(settings.shutdown_grace_seconds)),
        "limit_concurrency": settings.limit_concurrency,
        **_proxy_options(settings),
    }


def _proxy_options(settings: Settings) -> dict[str, Any]:
    """Whose ``X-Forwarded-For``/``-Proto`` uvicorn believes (the client address and the scheme
    of the URLs handed out): the proxies of ``CHUNKD_TRUSTED_PROXIES``, the list the rate limits
    believe, or uvicorn's own ``FORWARDED_ALLOW_IPS`` when set; none otherwise. uvicorn's default
    believed any loopback peer, so a local client could name itself any address."""
    trusted = os.environ.get("FORWARDED_ALLOW_IPS") or settings.trusted_proxies.strip()
    if not trusted:
        return {"proxy_headers": False}
    return {"proxy_headers": True, "forwarded_allow_ips": trusted}


def run_uvicorn(settings: Settings) -> None:
    if settings.workers > 1:
        run_uvicorn_workers(settings)
        return
    import uvicorn

    from chunkd.app import create_app

    uvicorn.run(create_app(settings), **_uvicorn_options(settings))


def run_uvicorn_workers(settings: Settings) -> None:
    """``settings.workers`` processes on one socket (:mod:`chunkd.server.workers`). The app is
    made once, here, before the fork: the workers share its pages until they write them."""
    from chunkd.server.workers import Supervisor, shared_metrics

    with shared_metrics():
        import uvicorn

        from chunkd.app import create_app
        from chunkd.memory import tune_collector

        config = uvicorn.Config(create_app(settings), **_uvicorn_options(settings))
        sock = config.bind_socket()

        class Announcing(uvicorn.Server):
            def __init__(self, ready: Callable[[], None]) -> None:
                super().__init__(config)
                self.ready = ready

            async def startup(self, sockets: list[socket.socket] | None = None) -> None:
                await super().startup(sockets=sockets)
                if self.started:
                    self.ready()

        def serve(ready: Callable[[], None]) -> int:
            server = Announcing(ready)
            server.run(sockets=[sock])
            return 0 if server.started else 3  # uvicorn's own status for a failed start

        tune_collector()  # the collector then leaves the pages the workers share alone
        status = Supervisor(settings.workers, sock, serve).run()
    sys.exit(status)


def run_granian(settings: Settings) -> None:
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.server import Server

    config = log_config(settings.log_format)
    logging.config.dictConfig(config)
    # The factory is imported and called by each granian worker (reading CHUNKD_* from the
    # environment): no app is built in this process.
    Server(
        target="chunkd.app:create_app",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        # HTTP/1 only: hyper's HTTP/2 head limit (max_headers_size) is 16 MiB by default and
        # chunkd's clients speak HTTP/1.1 (a TLS proxy in front may still speak HTTP/2 to clients).
        http=HTTPModes.http1,
        http1_settings=HTTP1Settings(
            header_read_timeout=max(1, min(60_000, int(settings.header_timeout_seconds * 1000))),
            keep_alive=settings.keep_alive_timeout_seconds > 0,
            max_buffer_size=max(8192, settings.max_header_bytes),
        ),
        backpressure=settings.limit_concurrency,
        log_dictconfig=config,  # granian's own lines ("_granian") through the same handler and format
    ).serve()
