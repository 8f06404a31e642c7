"""Take-over of stale writers, shared by every append dialect: see ``chunkd.service.takeover``."""

from chunkd.service.takeover import InFlight, UploadInterrupted, Writer

__all__ = ["InFlight", "UploadInterrupted", "Writer"]
