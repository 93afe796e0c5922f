"""Conditional GETs (API-9): a strong `ETag` over the exact response body, `Cache-Control`, and
`If-None-Match` → 304 with no body.

Raw ASGI, applied once for every route: it sits directly inside the compression middleware (see
`api_support.switchable_compression`), so it hashes the uncompressed representation and the JSON
the handler encoded — nothing is encoded twice. Only 200 answers to GET/HEAD of the authenticated
merchant routes (`/v1/…` handlers that take a `principal`) are concerned; health, metrics, admin
and the hosted-checkout pages pass through untouched, as does any answer that already carries an
`ETag` or a `Cache-Control`.

* The tag is `"<blake2b-128 hex of the body>"`: equal bytes, equal tag (across merchants too, so a
  304 never reveals more than the client already holds). One hash per GET (~1 µs for a payment).
* `If-None-Match` uses the weak comparison RFC 9110 §13.1.2 prescribes: `W/` prefixes are
  ignored, a list matches when any member does, `*` matches any current representation.
* `Vary: Authorization, Accept-Encoding` on the 200 and on the 304 (a 304 carries the headers the
  200 would have had, RFC 9110 §15.4.5): the body depends on the credential, and its coding on
  `Accept-Encoding` (both codings share the tag of the uncompressed bytes).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Final

ASGIApp = Any
_METHODS: Final = frozenset({"GET", "HEAD"})
_PREFIX: Final = "/v1/"
# entity-tag = [ "W/" ] DQUOTE *etagc DQUOTE ; etagc = %x21 / %x23-7E / obs-text
_ENTITY_TAG: Final = re.compile(rb'\s*(?:W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*(?:,|$)')
_DROPPED_ON_304: Final = frozenset({b"content-length", b"content-type", b"content-encoding"})
VARY: Final = ("Authorization", "Accept-Encoding")


def entity_tag(body: bytes) -> bytes:
    """The strong validator of a representation: a quoted 128-bit BLAKE2b of its bytes."""
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


def none_match(header: bytes, tag: bytes) -> bool:
    """True when `If-None-Match: <header>` matches `tag` (weak comparison): the answer is 304.
    A malformed header matches nothing (the full answer is sent)."""
    value = header.strip()
    if value == b"*":
        return True
    position, end = 0, len(value)
    opaque = tag[2:] if tag.startswith(b"W/") else tag
    while position < end:
        found = _ENTITY_TAG.match(value, position)
        if found is None or found.end() == position:
            return False
        if found.group(1) == opaque:
            return True
        position = found.end()
    return False


def merge_vary(values: list[bytes], extra: tuple[str, ...] = ()) -> bytes:
    """One `Vary` value from several (and `extra`), each field name once, first spelling kept."""
    names: dict[str, str] = {}
    for value in values:
        for part in value.decode("latin-1").split(","):
            if part.strip():
                names.setdefault(part.strip().lower(), part.strip())
    for name in extra:
        names.setdefault(name.lower(), name)
    return ", ".join(names.values()).encode("latin-1")


def _merchant_route(handler: Any, path: str, cache: dict[int, bool]) -> bool:
    if handler is None:
        return False
    known = cache.get(id(handler))
    if known is None:
        signature = getattr(handler, "parsed_fn_signature", None)
        parameters = getattr(signature, "parameters", {})
        known = path.startswith(_PREFIX) and "principal" in parameters
        cache[id(handler)] = known
    return known


class ConditionalGet:
    """ETag / Cache-Control / If-None-Match for the merchant GET routes (see the module doc)."""

    def __init__(self, app: ASGIApp, *, max_age: int = 0) -> None:
        self.app = app
        self.cache_control = f"private, max-age={max_age}".encode()
        self._routes: dict[int, bool] = {}  # route handler (lives as long as the app) -> concerned

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") not in _METHODS
            or not _merchant_route(scope.get("route_handler"), scope["path"], self._routes)
        ):
            await self.app(scope, receive, send)
            return
        conditions = [value for name, value in scope["headers"] if name == b"if-none-match"]
        condition = b", ".join(conditions) if conditions else None
        start: dict[str, Any] | None = None
        passthrough = False
        cache_control = self.cache_control

        async def conditional_send(message: dict[str, Any]) -> None:
            nonlocal start, passthrough
            if passthrough:
                await send(message)
                return
            kind = message["type"]
            if kind == "http.response.start":
                if message["status"] != 200 or any(
                    name.lower() in (b"etag", b"cache-control") for name, _ in message.get("headers", ())
                ):
                    passthrough = True
                    await send(message)
                else:
                    start = message  # held until the body is known
                return
            if kind != "http.response.body" or start is None:
                await send(message)
                return
            if message.get("more_body", False):  # streamed: no tag (never the case for JSON)
                passthrough = True
                await send(start)
                await send(message)
                return
            tag = entity_tag(message.get("body", b""))
            original = list(start.get("headers", ()))
            vary = merge_vary([v for n, v in original if n.lower() == b"vary"], VARY)
            headers = [
                *(h for h in original if h[0].lower() != b"vary"),
                (b"etag", tag),
                (b"cache-control", cache_control),
                (b"vary", vary),
            ]
            if condition is not None and none_match(condition, tag):
                headers = [h for h in headers if h[0].lower() not in _DROPPED_ON_304]
                await send({"type": "http.response.start", "status": 304, "headers": headers})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send({**start, "headers": headers})
            await send(message)

        await self.app(scope, receive, conditional_send)


def describe_conditional_gets(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with API-9 on every merchant GET (`/v1/…`, authenticated): the optional
    `If-None-Match` header, the `ETag`, `Cache-Control` and `Vary` headers of the 200, and the 304."""
    headers = {
        "ETag": {
            "description": "Strong validator of this exact body; send it back in `If-None-Match`",
            "schema": {"type": "string"},
        },
        "Cache-Control": {
            "description": "`private, max-age=<PAYCORE_ETAG_MAX_AGE>`",
            "schema": {"type": "string"},
        },
        "Vary": {"description": "`Authorization, Accept-Encoding`", "schema": {"type": "string"}},
    }
    parameter = {
        "name": "If-None-Match",
        "in": "header",
        "required": False,
        "description": (
            "ETags (or `*`) the client holds; when one matches (weak comparison) the answer is 304 "
            "with no body"
        ),
        "schema": {"type": "string"},
    }
    for path, item in schema.get("paths", {}).items():
        operation = item.get("get") if path.startswith(_PREFIX) else None
        if not isinstance(operation, dict) or operation.get("security") == [{}]:
            continue
        parameters = operation.setdefault("parameters", [])
        if not any(p.get("name", "").lower() == "if-none-match" for p in parameters):
            parameters.append(dict(parameter))
        responses = operation.setdefault("responses", {})
        if "200" in responses:
            responses["200"].setdefault("headers", {}).update(headers)
        responses.setdefault(
            "304",
            {
                "description": "Not Modified: `If-None-Match` matched; no body, the same `ETag`",
                "headers": dict(headers),
            },
        )
    return schema
