"""What an operator needs to run chunkd: the access log and HTTP metrics (``access``), the
``/metrics``, ``/readyz`` and offline ``/docs`` routes (``routes``, ``docs``). Metrics themselves
live in ``chunkd.metrics`` and the readiness checks in ``chunkd.readiness``: the runtime builds
both, below the frontends."""
