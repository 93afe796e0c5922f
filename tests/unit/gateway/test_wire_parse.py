"""ARCH-5.1, P3-2: golden tests of the response parser; malformed input raises a typed error."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from paycore.gateway.epx import wire
from paycore.gateway.port import Category, GatewayResponse

pytestmark = pytest.mark.unit

APPROVED_XML = b"""<RESPONSE><FIELDS>
<FIELD KEY="AUTH_GUID">09LMNOPQRSTUVWXYZ012</FIELD>
<FIELD KEY="AUTH_RESP">00</FIELD>
<FIELD KEY="AUTH_CODE">052585</FIELD>
<FIELD KEY="AUTH_RESP_TEXT">EXACT MATCH</FIELD>
<FIELD KEY="AUTH_AMOUNT">10.50</FIELD>
<FIELD KEY="AMOUNT">10.50</FIELD>
<FIELD KEY="AUTH_CARD_TYPE">V</FIELD>
<FIELD KEY="AUTH_AVS">Y</FIELD>
<FIELD KEY="AUTH_CVV2">M</FIELD>
<FIELD KEY="AUTH_TRAN_IDENT">583175228396715</FIELD>
<FIELD KEY="AUTH_MASKED_ACCOUNT_NBR">************1111</FIELD>
<FIELD KEY="TRAN_NBR">1987654321</FIELD>
<FIELD KEY="BATCH_ID">20250304</FIELD>
<FIELD KEY="PROC_CODE">000000</FIELD>
<FIELD KEY="USER_DATA_1">txn-1</FIELD>
<FIELD KEY="SOMETHING_NEW">secret-ish value</FIELD>
</FIELDS></RESPONSE>"""

DECLINED_XML = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP">51</FIELD><FIELD KEY="AUTH_RESP_TEXT">INSUFF FUNDS</FIELD>'
    b'<FIELD KEY="AUTH_GUID">09DECLINEDGUID000001</FIELD><FIELD KEY="AUTH_CODE"></FIELD>'
    b'<FIELD KEY="TRAN_NBR">1987654321</FIELD><FIELD KEY="AUTH_CARD_TYPE">VISA</FIELD></FIELDS></RESPONSE>'
)

DETAIL_XML = b"""<?xml version="1.0"?>
<DETAIL>
  <AUTH_GUID>09STORAGEBRIC0000001</AUTH_GUID>
  <AUTH_RESP>85</AUTH_RESP>
  <AUTH_RESP_TEXT>NO REASON TO DECLINE</AUTH_RESP_TEXT>
  <AUTH_CODE>123456</AUTH_CODE>
  <AUTH_AVS>Z</AUTH_AVS>
  <AUTH_CVV2>M</AUTH_CVV2>
  <AUTH_CARD_TYPE>M</AUTH_CARD_TYPE>
  <NTID>NTID0000000001</NTID>
  <TRAN_NBR>1987654321</TRAN_NBR>
  <BATCH_ID>20250304</BATCH_ID>
</DETAIL>"""

KV_APPROVED = (
    b"AUTH_GUID=09ACHGUID00000000001&AUTH_RESP=00&AUTH_CODE=ACH001084&AUTH_RESP_TEXT=ACH+ACCEPTED"
    b"&AUTH_AMOUNT=25.00&TRAN_NBR=1987654321&AUTH_CARD_TYPE=&AUTH_AVS=&AUTH_CVV2="
)
KV_VALIDATION = b"AUTH_RESP=12&AUTH_RESP_TEXT=Invalid+TRAN_NBR%5BLEN%5D"

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP">00</FIELD>
<FIELD KEY="AUTH_RESP_TEXT">&lol3;</FIELD></FIELDS></RESPONSE>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP">00</FIELD>
<FIELD KEY="AUTH_RESP_TEXT">&xxe;</FIELD></FIELDS></RESPONSE>"""


def test_approved_xml_field_form() -> None:
    r = wire.parse_response(APPROVED_XML, zero_dollar=False)
    assert r.auth_resp == "00" and r.category is Category.APPROVED
    assert r.auth_guid == "09LMNOPQRSTUVWXYZ012" and r.auth_code == "052585"
    assert r.auth_resp_text == "EXACT MATCH"
    assert r.auth_amount_cents == 1050 and r.amount_cents == 1050
    assert (r.card_brand, r.card_last4, r.avs_result, r.cvv_result) == ("visa", "1111", "Y", "M")
    assert r.ntid == "583175228396715" and r.tran_nbr == 1_987_654_321 and r.batch_id == "20250304"
    assert r.extras == (("PROC_CODE", "000000"),)
    assert r.unknown_keys == ("SOMETHING_NEW",)  # kept by name only: the value is dropped
    assert "secret-ish" not in repr(msgspec.structs.asdict(r))


def test_declined_xml_with_declaration() -> None:
    r = wire.parse_response(DECLINED_XML, zero_dollar=False)
    assert r.auth_resp == "51" and r.category is Category.SOFT_DECLINE
    assert r.auth_code is None and r.auth_resp_text == "INSUFF FUNDS" and r.card_brand == "visa"


