"""``UploadService``: the upload engine every frontend calls. Frontends translate requests into
these calls and the errors of ``chunkd.domain.errors`` back into their own dialect.

The use cases live in rooms of one concept each, composed here:

- ``service.core``          the ports, capabilities, owner-scoped loading, hash frontier, events
- ``service.queries``       lookups, listings, reading finished files
- ``service.lifecycle``     create, complete, rename, cancel, delete, expiry
- ``service.parts``         numbered parts and the whole-body PUT
- ``service.appends``       appended bytes (tus, chunk dialects) and a length declared later
- ``service.concatenation`` joining finished uploads (tus concatenation)
"""

from __future__ import annotations

from chunkd.service.appends import Appends
from chunkd.service.concatenation import Concatenation
from chunkd.service.config import EngineConfig
from chunkd.service.core import utcnow
from chunkd.service.parts import Parts
from chunkd.service.queries import Queries

__all__ = ["EngineConfig", "UploadService", "utcnow"]


class UploadService(Queries, Parts, Appends, Concatenation):
    """The whole engine: every use case over one set of ports."""
