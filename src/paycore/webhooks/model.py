"""Webhook rules, pure: event types, Standard Webhooks signatures, the retry schedule, the SSRF
address classification and how a receiver's answer is read. No I/O, no clock reads.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import urlsplit

# conventions.md: the public event names (a closed set; also the metric label values)
EVENT_TYPES: Final = frozenset(
    {
        "payment.succeeded",
        "payment.failed",
        "payment.captured",
        "payment.voided",
        "payment.refunded",
        "payment.unknown_resolved",
        "payment_method.created",
        "payment_method.verified",
        "payment_method.verification_failed",
        "payment_method.deactivated",
        "subscription.created",
        "subscription.renewed",
        "subscription.payment_failed",
        "subscription.past_due",
        "subscription.canceled",
        "dispute.created",
        "dispute.updated",
    }
)
ALL_EVENTS: Final = "*"
SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 32
MAX_URL_LENGTH: Final = 2048


def event_label(event_type: str) -> str:
    """The metric label of an event type (closed set)."""
    return event_type if event_type in EVENT_TYPES else "other"


def subscribed(event_type: str, enabled_events: Iterable[str]) -> bool:
    enabled = set(enabled_events)
    return ALL_EVENTS in enabled or event_type in enabled


def unknown_event_types(enabled_events: Iterable[str]) -> list[str]:
    return sorted(e for e in set(enabled_events) if e != ALL_EVENTS and e not in EVENT_TYPES)


# --- secrets and signatures (Standard Webhooks v1) ----------------------------------------------
def format_secret(raw: bytes) -> str:
    """`whsec_` + base64 of the key bytes."""
    if len(raw) < 24:
        raise ValueError("a webhook secret needs at least 24 random bytes")
    return SECRET_PREFIX + base64.b64encode(raw).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key: the base64-decoded part after `whsec_`."""
    body = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("malformed webhook secret") from exc
    if not key:
        raise ValueError("empty webhook secret")
    return key


def signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,…` entry per active secret, space-separated (current first, then the one being
    rotated out): a receiver accepts the message when any entry matches its secret."""
    if not keys:
        raise ValueError("no signing secret")
    return " ".join(signature(key, msg_id, timestamp, body) for key in keys)


def headers(
    keys: Sequence[bytes], msg_id: str, timestamp: int, body: bytes, request_id: str | None = None
) -> dict[str, str]:
    """The Standard Webhooks headers, plus `X-Request-ID` of the API request that caused the event
    (LOG-2; outside the signature, like every header but the three signed values)."""
    out = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(keys, msg_id, timestamp, body),
        "content-type": "application/json",
    }
    if request_id:
        out["x-request-id"] = request_id
    return out


# --- delivery outcomes and the retry schedule (RES-4) ---------------------------------------------
class Verdict(enum.Enum):
    DELIVERED = "delivered"  # 2xx
    GONE = "gone"  # 410: the receiver asks us to stop; the endpoint is disabled
    RETRY = "retry"  # anything else: 3xx (redirects are not followed), 4xx, 429, 5xx, timeouts, errors


def verdict(status: int | None) -> Verdict:
    if status is not None and 200 <= status < 300:
        return Verdict.DELIVERED
    if status == 410:
        return Verdict.GONE
    return Verdict.RETRY


def next_delay(
    attempts_made: int,
    schedule: Sequence[float],
    *,
    jitter: float = 0.1,
    rand: Callable[[], float],
    retry_after: float | None = None,
) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones, or None when the schedule
    is exhausted. Step `attempts_made - 1` of the schedule, ± `jitter`; a longer `Retry-After`
    from the receiver wins."""
    step = attempts_made - 1
    step = max(step, 0)
    if step >= len(schedule):
        return None
    base = schedule[step]
    delay = max(base + base * jitter * (2.0 * rand() - 1.0), 0.0)
    if retry_after is not None and retry_after > delay:
        delay = retry_after
    return delay


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as delay-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(int(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max((when - now).total_seconds(), 0.0)


# --- SSRF (conventions.md: never private, loopback or link-local targets) -------------------------
def forbidden_address(address: str) -> bool:
    """True for addresses a webhook may never reach: private, loopback, link-local, multicast,
    reserved, unspecified, shared (CGNAT) and their IPv4-mapped forms."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return forbidden_address(str(mapped))
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


class UrlProblem(ValueError):
    """Why an endpoint URL is refused (the message is shown to the merchant)."""

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


def check_url(url: str, *, allow_private: bool) -> str:
    """Validate an endpoint URL; returns its host. HTTPS only (plain HTTP only with the development
    setting), no credentials in the URL, and a literal IP must be public."""
    if len(url) > MAX_URL_LENGTH:
        raise UrlProblem(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlProblem(f"the URL is malformed ({exc})") from None
    if parts.scheme not in ("https", "http"):
        raise UrlProblem("the URL must start with https://")
    if parts.scheme == "http" and not allow_private:
        raise UrlProblem("the URL must use https://")
    if parts.username or parts.password:
        raise UrlProblem("the URL must not carry credentials")
    host = parts.hostname
    if not host:
        raise UrlProblem("the URL has no host")
    if port == 0:
        raise UrlProblem("the URL has an invalid port")
    if parts.fragment:
        raise UrlProblem("the URL must not have a fragment")
    if not allow_private:
        if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
            raise UrlProblem("the URL points at a private host", forbidden=True)
        if _is_ip(host) and forbidden_address(host):
            raise UrlProblem("the URL points at a private, loopback or link-local address", forbidden=True)
    return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True
