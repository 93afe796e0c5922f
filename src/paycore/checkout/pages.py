"""HTML of hosted checkout: the callback's error page and the development demo pages.

Templates live next to this module (`templates/*.html`, shipped as package data) and are filled with
`string.Template`; every value is HTML-escaped here, so templates never see raw input.
"""

from __future__ import annotations

from functools import cache
from html import escape
from importlib import resources
from string import Template
from typing import Final

from paycore.kernel.money import format_minor_units

SECURITY_HEADERS: Final = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}


@cache
def _template(name: str) -> Template:
    return Template((resources.files("paycore.checkout") / "templates" / name).read_text(encoding="utf-8"))


def page(title: str, body: str) -> str:
    """A whole page around `body` (already safe HTML)."""
    return _template("page.html").substitute(title=escape(title), body=body)


def callback_error(request_id: str | None) -> str:
    body = _template("callback_error.html").substitute(request_id=escape(request_id or "-"))
    return page("Payment not confirmed", body)


def hidden_inputs(fields: dict[str, str]) -> str:
    return "\n".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
    )


def demo_checkout(
    *,
    action: str,
    fields: dict[str, str],
    amount: int,
    currency: str,
    mode: str,
    merchant_name: str,
    hosted_entry: bool,
    session_id: str,
    payment_id: str,
    expires_at: str,
) -> str:
    money = f"${format_minor_units(amount, currency)}" if currency == "USD" else f"{amount} {currency}"
    if mode == "save":
        summary = f"Save a card with {escape(merchant_name)} (no charge)."
        button = "Save card"
    else:
        verb = "Authorize" if mode == "auth" else "Pay"
        summary = f"{verb} <strong>{escape(money)}</strong> to {escape(merchant_name)}."
        button = f"{verb} {money}"
    if hosted_entry:
        card_inputs = '<p class="note">You will enter your card on the gateway\'s secure page.</p>'
        button = "Continue to secure payment"
    else:
        card_inputs = _template("demo_card_inputs.html").template
    body = _template("demo_checkout.html").substitute(
        summary=summary,
        action=escape(action),
        hidden=hidden_inputs(fields),
        card_inputs=card_inputs,
        button=escape(button),
        session_id=escape(session_id),
        payment_id=escape(payment_id),
        expires_at=escape(expires_at),
    )
    return page("paycore demo checkout", body)


def demo_result(
    *,
    declined: bool,
    status: str,
    payment_id: str,
    amount: int | None,
    currency: str,
    card: str,
    again: str,
) -> str:
    if status == "approved":
        heading = "Payment approved"
    elif status in {"pending", "unknown"}:
        heading = "Payment being confirmed"
    else:
        heading = "Payment declined" if declined else "Payment not completed"
    body = _template("demo_result.html").substitute(
        heading=escape(heading),
        status=escape(status),
        payment_id=escape(payment_id),
        amount=escape(format_minor_units(amount, currency) + f" {currency}" if amount is not None else "-"),
        card=escape(card or "-"),
        again=escape(again),
    )
    return page(heading, body)
