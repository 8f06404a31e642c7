"""Which secrets sign an endpoint's deliveries: its own, and the one its last rotation replaced
while that one's grace lasts; an operator endpoint has none of its own (the operator's secret)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chunkd.ports.webhooks import Endpoint

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_replaced_secret_signs_until_its_grace_ends() -> None:
    until = T0 + timedelta(hours=24)
    endpoint = Endpoint("wh_1", "alice", "https://a.test/", "whsec_new", None, T0, None, None, None, "whsec_old", until)
    assert endpoint.signing_secrets(T0) == ["whsec_new", "whsec_old"]
    assert endpoint.signing_secrets(until) == ["whsec_new"]
    assert Endpoint("whop_1", None, "https://o.test/", None, None, T0, None, None).signing_secrets(T0) == []
