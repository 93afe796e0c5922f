"""Wire encoding of the simulator's answers and the malformed bodies it can send."""

from __future__ import annotations

import pytest
from defusedxml import ElementTree as SafeET
from defusedxml import EntitiesForbidden

from paycore.epx_sim import wire
from paycore.epx_sim.browser_post import hosted_form, parse_form_page, redirect_location, redirect_page

pytestmark = pytest.mark.unit

FIELDS = [("AUTH_GUID", "09ABC"), ("AUTH_RESP", "00"), ("AUTH_RESP_TEXT", "A&B <ok>"), ("TRAN_NBR", "7")]


def test_formats_round_trip() -> None:
    for fmt in ("xml", "kv", "detail"):
        assert wire.decode_response(wire.encode(FIELDS, fmt))["AUTH_RESP_TEXT"] == "A&B <ok>"
    assert wire.encode_xml([("A", "1")]) == '<RESPONSE><FIELDS><FIELD KEY="A">1</FIELD></FIELDS></RESPONSE>'
    assert "<NTID>9</NTID>" in wire.encode_detail([("AUTH_TRAN_IDENT", "9")])


def test_parse_request_form_and_detail() -> None:
    assert wire.parse_request(b"A=1&B=&C=x%20y") == {"A": "1", "B": "", "C": "x y"}
    with pytest.raises(wire.WireError):
        wire.parse_request(b"<DETAIL><A>1</DETAIL>")
    with pytest.raises(wire.WireError):
        wire.parse_request(wire.BILLION_LAUGHS.replace("RESPONSE", "DETAIL").encode())


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        ("empty", lambda b: b == ""),
        ("no_auth_resp", lambda b: "AUTH_RESP=" not in b and "AUTH_GUID=" in b),
        ("approval_without_guid", lambda b: "AUTH_GUID" not in b and ">00<" in b),
        ("wrong_tran_nbr", lambda b: '"TRAN_NBR">8<' in b),
        ("truncated", lambda b: not b.endswith("</RESPONSE>")),
        ("invalid_xml", lambda b: b.startswith("<RESPONSE>")),
        ("oversized", lambda b: len(b) > 1000),
        ("html", lambda b: b.startswith("<!DOCTYPE html>")),
    ],
)
def test_bad_bodies(kind: str, check: object) -> None:
    body = wire.bad_body(kind, FIELDS, "xml", "7", 1000)
    assert callable(check) and check(body)


def test_amount_mismatch_and_billion_laughs() -> None:
    body = wire.bad_body("amount_mismatch", [("AUTH_RESP", "00"), ("AUTH_AMOUNT", "10.00")], "kv", "1", 0)
    assert "AUTH_AMOUNT=9.99" in body
    with pytest.raises(EntitiesForbidden):
        SafeET.fromstring(wire.bad_body("billion_laughs", FIELDS, "xml", "1", 0))


def test_browser_post_pages_parse_back() -> None:
    page = redirect_page("https://shop.example/cb?txn=1&m=2", [("AUTH_RESP", "00"), ("X", 'a"b')], repeat=2)
    action, method, fields, repeat = parse_form_page(page)
    assert action == "https://shop.example/cb?txn=1&m=2" and method == "post" and repeat == 2
    assert fields == [("AUTH_RESP", "00"), ("X", 'a"b')]
    assert redirect_location("https://s/cb?txn=1", [("A", "1")]) == "https://s/cb?txn=1&A=1"
    form = hosted_form("/browserpost/", [("TAC", "t")], "1.00", "SALE")
    assert parse_form_page(form)[2][0] == ("TAC", "t") and "ACCOUNT_NBR" in form


@pytest.mark.parametrize(
    "text",
    ["A=1&B=2", "A=&B", "A=x+y&B=%26%3D", "&&A=1&", "N%41ME=v%20w", "A=1&A=2", "E=%E2%82%AC", "k=a=b"],
)
def test_fast_form_parser_matches_parse_qsl(text: str) -> None:
    from urllib.parse import parse_qsl

    assert wire.parse_form(text.encode()) == dict(parse_qsl(text, keep_blank_values=True))
