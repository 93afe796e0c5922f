"""Money in integer minor units with an ISO 4217 currency. Never floats."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

import msgspec

# ISO 4217 minor-unit exponents for the currencies paycore knows. EPX itself is USD-only
# (epx-protocol.md §2.3): other currencies are refused at the payment boundary.
CURRENCY_EXPONENTS: Final[dict[str, int]] = {
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CAD": 2,
    "AUD": 2,
    "JPY": 0,
    "CHF": 2,
    "MXN": 2,
}
GATEWAY_CURRENCIES: Final[frozenset[str]] = frozenset({"USD"})

_GATEWAY_AMOUNT = re.compile(r"^(0|[1-9][0-9]{0,11})\.([0-9]{2})$")


class Money(msgspec.Struct, frozen=True, gc=False):
    """An amount in minor units (cents for USD) and its currency."""

    amount: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount, bool) or not isinstance(self.amount, int):
            raise TypeError("amount must be an integer number of minor units")
        if self.currency not in CURRENCY_EXPONENTS:
            raise ValueError(f"unknown currency {self.currency!r}")

    def __str__(self) -> str:
        return f"{format_minor_units(self.amount, self.currency)} {self.currency}"


def is_known_currency(code: str) -> bool:
    return code in CURRENCY_EXPONENTS


def format_minor_units(amount: int, currency: str = "USD") -> str:
    """Render minor units as a decimal string (no floats): 1050 USD -> '10.50'."""
    exponent = CURRENCY_EXPONENTS[currency]
    sign = "-" if amount < 0 else ""
    value = abs(amount)
    if exponent == 0:
        return f"{sign}{value}"
    unit = 10**exponent
    return f"{sign}{value // unit}.{value % unit:0{exponent}d}"


def to_gateway_amount(cents: int) -> str:
    """EPX AMOUNT: dollars, a dot and exactly two decimals, no sign (epx-protocol.md §2.3)."""
    if cents < 0:
        raise ValueError("gateway amounts are never negative")
    return f"{cents // 100}.{cents % 100:02d}"


def from_gateway_amount(text: str) -> int:
    """Parse an EPX AMOUNT string ('10.50') into cents without going through float."""
    match = _GATEWAY_AMOUNT.match(text.strip())
    if match is None:
        raise ValueError(f"invalid gateway amount {text!r}")
    return int(match.group(1)) * 100 + int(match.group(2))


def decimal_to_cents(amount: Decimal) -> int:
    """Decimal dollars (parsed from JSON text, never a float) → integer cents.

    Raises ValueError for a negative, non-finite or sub-cent amount."""
    try:
        cents = amount * 100
        if not amount.is_finite() or amount < 0 or cents != cents.to_integral_value():
            raise ValueError(f"invalid amount {amount}")
    except InvalidOperation as exc:
        raise ValueError(f"invalid amount {amount}") from exc
    return int(cents)
