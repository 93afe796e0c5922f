"""A `save` checkout stores the card through the saved-payment-methods service (real service,
PostgreSQL and the simulator)."""

from __future__ import annotations

import pytest

from paycore.payment_methods.service import ListQuery
from tests.integration.checkout.conftest import RETURN_URL, create, deliver, location_params, pay

pytestmark = pytest.mark.integration


async def test_save_mode_creates_a_payment_method(container, principal, browser, epx_sim):
    assert container.checkout.card_saver is container.payment_methods
    form = await create(container, principal, mode="save", amount=None, customer_id="cus_save")
    redirect = await pay(browser, epx_sim, form)
    url, params = location_params(await deliver(container, redirect))
    assert url == RETURN_URL and params["status"] == "approved"
    session = await container.checkout.get(principal, form.session_id)
    assert session.payment_method_id is not None and session.state == "completed"
    method = await container.payment_methods.get(principal, "cus_save", session.payment_method_id)
    assert method.card.last4 == "1111" and method.card.exp_month == 12 and method.card.exp_year == 2030
    await deliver(container, redirect)  # a replay saves nothing more
    listed = await container.payment_methods.list(principal, "cus_save", ListQuery(limit=10))
    assert [m.id for m in listed.data] == [method.id]
