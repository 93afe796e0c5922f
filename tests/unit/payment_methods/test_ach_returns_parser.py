"""The ACH returns report parser: returns and NOCs, what is dropped (BRIC, corrected data), errors."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest

from paycore.gateway.epx.ach_returns import AchReturn, ReturnsUnavailable, parse_returns

pytestmark = pytest.mark.unit


def body(returns, status="success") -> bytes:
    return msgspec.json.encode({"status": status, "data": {"returns": returns}})


def test_returns_and_nocs_are_parsed_keeping_only_what_matching_needs():
    parsed = parse_returns(
        body(
            [
                {"tranNbr": 1234567890, "authGuid": "09ABCDEFGHIJKLMNOPQR", "returnCode": "r03",
                 "returnDate": "2026-03-04", "amount": "0.00", "accountLast4": "0003", "secCode": "WEB",
                 "tranType": "CKC0"},
                {"tranNbr": "2234567890", "returnCode": None, "changeCode": "C01",
                 "correctedData": "123456789012", "returnDate": "2026-03-05", "amount": 12.5,
                 "tranType": "CKC2"},
            ]
        )
    )  # fmt: skip
    assert parsed == [
        AchReturn(tran_nbr=1234567890, return_code="R03", change_code=None, return_date=date(2026, 3, 4),
                  amount_cents=0, tran_type="CKC0"),
        AchReturn(tran_nbr=2234567890, return_code=None, change_code="C01", return_date=date(2026, 3, 5),
                  amount_cents=1250, tran_type="CKC2"),
    ]  # fmt: skip
    # the record cannot even hold the token or a NOC's corrected data (an account number)
    assert "09ABCDEFGHIJKLMNOPQR" not in repr(parsed) and "123456789012" not in repr(parsed)
    assert not hasattr(parsed[1], "corrected_data")


def test_incomplete_entries_are_skipped():
    parsed = parse_returns(
        body(
            [
                {"tranNbr": "abc", "returnCode": "R01", "returnDate": "2026-03-04"},
                {"tranNbr": 1, "returnDate": "2026-03-04"},
                {"tranNbr": 2, "returnCode": "R01", "returnDate": "not a date"},
                {"tranNbr": 3, "returnCode": "R01", "returnDate": "2026-03-04", "amount": "-1.00"},
            ]
        )
    )
    assert [(r.tran_nbr, r.amount_cents) for r in parsed] == [(3, None)]


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"status":"success","data":{"returns":[{"tranNbr":1}]}}', body([], status="error"),
     b'{"status":"success"}'],
)  # fmt: skip
def test_unusable_reports_raise(raw):
    with pytest.raises(ReturnsUnavailable):
        parse_returns(raw)
