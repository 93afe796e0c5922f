from __future__ import annotations

import pytest

from paycore.idempotency import model
from paycore.idempotency.model import StoredOutcome
from paycore.kernel.errors import PaycoreError

pytestmark = pytest.mark.unit


def test_fingerprint_ignores_key_order_but_not_values():
    a = model.fingerprint("POST", "/v1/payments", {"amount": 100, "currency": "USD"})
    b = model.fingerprint("POST", "/v1/payments", {"currency": "USD", "amount": 100})
    c = model.fingerprint("POST", "/v1/payments", {"currency": "USD", "amount": 101})
    d = model.fingerprint("POST", "/v1/payments/x/refunds", {"currency": "USD", "amount": 100})
    assert a == b and a != c and a != d


@pytest.mark.parametrize("key", ["", None])
def test_missing_key(key):
    with pytest.raises(PaycoreError) as info:
        model.validate_key(key, required=True)
    assert info.value.code == "idempotency_key_missing"
    assert model.validate_key(key, required=False) is None


@pytest.mark.parametrize("key", ["x" * 256, "has space", "tab\t", "ü"])
def test_invalid_key(key):
    with pytest.raises(PaycoreError) as info:
        model.validate_key(key, required=True)
    assert info.value.code == "idempotency_key_invalid"


def test_decide():
    req = model.request_for("k1", "POST", "/v1/payments", {"amount": 1})
    done = StoredOutcome("completed", req.fingerprint, 201, b"{}", None)
    assert model.decide(done, req) is done
    other = model.request_for("k1", "POST", "/v1/payments", {"amount": 2})
    with pytest.raises(PaycoreError) as info:
        model.decide(done, other)
    assert info.value.code == "idempotency_key_reused" and info.value.status == 422
    running = StoredOutcome("in_flight", req.fingerprint, None, None, None)
    with pytest.raises(PaycoreError) as info:
        model.decide(running, req)
    assert info.value.code == "idempotency_request_in_flight" and info.value.status == 409