def test_detail_form_85_on_zero_dollar() -> None:
    storage = wire.parse_response(DETAIL_XML, zero_dollar=True)
    assert storage.auth_resp == "85" and storage.category is Category.APPROVED
    assert storage.auth_guid == "09STORAGEBRIC0000001" and storage.ntid == "NTID0000000001"
    assert storage.card_brand == "mastercard" and storage.tran_nbr == 1_987_654_321
    assert wire.parse_response(DETAIL_XML, zero_dollar=False).category is Category.ERROR


def test_detail_nested_in_a_wrapper() -> None:
    body = b"<RESPONSE><DETAIL><AUTH_RESP>05</AUTH_RESP><TRAN_NBR>1987654321</TRAN_NBR></DETAIL></RESPONSE>"
    r = wire.parse_response(body, zero_dollar=False)
    assert r.auth_resp == "05" and r.category is Category.SOFT_DECLINE


def test_key_value_forms() -> None:
    r = wire.parse_response(KV_APPROVED, zero_dollar=False)
    assert r.category is Category.APPROVED and r.auth_code == "ACH001084" and r.auth_amount_cents == 2500
    assert r.card_brand is None and r.avs_result is None and r.auth_resp_text == "ACH ACCEPTED"
    v = wire.parse_response(KV_VALIDATION, zero_dollar=False)
    assert (
        v.auth_resp == "12" and v.auth_resp_text == "Invalid TRAN_NBR[LEN]" and v.category is Category.ERROR
    )


def test_leading_whitespace_and_bom_choose_by_first_non_blank_byte() -> None:
    assert wire.parse_response(b"\r\n  \t" + APPROVED_XML, zero_dollar=False).auth_resp == "00"
    assert wire.parse_response(b"\xef\xbb\xbf" + DECLINED_XML, zero_dollar=False).auth_resp == "51"
    assert wire.parse_response(b"\n" + KV_APPROVED + b"\n", zero_dollar=False).auth_resp == "00"


def test_result_is_frozen() -> None:
    r = wire.parse_response(APPROVED_XML, zero_dollar=False)
    assert isinstance(r, GatewayResponse)
    with pytest.raises(AttributeError):
        r.auth_resp = "05"  # type: ignore[misc]
    assert "09LMNOPQRSTUVWXYZ012" not in repr(r)


def test_amount_formats() -> None:
    for text, cents in (("10", 1000), ("10.5", 1050), ("0.00", 0), ("1234.56", 123456)):
        body = f"AUTH_RESP=00&AUTH_GUID=G1&AUTH_AMOUNT={text}".encode()
        assert wire.parse_response(body, zero_dollar=False).auth_amount_cents == cents


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "empty_body"),
        (b"   \r\n\t ", "empty_body"),
        (b'<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP">00</FIELD>', "malformed_xml"),
        (b'<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP">0', "malformed_xml"),
        (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "missing_auth_resp"),
        (b"<html><body><p>unclosed</body></html>", "malformed_xml"),
        (b'<RESPONSE><FIELDS><FIELD KEY="AUTH_GUID">x</FIELD></FIELDS></RESPONSE>', "missing_auth_resp"),
        (b'<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP"></FIELD></FIELDS></RESPONSE>', "missing_auth_resp"),
        (b"AUTH_GUID=abc&AUTH_CODE=123", "missing_auth_resp"),
        (b"Internal Server Error", "missing_auth_resp"),
        (b"AUTH_RESP=", "missing_auth_resp"),
        (b"AUTH_RESP=000", "bad_auth_resp"),
        (b"AUTH_RESP=0", "bad_auth_resp"),
        (b"AUTH_RESP=00&TRAN_NBR=12ab", "bad_tran_nbr"),
        (b"AUTH_RESP=00&TRAN_NBR=12345678901", "bad_tran_nbr"),
        (b"AUTH_RESP=00&AUTH_AMOUNT=1.234", "bad_amount"),
        (b"AUTH_RESP=00&AUTH_AMOUNT=-1.00", "bad_amount"),
        (b"AUTH_RESP=00&AMOUNT=1e3", "bad_amount"),
        (BILLION_LAUGHS, "forbidden_xml"),
        (XXE, "forbidden_xml"),
    ],
)
def test_malformed_input_raises_typed_error(body: bytes, reason: str) -> None:
    with pytest.raises(wire.ProtocolError) as info:
        wire.parse_response(body, zero_dollar=False)
    assert info.value.reason == reason


def test_billion_laughs_rejected() -> None:
    with pytest.raises(wire.ProtocolError) as info:
        wire.parse_response(BILLION_LAUGHS, zero_dollar=False)
    assert info.value.reason == "forbidden_xml"
    assert "lol" not in str(info.value)  # the message never echoes the body


def test_truncated_bodies_never_crash() -> None:
    for cut in range(len(APPROVED_XML)):
        with contextlib.suppress(wire.ProtocolError):
            wire.parse_response(APPROVED_XML[:cut], zero_dollar=False)


@given(st.binary(max_size=512))
def test_arbitrary_bytes_parse_or_raise_protocol_error(body: bytes) -> None:
    try:
        result = wire.parse_response(body, zero_dollar=False)
    except wire.ProtocolError:
        return
    assert len(result.auth_resp) == 2
