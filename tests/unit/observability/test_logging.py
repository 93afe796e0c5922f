"""LOG-1, LOG-3, LOG-4, SEC-1: JSON through a queue, ids on every line, masking, sampling."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import queue
import threading
import time
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from paycore.platform.context import request_id_var
from paycore.platform.observability import logging as plog
from paycore.platform.observability.logging import (
    REDACTED,
    AdaptiveSampler,
    configure_logging,
    flush_logs,
    mask_text,
    mask_value,
    masking_processor,
)

pytestmark = pytest.mark.unit

# real-looking data (sandbox test cards and made-up bank details)
PANS = [
    "4111111111111111",
    "5555 5555 5555 4444",
    "3782-822463-10005",
    "6011000990139424",
    "4000000000000002",
]
CVV = "737"
BRIC = "09LMQ8ZNQ1T3KCGDXK2"
AUTH_GUID = "0AGTUFG2LZJ2VCKJ6YX"
ACCOUNT = "000123456789"
ROUTING = "021000021"
API_KEY = "sk_live_4eC39HqLyjWDarjtT1zdp7dc"
MAC_SECRET = "2ifP9bBSu9TrjMt8EPh1rGfJiZsfCb8Y"
SECRETS = [
    *[p.replace(" ", "").replace("-", "") for p in PANS],
    BRIC,
    AUTH_GUID,
    ACCOUNT,
    ROUTING,
    API_KEY,
    MAC_SECRET,
]


def _sensitive_event() -> dict[str, Any]:
    return {
        "card_number": PANS[0],
        "CVV2": CVV,
        "cvv": CVV,
        "Exp_Date": "2912",
        "bric": BRIC,
        "auth_guid": AUTH_GUID,
        "orig_auth_guid": AUTH_GUID,
        "account_number": ACCOUNT,
        "routing_number": ROUTING,
        "mac_secret": MAC_SECRET,
        "webhook_secret": MAC_SECRET,
        "headers": {"Authorization": f"Bearer {API_KEY}", "X-Api-Key": API_KEY, "Accept": "application/json"},
        "form": [
            {"CARD_NBR": PANS[1], "ACCOUNT_NBR": ACCOUNT, "ROUTING_NBR": ROUTING, "TRAN_NBR": "1234567890"}
        ],
        "note": f"customer typed {PANS[2]} and {PANS[3]} in the description",
        "error": f"upstream said: card {PANS[4]} declined; key {API_KEY}",
    }


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret
    for pan in PANS:
        assert pan not in text, pan
    assert REDACTED in text


def test_sensitive_keys_are_masked_at_any_depth_case_insensitively() -> None:
    masked = mask_value(
        None, {"a": {"b": [{"Card_Number": "x", "ok": "y"}]}, "PassWord": "p", "tran_nbr": "12"}
    )
    assert masked == {
        "a": {"b": [{"Card_Number": REDACTED, "ok": "y"}]},
        "PassWord": REDACTED,
        "tran_nbr": "12",
    }


@pytest.mark.parametrize("pan", PANS)
def test_luhn_valid_card_numbers_in_text_are_masked(pan: str) -> None:
    assert mask_text(f"pan={pan};") == f"pan={REDACTED};"


@pytest.mark.parametrize(
    "text",
    [
        "tran_nbr 1234567890",  # 10 digits: too short to be a card
        "order 4111111111111112",  # 16 digits failing Luhn
        "2026-11-27T04:28:24.192986Z",
        "id 0192f3a4-5b6c-7d8e-9f00-112233445566",
    ],
)
def test_harmless_numbers_are_kept(text: str) -> None:
    assert mask_text(text) == text


def test_credentials_in_text_are_masked() -> None:
    assert mask_text(f"Authorization: Bearer {API_KEY}") == f"Authorization: Bearer {REDACTED}"
    assert mask_text("basic dXNlcjpwYXNzd29yZA==") == f"basic {REDACTED}"
    assert API_KEY not in mask_text(f"key={API_KEY}")


_keys = st.sampled_from(
    [*sorted(plog.SENSITIVE_KEYS), "Authorization", "X-API-KEY", "db_password", "Client_Secret"]
)
_plain_keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8).filter(
    lambda k: not plog.is_sensitive_key(k)
)
_plain_values = st.one_of(st.integers(-1000, 1000), st.booleans(), st.text(alphabet="abcxyz ", max_size=12))


@st.composite
def _nested_with_secret(draw: st.DrawFn) -> tuple[Any, str]:
    secret = draw(st.sampled_from([*SECRETS, CVV + "x9"]))
    as_key = draw(st.booleans())
    leaf: Any = {draw(_keys): secret} if as_key else f"text {draw(st.sampled_from(PANS))} text"
    marker = secret if as_key else None
    depth = draw(st.integers(0, 12))
    node: Any = leaf
    for _ in range(depth):
        siblings = draw(st.dictionaries(_plain_keys, _plain_values, max_size=3))
        node = {**siblings, draw(_plain_keys): node} if draw(st.booleans()) else [*siblings.values(), node]
    return node, marker or ""


@settings(max_examples=300, deadline=None)
@given(_nested_with_secret())
def test_masking_over_random_nested_structures(case: tuple[Any, str]) -> None:
    data, secret = case
    rendered = json.dumps(mask_value("payload", data))
    if secret:
        assert secret not in rendered
    for pan in PANS:
        assert pan not in rendered


def test_masking_processor_with_capture_logs() -> None:
    with capture_logs(processors=[masking_processor]) as logs:
        structlog.get_logger("payments").warning("gateway_request", **_sensitive_event())
    _assert_clean(json.dumps(logs))
    [entry] = logs
    assert entry["headers"]["Accept"] == "application/json" and entry["form"][0]["TRAN_NBR"] == "1234567890"


def test_no_sensitive_data_logged() -> None:
    """Real-looking card, bank, token and key data through the configured JSON pipeline (also an
    exception and a foreign library's record): none of it reaches the rendered stream."""
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer)
    try:
        log = structlog.get_logger("paycore.test")
        log.info("sale_requested", **_sensitive_event())
        log.debug("refund_requested", original_bric=BRIC, amount_cents=500, body={"AUTH_GUID": AUTH_GUID})
        log.warning("ach_debit", bank={"account_number": ACCOUNT, "routing_number": ROUTING}, last4="6789")
        try:
            raise RuntimeError(f"gateway echoed CARD_NBR={PANS[0]}&CVV2={CVV}")
        except RuntimeError:
            log.exception("gateway_failed")
        logging.getLogger("aiohttp.client").warning("request failed: Authorization: Bearer %s", API_KEY)
    finally:
        flush_logs()
    text = buffer.getvalue()
    _assert_clean(text)
    assert f"CVV2={CVV}" not in text or REDACTED in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [line["event"].split(":")[0] for line in lines] == [
        "sale_requested",
        "refund_requested",
        "ach_debit",
        "gateway_failed",
        "request failed",
    ]
    assert lines[2]["last4"] == "6789"


