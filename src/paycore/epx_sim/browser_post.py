"""HTML of Browser Post: the hosted card form, the auto-submitting redirect, the error page.

Also a tiny parser of the redirect page, so tests (and `paycore up` demos) can act as the browser.
"""

from __future__ import annotations

from html import escape
from html.parser import HTMLParser
from typing import Final
from urllib.parse import urlencode

from paycore.epx_sim.wire import Fields

UNRECOVERABLE_TEXT: Final = (
    "We're sorry, but due to an unrecoverable error, your transaction was not able to be processed. "
    "Please contact the merchant."
)


def _hidden(fields: Fields) -> str:
    return "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields)


def redirect_page(target: str, fields: Fields, *, repeat: int = 1) -> str:
    """An auto-submitting POST form carrying the result to REDIRECT_URL (query string kept)."""
    return (
        "<!DOCTYPE html><html><head><title>Processing…</title></head>"
        f'<body onload="document.forms[0].submit()" data-repeat="{repeat}">'
        f'<form id="epx-redirect" method="post" action="{escape(target)}">{_hidden(fields)}'
        '<noscript><button type="submit">Continue</button></noscript></form>'
        "<script>document.forms[0].submit();</script></body></html>"
    )


def redirect_location(target: str, fields: Fields) -> str:
    """The 303 mode: the result as query parameters appended to REDIRECT_URL."""
    sep = "&" if "?" in target else "?"
    return f"{target}{sep}{urlencode(fields)}"


def hosted_form(action: str, hidden: Fields, amount: str, tran_group: str) -> str:
    """EPX's own card-entry page, shown when the form arrives without card fields."""
    label = "Save card" if tran_group == "STORAGE" else f"Pay ${escape(amount)}"
    return (
        "<!DOCTYPE html><html><head><title>Secure payment</title></head><body>"
        "<h1>Secure payment</h1>"
        f'<form id="epx-card-form" method="post" action="{escape(action)}">{_hidden(hidden)}'
        '<label>Card number <input name="ACCOUNT_NBR" autocomplete="cc-number" inputmode="numeric"></label>'
        '<label>Expiry (YYMM) <input name="EXP_DATE" autocomplete="cc-exp" maxlength="4"></label>'
        '<label>CVV <input name="CVV" autocomplete="cc-csc" maxlength="4"></label>'
        f'<button type="submit" id="epx-submit">{label}</button></form></body></html>'
    )


def error_page() -> str:
    return (
        "<!DOCTYPE html><html><head><title>Transaction error</title></head><body>"
        f"<h1>Transaction error</h1><p>{UNRECOVERABLE_TEXT}</p></body></html>"
    )


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.method = "get"
        self.fields: list[tuple[str, str]] = []
        self._in_form = False
        self.repeat = 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body" and a.get("data-repeat", "").isdigit():
            self.repeat = int(a["data-repeat"])
        if tag == "form" and not self._in_form and not self.action:
            self._in_form = True
            self.action = a.get("action", "")
            self.method = a.get("method", "get").lower()
        elif tag == "input" and self._in_form and a.get("name"):
            self.fields.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False


def parse_form_page(html: str) -> tuple[str, str, list[tuple[str, str]], int]:
    """(action, method, fields, repeat) of the first form of a page (the redirect or the card form)."""
    parser = _FormParser()
    parser.feed(html)
    return parser.action, parser.method, parser.fields, parser.repeat
