"""The tus 1.0 resumable upload protocol, served over the upload engine (see ``router``)."""

from chunkd.frontends.tus.router import build_router

__all__ = ["build_router"]
