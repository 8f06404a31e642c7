"""Take-over of stale writers, shared by every append dialect: see ``chunkd.frontends.takeover``."""

from chunkd.frontends.takeover import InFlight, UploadInterrupted, Writer

__all__ = ["InFlight", "UploadInterrupted", "Writer"]