def test_request_id_on_every_line_of_a_request() -> None:
    buffer = io.StringIO()
    configure_logging("info", stream=buffer)
    token = request_id_var.set("test-123")
    try:
        structlog.get_logger("a").info("one")
        structlog.get_logger("b").warning("two")
    finally:
        request_id_var.reset(token)
        structlog.get_logger("c").info("after")
        flush_logs()
    first, second, after = (json.loads(line) for line in buffer.getvalue().splitlines())
    assert first["request_id"] == second["request_id"] == "test-123"
    assert "request_id" not in after


def test_full_queue_drops_info_but_never_warnings() -> None:
    q: queue.Queue[logging.LogRecord] = queue.Queue(maxsize=2)
    handler = plog._BoundedQueueHandler(q)
    before = plog.LOG_DROPPED.labels("info")._value.get()

    def record(level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord("t", level, __file__, 1, msg, None, None)

    handler.emit(record(logging.INFO, "a"))
    handler.emit(record(logging.INFO, "b"))
    handler.emit(record(logging.INFO, "dropped"))
    assert plog.LOG_DROPPED.labels("info")._value.get() == before + 1

    drained: list[str] = []

    def consumer() -> None:
        time.sleep(0.2)
        while len(drained) < 3:
            drained.append(q.get(timeout=2).getMessage())

    thread = threading.Thread(target=consumer)
    thread.start()
    started = time.monotonic()
    handler.emit(record(logging.WARNING, "kept"))  # waits for room instead of dropping
    waited = time.monotonic() - started
    thread.join(5)
    assert drained == ["a", "b", "kept"]
    assert waited >= 0.1


def test_sampler_keeps_about_the_target_per_second() -> None:
    now = [0.0]
    sampler = AdaptiveSampler(100, clock=lambda: now[0], rand=lambda: 0.5)
    kept = 0
    for _ in range(1000):
        try:
            sampler(None, "info", {"event": "x"})
            kept += 1
        except structlog.DropEvent:
            pass
    assert 50 <= kept <= 150
    errors = [sampler(None, "error", {"event": "e"}) for _ in range(500)]
    audits = [sampler(None, "info", {"event": "a", "audit": True}) for _ in range(500)]
    assert len(errors) == len(audits) == 500  # never sampled
    now[0] = 1.5  # a new second after an overloaded one: the keep-rate drops
    try:
        event = sampler(None, "info", {"event": "x"})
    except structlog.DropEvent:
        event = None
    assert sampler.rate == pytest.approx(0.9)
    if event is not None:
        assert event["sampled"] is True and event["sample_rate"] == 0.9


def test_sampler_recovers_when_traffic_falls() -> None:
    now = [0.0]
    sampler = AdaptiveSampler(100, clock=lambda: now[0])
    sampler.rate = 0.5
    for second in range(1, 10):
        now[0] = float(second)
        with contextlib.suppress(structlog.DropEvent):
            sampler(None, "info", {"event": "x"})  # 1 event per second: far under 80 % of the target
    assert sampler.rate == 1.0


def test_sampling_targets_by_environment() -> None:
    assert plog.sampling_target_for("production") == 100
    assert plog.sampling_target_for("staging") == 500
    assert plog.sampling_target_for("development") == 999_999


class _SlowStream(io.StringIO):
    """A stdout that blocks on every write (a full pipe, a slow log shipper)."""

    def write(self, text: str) -> int:
        time.sleep(0.2)
        return super().write(text)


def test_a_blocked_stdout_never_blocks_the_caller() -> None:
    stream = _SlowStream()
    configure_logging("info", stream=stream)
    try:
        log = structlog.get_logger("paycore.test")
        started = time.monotonic()
        for i in range(5):
            log.warning("event", n=i)
        caller_time = time.monotonic() - started
    finally:
        flush_logs()  # the listener thread finishes the writes (≥ 1 s in total)
    assert caller_time < 0.5  # the caller only rendered and enqueued
    assert [json.loads(line)["n"] for line in stream.getvalue().splitlines()] == [0, 1, 2, 3, 4]
