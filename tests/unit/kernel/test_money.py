from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.kernel.money import Money, format_minor_units, from_gateway_amount, to_gateway_amount

pytestmark = pytest.mark.unit


@given(st.integers(min_value=0, max_value=10**12))
def test_gateway_amount_round_trip(cents):
    text = to_gateway_amount(cents)
    assert text.count(".") == 1 and len(text.split(".")[1]) == 2
    assert from_gateway_amount(text) == cents


@pytest.mark.parametrize("bad", ["1.5", "1.505", "-1.00", "1,00", "", "01.00", "1e2"])
def test_bad_gateway_amounts_rejected(bad):
    with pytest.raises(ValueError):
        from_gateway_amount(bad)


def test_money_refuses_floats_and_unknown_currencies():
    with pytest.raises(TypeError):
        Money(10.5, "USD")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Money(100, "XXX")
    assert str(Money(1050, "USD")) == "10.50 USD"
    assert format_minor_units(500, "JPY") == "500"


@pytest.mark.parametrize(
    ("text", "cents"), [("10.50", 1050), ("0", 0), ("1234567.89", 123456789), ("2.5", 250)]
)
def test_decimal_to_cents(text, cents):
    from decimal import Decimal

    from paycore.kernel.money import decimal_to_cents

    assert decimal_to_cents(Decimal(text)) == cents


@pytest.mark.parametrize("text", ["-1.00", "1.005", "NaN", "Infinity"])
def test_decimal_to_cents_refuses_bad_amounts(text):
    from decimal import Decimal

    from paycore.kernel.money import decimal_to_cents

    with pytest.raises(ValueError):
        decimal_to_cents(Decimal(text))
