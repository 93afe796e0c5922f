"""EPX wire formats: parse Server Post requests, build responses as plain strings.

Responses are built with joins (no XML library) to keep the per-request CPU low. Requests in XML
(`<DETAIL>`) are rare and parsed with defusedxml (no entity expansion).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final, Literal
from urllib.parse import parse_qsl, unquote_plus, urlencode

from defusedxml import ElementTree as SafeET

Fields = list[tuple[str, str]]
ResponseFormat = Literal["xml", "kv", "detail"]
RESPONSE_FORMATS: Final = ("xml", "kv", "detail")

_DETAIL_ATTRS: Final = {
    "cust_nbr": "CUST_NBR",
    "merch_nbr": "MERCH_NBR",
    "dba_nbr": "DBA_NBR",
    "terminal_nbr": "TERMINAL_NBR",
}
_XML_ESCAPES: Final = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})
_NEEDS_ESCAPE: Final = frozenset('&<>"')


class WireError(ValueError):
    """The request body cannot be decoded at all (answered with HTTP 400)."""


def xml_escape(value: str) -> str:
    if _NEEDS_ESCAPE.isdisjoint(value):
        return value
    return value.translate(_XML_ESCAPES)


def parse_request(body: bytes) -> dict[str, str]:
    """Decode a Server Post body: XML `<DETAIL>` if it starts with '<', else form encoding."""
    text = body.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("<"):
        return parse_detail_xml(stripped)
    return _parse_form_text(text)


def parse_form(body: bytes) -> dict[str, str]:
    return _parse_form_text(body.decode("utf-8", errors="replace"))


def _parse_form_text(text: str) -> dict[str, str]:
    """`application/x-www-form-urlencoded` like `parse_qsl(keep_blank_values=True)`, but it only
    unquotes the pairs that need it (most EPX fields are plain alphanumerics). Last key wins."""
    out: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            key = unquote_plus(key)
            value = unquote_plus(value)
        out[key] = value
    return out


def parse_detail_xml(text: str) -> dict[str, str]:
    """`<DETAIL cust_nbr=.. merch_nbr=.. dba_nbr=.. terminal_nbr=..><TRAN_TYPE>..</TRAN_TYPE>…</DETAIL>`."""
    try:
        root = SafeET.fromstring(text)
    except Exception as exc:  # defusedxml raises several types (ParseError, EntitiesForbidden, ...)
        raise WireError(f"invalid XML request: {type(exc).__name__}") from None
    if root.tag.upper() != "DETAIL":
        raise WireError("XML request root must be DETAIL")
    fields: dict[str, str] = {}
    for attr, value in root.attrib.items():
        name = _DETAIL_ATTRS.get(attr.lower())
        if name is not None:
            fields[name] = value.strip()
    for child in root:
        fields[child.tag.upper()] = (child.text or "").strip()
    return fields


def encode_xml(fields: Iterable[tuple[str, str]]) -> str:
    inner = "".join(f'<FIELD KEY="{k}">{xml_escape(v)}</FIELD>' for k, v in fields)
    return f"<RESPONSE><FIELDS>{inner}</FIELDS></RESPONSE>"


def encode_detail(fields: Iterable[tuple[str, str]]) -> str:
    parts: list[str] = []
    for k, v in fields:
        parts.append(f"<{k}>{xml_escape(v)}</{k}>")
        if k == "AUTH_TRAN_IDENT":
            parts.append(f"<NTID>{xml_escape(v)}</NTID>")
    return f"<DETAIL>{''.join(parts)}</DETAIL>"


def encode_kv(fields: Sequence[tuple[str, str]]) -> str:
    return urlencode(fields)


def encode(fields: Fields, fmt: str) -> str:
    if fmt == "kv":
        return encode_kv(fields)
    if fmt == "detail":
        return encode_detail(fields)
    return encode_xml(fields)


def decode_response(body: str) -> dict[str, str]:
    """Parse a simulator response (used by tests and the load script): XML or key/value."""
    text = body.strip()
    if not text.startswith("<"):
        return dict(parse_qsl(text, keep_blank_values=True))
    root = SafeET.fromstring(text)
    out: dict[str, str] = {}
    if root.tag == "RESPONSE":
        for node in root.iter("FIELD"):
            out[node.attrib.get("KEY", "")] = node.text or ""
    else:
        for child in root:
            out[child.tag] = child.text or ""
    return out


# --- malformed bodies for fault injection -------------------------------------------------------

BILLION_LAUGHS: Final = (
    '<?xml version="1.0"?>\n'
    '<!DOCTYPE RESPONSE [\n <!ENTITY lol "lol">\n'
    ' <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">\n'
    ' <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">\n'
    ' <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">\n'
    ' <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">\n'
    ' <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">\n'
    ' <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">\n'
    ' <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">\n'
    ' <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">\n'
    ' <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">\n'
    "]>\n"
    '<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP">00</FIELD>'
    '<FIELD KEY="AUTH_RESP_TEXT">&lol9;</FIELD></FIELDS></RESPONSE>'
)


def html_error_page(status: int = 502) -> str:
    return (
        "<!DOCTYPE html><html><head><title>Service Unavailable</title></head><body>"
        f"<h1>{status} Bad Gateway</h1><p>The server encountered a temporary error and could not "
        "complete your request. Please try again later.</p></body></html>"
    )


def bad_body(kind: str, fields: Fields, fmt: str, tran_nbr: str, oversize_bytes: int) -> str:
    """Build one of the malformed answers of epx-protocol.md §10.3 from the genuine fields."""
    if kind == "empty":
        return ""
    if kind == "billion_laughs":
        return BILLION_LAUGHS
    if kind == "html":
        return html_error_page()
    if kind == "invalid_xml":
        return '<RESPONSE><FIELDS><FIELD KEY="AUTH_RESP">00</FIELD><FIELDS></RESPONSE'
    if kind == "truncated":
        full = encode(fields, fmt)
        return full[: max(1, len(full) // 2)]
    if kind == "no_auth_resp":
        return encode_kv([(k, v) for k, v in fields if k != "AUTH_RESP"])
    if kind == "approval_without_guid":
        kept = [(k, v) for k, v in fields if k not in {"AUTH_GUID", "AUTH_RESP"}]
        return encode([("AUTH_RESP", "00"), *kept], fmt)
    if kind == "wrong_tran_nbr":
        wrong = str((int(tran_nbr) + 1) % 10_000_000_000) if tran_nbr.isdigit() else "1"
        return encode([(k, wrong if k == "TRAN_NBR" else v) for k, v in fields], fmt)
    if kind == "amount_mismatch":
        out: Fields = [(k, _shave_cent(v) if k == "AUTH_AMOUNT" else v) for k, v in fields]
        if not any(k == "AUTH_AMOUNT" for k, _ in out):
            out.append(("AUTH_AMOUNT", "0.01"))
        return encode(out, fmt)
    if kind == "oversized":
        return encode([*fields, ("PADDING", "X" * oversize_bytes)], fmt)
    raise ValueError(f"unknown bad_body kind {kind!r}")


def _shave_cent(amount: str) -> str:
    whole, _, frac = amount.partition(".")
    if not (whole.isdigit() and frac.isdigit()):
        return "0.01"
    cents = int(whole) * 100 + int(frac)
    cents = cents - 1 if cents > 1 else cents + 1
    return f"{cents // 100}.{cents % 100:02d}"


BAD_BODY_KINDS: Final = frozenset(
    {
        "empty",
        "billion_laughs",
        "html",
        "invalid_xml",
        "truncated",
        "truncated_transfer",
        "no_auth_resp",
        "approval_without_guid",
        "wrong_tran_nbr",
        "amount_mismatch",
        "oversized",
        # key exchange
        "empty_tac",
        "bare_tac",
        "kv_tac",
        # north
        "malformed_json",
    }
)
