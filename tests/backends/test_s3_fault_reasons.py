"""What a client is told of an object store fault: its kind, never the endpoint, bucket, prefix or
key that botocore's own messages name (an upload link's partner saw the store's address and key
layout in a 503)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from chunkd.backends.blobs.s3_client import store_fault
from chunkd.domain.errors import StorageError

URL = "http://10.0.0.5:9000/uploads/chunkd/staging/ul_GI-r6iYK5xQ3NdqEWpQ/1.Dsnso4Z14H-ESgGP"


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        (ReadTimeoutError(endpoint_url=URL), "the object store failed: it did not answer in time"),
        (EndpointConnectionError(endpoint_url=URL), "the object store failed: it could not be reached"),
        (
            ClientError(
                {
                    "Error": {"Code": "SlowDown", "Message": f"slow down {URL}"},
                    "ResponseMetadata": {"HTTPStatusCode": 503},
                },
                "PutObject",
            ),
            "the object store failed: it answered SlowDown (HTTP 503)",
        ),
    ],
)
def test_a_store_fault_is_said_without_the_stores_addresses(
    fault: Exception, said: str, caplog: pytest.LogCaptureFixture
) -> None:
    error = store_fault(fault)
    assert isinstance(error, StorageError) and error.message == said
    assert "10.0.0.5" not in error.message and "staging" not in error.message
    assert URL in caplog.text  # the detail is the operator's, in the log


def test_a_fault_worded_once_keeps_its_reason_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A part's or a copy's fault comes from ``call``, already the engine's error: worded again, it
    was "StorageError (details in the server log)" for the client, and a second line in the log."""
    from chunkd.backends.blobs.s3_client import fault_reason

    fault = EndpointConnectionError(endpoint_url=URL)
    error = store_fault(fault)
    error.__cause__ = fault  # as ``call`` raises it
    assert fault_reason(error) == "it could not be reached"
    assert len([r for r in caplog.records if "object store fault" in r.getMessage()]) == 1
