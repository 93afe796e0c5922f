"""Hosted checkout end to end at the service level: session → Key Exchange → Browser Post in the
simulator (the test acts as the shopper's browser) → callback → redirect."""

from __future__ import annotations

import pytest

from tests.integration.checkout.conftest import (
    DECLINE_CARD,
    DECLINE_URL,
    RETURN_URL,
    create,
    deliver,
    location_params,
    pay,
)

pytestmark = pytest.mark.integration


async def test_sale_approved_through_browser_post(container, principal, browser, epx_sim):
    form = await create(container, principal)
    redirect = await pay(browser, epx_sim, form)
    answer = await deliver(container, redirect)
    url, params = location_params(answer)
    assert url == RETURN_URL
    assert params == {"payment_id": str(form.payment_id), "status": "approved"}
    payment = await container.payments.get(principal, form.payment_id)
    assert payment.status == "approved" and payment.amount == 1050


async def test_declined_card_goes_to_the_decline_url(container, principal, browser, epx_sim):
    form = await create(container, principal)
    redirect = await pay(browser, epx_sim, form, card=DECLINE_CARD)
    url, params = location_params(await deliver(container, redirect))
    assert url == DECLINE_URL and params["status"] == "declined"
