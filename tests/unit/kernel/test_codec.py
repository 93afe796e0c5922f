"""The service's JSON codec (MEM-9): msgspec, UUIDs and datetimes native, CLI output forms."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import msgspec
import pytest

from paycore.kernel import codec

pytestmark = pytest.mark.unit


def test_round_trip_with_uuids_and_datetimes() -> None:
    ident = uuid.UUID("01a21bc4-24be-73d8-b798-fe534073e6d5")
    at = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
    raw = codec.encode({"id": ident, "at": at, "amount": 1050})
    assert raw == b'{"id":"01a21bc4-24be-73d8-b798-fe534073e6d5","at":"2026-11-27T10:00:00Z","amount":1050}'
    assert codec.decode(raw) == {"id": str(ident), "at": "2026-11-27T10:00:00Z", "amount": 1050}


def test_unknown_types_are_written_as_text() -> None:
    assert (
        codec.line({"value": Decimal("10.50"), "path": object.__name__})
        == '{"value":"10.50","path":"object"}'
    )


def test_cli_forms() -> None:
    assert codec.line({"revoked": True}) == '{"revoked":true}'
    assert codec.pretty([{"a": 1}]) == '[\n  {\n    "a": 1\n  }\n]'


def test_malformed_input_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        codec.decode(b"{not json")
    assert issubclass(msgspec.DecodeError, ValueError)
