"""What an operator needs to run chunkd: the access log and HTTP metrics (``access``), the
readiness probe (``readiness``), the ``/metrics``, ``/readyz`` and offline ``/docs`` routes
(``routes``, ``docs``). Metrics themselves live in ``chunkd.metrics``."""
