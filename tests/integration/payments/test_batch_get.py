"""API-8: `POST /v1/payments/batch-get` — many payments in one query, against the real database and
the simulator process. A foreign, unknown or non-payment id is `not_found`, like on a single GET."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from paycore.kernel.errors import PaycoreError
from paycore.payments import schemas
from paycore.platform.db.database import query_counter
from tests.integration.payments.test_payment_flows import create, decode, idem

pytestmark = pytest.mark.integration


async def counted(coro):
    counter = [0]
    token = query_counter.set(counter)
    try:
        result = await coro
    finally:
        query_counter.reset(token)
    return result, counter[0]


async def test_found_payments_equal_their_single_get_and_the_rest_is_not_found(
    container, principal, other_principal, token
):
    sale = decode(await create(container, principal, token, amount=1200))
    auth = decode(await create(container, principal, token, amount=5000, capture=False))
    auth_id = uuid.UUID(auth["id"])
    body = schemas.CapturePayment(amount=3000)
    capture = await container.payments.capture(
        principal, auth_id, body, idem(body, f"/v1/payments/{auth_id}/capture")
    )
    assert capture.status == 201
    unknown = uuid.uuid4()
    capture_id = uuid.UUID(decode(capture)["id"])  # a transaction of the group, not a payment
    ids = [uuid.UUID(sale["id"]), auth_id, unknown, capture_id, auth_id]

    result, queries = await counted(container.payments.batch_get(principal, ids))

    assert queries == 1
    assert set(result.found) == {sale["id"], auth["id"]}
    for pid, payment in result.found.items():
        single = await container.payments.get(principal, uuid.UUID(pid))
        assert msgspec.to_builtins(payment) == msgspec.to_builtins(single)
    assert result.found[auth["id"]].amount_captured == 3000
    assert result.not_found == [unknown, capture_id]  # in request order, each once
    # another merchant sees none of them
    theirs = await container.payments.batch_get(other_principal, ids)
    assert theirs.found == {} and theirs.not_found == [uuid.UUID(sale["id"]), auth_id, unknown, capture_id]


async def test_a_hundred_ids_take_one_query_and_a_hundred_and_one_are_refused(container, principal, token):
    made = [
        uuid.UUID(decode(await create(container, principal, token, amount=100 + i))["id"]) for i in range(3)
    ]
    ids = made + [uuid.uuid4() for _ in range(97)]
    result, queries = await counted(container.payments.batch_get(principal, ids))
    assert queries == 1 and len(result.found) == 3 and len(result.not_found) == 97
    with pytest.raises(PaycoreError) as info:
        await container.payments.batch_get(principal, [*ids, uuid.uuid4()])
    assert (info.value.code, info.value.status) == ("validation_failed", 422)
