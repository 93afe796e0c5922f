"""HTTP side of the simulator: Server Post, Key Exchange, Browser Post, reporting, North disputes.

Every request is written to the masked ledger *before* any fault or latency is applied, so a test
can always tell whether the "gateway" processed it. Processing happens on arrival (as a real gateway
does); latency and most faults only delay or spoil the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import IO, Any, Final

import msgspec
from aiohttp import web

from paycore.epx_sim import browser_post as bp
from paycore.epx_sim import wire
from paycore.epx_sim.engine import BrowserPostOutcome, Engine, PostOutcome, redirect_mac
from paycore.epx_sim.faults import FaultDecision, FaultRule, FaultSet, MatchContext
from paycore.epx_sim.model import LedgerEntry, cents_text

_CONTENT_TYPES: Final = {"xml": "text/xml", "detail": "text/xml", "kv": "text/plain"}
_REASONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def _mask(account: str | None) -> str | None:
    if not account:
        return None
    return "*" * max(0, len(account) - 4) + account[-4:]


def _intern(text: str | None) -> str | None:
    return None if text is None or len(text) > 16 else sys.intern(text)


def _int_or_none(text: str | None) -> int | None:
    if text and text.isdigit() and len(text) <= 10:
        return int(text)
    return None


class Simulator:
    """The simulator's process-wide state and its request handlers."""

    def __init__(self, engine: Engine, faults: FaultSet, *, ledger_file: IO[str] | None = None) -> None:
        self.engine = engine
        self.faults = faults
        self.ledger_file = ledger_file
        self.stats: Counter[tuple[str, str]] = Counter()
        self.started_mono = time.monotonic()
        self.started_at = datetime.now(UTC)
        self._next_slot = 0.0
        self.main_listener_up = True

    @property
    def settings(self) -> Any:
        return self.engine.settings

    # --- common helpers ----------------------------------------------------------------------

    def _decide(self, target: str, ctx: MatchContext) -> FaultDecision | None:
        if not self.faults.rules:
            return None
        return self.faults.decide(target, ctx, time.monotonic(), self.engine.clock.now())

    def _finalise(self, entry: LedgerEntry, status: int | None) -> None:
        if entry.responded_at is not None:
            return  # already recorded (a hang that ended with the client going away)
        entry.http_status = status
        entry.responded_at = time.time()
        self.stats[(entry.endpoint, entry.outcome or "unknown")] += 1
        if self.ledger_file is not None:
            self.ledger_file.write(json.dumps(entry.to_json(), separators=(",", ":")) + "\n")

    @staticmethod
    def _note_fault(entry: LedgerEntry, decision: FaultDecision | None) -> None:
        if decision is not None:
            entry.fault = decision.name
            entry.fault_action = decision.rule.type if decision.rule is not None else "latency"

    async def _rate_limit(self) -> bool:
        """The optional sandbox limiter: False when the request must be answered 503."""
        rps = self.settings.rate_limit_rps
        if not rps:
            return True
        interval = 1.0 / rps
        now = time.monotonic()
        slot = max(now, self._next_slot)
        wait = slot - now
        if self.settings.rate_limit_mode == "503" and wait > 0:
            return False
        self._next_slot = slot + interval
        if wait > 0:
            await asyncio.sleep(wait)
        return True

    async def _hang(self, request: web.Request, entry: LedgerEntry) -> web.StreamResponse:
        """Hold the connection without answering until the client gives up (or hang_max_s)."""
        try:
            await asyncio.sleep(self.settings.hang_max_s)
        except asyncio.CancelledError:
            entry.client_gone = True
            self._finalise(entry, None)
            raise
        self._finalise(entry, None)
        return self._drop(request, rst=False)

    @staticmethod
    def _drop(request: web.Request, *, rst: bool) -> web.StreamResponse:
        """Close the connection without an answer (RST when `rst`)."""
        transport = request.transport
        if transport is not None:
            if rst:
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=500)

    @staticmethod
    def _status_response(status: int, retry_after: Any = None, body: str | None = None) -> web.Response:
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        if body is None:
            reason = _REASONS.get(status, "Error")
            if status >= 500:
                return web.Response(
                    status=status,
                    text=wire.html_error_page(status),
                    content_type="text/html",
                    headers=headers,
                )
            body = f"{status} {reason}"
        return web.Response(status=status, text=body, content_type="text/plain", headers=headers)

    async def _fail(self, request: web.Request, entry: LedgerEntry, fail: Any) -> web.StreamResponse:
        if fail == "hang":
            return await self._hang(request, entry)
        if fail in ("reset", "refuse", "close"):
            self._finalise(entry, None)
            return self._drop(request, rst=fail != "close")
        self._finalise(entry, int(fail))
        return self._status_response(int(fail))

    async def _slow(
        self, request: web.Request, entry: LedgerEntry, body: bytes, action: dict[str, Any]
    ) -> web.StreamResponse:
        rate = float(action.get("bytes_per_s", 1))
        stall_after = action.get("stall_after")
        chunk = max(1, int(rate // 10) or 1)
        pause = chunk / rate
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/xml"})
        resp.content_length = len(body)
        await resp.prepare(request)
        sent = 0
        try:
            while sent < len(body):
                if stall_after is not None and sent >= int(stall_after):
                    return await self._hang(request, entry)
                await resp.write(body[sent : sent + chunk])
                sent += chunk
                await asyncio.sleep(pause)
            await resp.write_eof()
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def _truncated_transfer(self, request: web.Request, body: bytes) -> web.StreamResponse:
        resp = web.StreamResponse(status=200, headers={"Content-Type": "text/xml"})
        resp.content_length = len(body)
        await resp.prepare(request)
        with contextlib.suppress(ConnectionError, RuntimeError):
            await resp.write(body[: max(1, len(body) // 2)])
        self._drop(request, rst=False)
        return resp

    # --- Server Post -------------------------------------------------------------------------

    async def server_post(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        engine = self.engine
        entry = engine.new_ledger_entry("server_post", request.headers.get("traceparent"))
        try:
            f = wire.parse_request(body)
        except wire.WireError as exc:
            entry.outcome = "bad_request"
            entry.auth_resp_text = str(exc)
            self._finalise(entry, 400)
            return web.Response(status=400, text=str(exc))
        tran_nbr_raw = f.get("TRAN_NBR")
        entry.merchant = _intern(f.get("MERCH_NBR"))
        entry.tran_type = _intern(f.get("TRAN_TYPE"))
        entry.tran_nbr = _int_or_none(tran_nbr_raw)
        entry.amount = f.get("AMOUNT")
        entry.masked_account = _mask(f.get("ACCOUNT_NBR"))
        decision = (
            self._decide(
                "server_post",
                MatchContext(entry.merchant, entry.tran_type, tran_nbr_raw, entry.amount, request.path),
            )
            if self.faults.rules
            else None
        )
        self._note_fault(entry, decision)
        rule = decision.rule if decision is not None else None
        if self.settings.rate_limit_rps and not await self._rate_limit():
            entry.outcome = "rate_limited"
            self._finalise(entry, 503)
            return self._status_response(503)
        out: PostOutcome | None = None
        if rule is None or rule.process:
            out = engine.server_post(f)
            entry.processed = out.processed
            entry.duplicate = out.duplicate
            entry.outcome = out.outcome
            entry.auth_resp = out.auth_resp
            entry.auth_resp_text = out.field("AUTH_RESP_TEXT")
            if out.txn is not None:
                entry.auth_guid = out.txn.auth_guid
        else:
            entry.outcome = "not_processed"
        delay = self.settings.latency_ms / 1000.0
        if decision is not None:
            delay += decision.latency_s
        try:
            if delay > 0:
                await asyncio.sleep(delay)
            if rule is None:
                assert out is not None
                return self._post_response(entry, out, decision)
            return await self._server_post_fault(request, entry, rule, out, decision)
        except asyncio.CancelledError:
            entry.client_gone = True
            self._finalise(entry, None)
            raise

    def _post_response(
        self, entry: LedgerEntry, out: PostOutcome, decision: FaultDecision | None
    ) -> web.Response:
        if out.http_status != 200:
            self._finalise(entry, out.http_status)
            return web.Response(status=out.http_status, text=_REASONS.get(out.http_status, "Error"))
        fmt = decision.fmt if decision is not None and decision.fmt else out.fmt
        self._finalise(entry, 200)
        return web.Response(body=wire.encode(out.fields, fmt).encode(), content_type=_CONTENT_TYPES[fmt])

    async def _server_post_fault(
        self,
        request: web.Request,
        entry: LedgerEntry,
        rule: FaultRule,
        out: PostOutcome | None,
        decision: FaultDecision | None,
    ) -> web.StreamResponse:
        a = rule.action
        kind = rule.type
        if kind == "timeout":
            after = a.get("after_s")
            if after is None:
                return await self._hang(request, entry)
            await asyncio.sleep(float(after))
            if out is not None:
                return self._post_response(entry, out, decision)
            self._finalise(entry, None)
            return self._drop(request, rst=False)
        if kind in ("process_then_fail", "fail_before_process"):
            if a.get("after_s"):
                await asyncio.sleep(float(a["after_s"]))
            return await self._fail(request, entry, a["fail"])
        if kind == "http_error":
            self._finalise(entry, int(a["status"]))
            return self._status_response(int(a["status"]), a.get("retry_after"), a.get("body"))
        if kind == "html_error":
            status = int(a.get("status", 200))
            self._finalise(entry, status)
            return web.Response(status=status, text=wire.html_error_page(502), content_type="text/html")
        fields = out.fields if out is not None else []
        fmt = (decision.fmt if decision is not None and decision.fmt else None) or (
            out.fmt if out is not None else self.settings.response_format
        )
        if kind == "slow_body":
            self._finalise(entry, 200)
            return await self._slow(request, entry, wire.encode(fields, fmt).encode(), a)
        if kind == "bad_body":
            bad_kind = str(a["kind"])
            self._finalise(entry, 200)
            if bad_kind == "truncated_transfer":
                return await self._truncated_transfer(request, wire.encode(fields, fmt).encode())
            text = wire.bad_body(
                bad_kind, fields, fmt, entry_tran_nbr(entry), int(self.settings.oversize_bytes)
            )
            return web.Response(body=text.encode(), content_type="text/xml")
        # a Browser Post / North action aimed at Server Post: answer normally
        if out is not None:
            return self._post_response(entry, out, decision)
        self._finalise(entry, None)
        return self._drop(request, rst=True)

    # --- Key Exchange ------------------------------------------------------------------------

    async def key_exchange(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        f = wire.parse_form(body)
        entry = self.engine.new_ledger_entry("key_exchange", request.headers.get("traceparent"))
        entry.tran_nbr = _int_or_none(f.get("TRAN_NBR"))
        entry.amount = f.get("AMOUNT")
        entry.tran_type = f.get("TRAN_GROUP")
        decision = self._decide(
            "key_exchange", MatchContext(None, entry.tran_type, f.get("TRAN_NBR"), entry.amount, request.path)
        )
        self._note_fault(entry, decision)
        rule = decision.rule if decision is not None else None
        tac = None
        status = 200
        error = ""
        if rule is None or rule.process:
            out = self.engine.key_exchange(f)
            status, tac, error = out.http_status, out.tac, out.error
            if out.merchant is not None:
                entry.merchant = out.merchant.merch_nbr
            entry.processed = tac is not None
            entry.outcome = "tac_issued" if tac is not None else f"http_{status}"
            entry.auth_resp_text = error or None
        else:
            entry.outcome = "not_processed"
        delay = self.settings.latency_ms / 1000.0 + (decision.latency_s if decision is not None else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if rule is not None:
            a = rule.action
            kind = rule.type
            if kind == "bad_body":
                self._finalise(entry, 200)
                value = tac.value if tac is not None else ""
                bad = str(a["kind"])
                if bad == "empty_tac":
                    return web.Response(
                        text='<RESPONSE><FIELDS><FIELD KEY="TAC"></FIELD></FIELDS></RESPONSE>'
                    )
                if bad == "bare_tac":
                    return web.Response(text=value)
                if bad == "kv_tac":
                    return web.Response(text=f"TAC={wire.encode_kv([('TAC', value)])[4:]}")
                if bad == "empty":
                    return web.Response(text="")
                return web.Response(text=wire.bad_body(bad, [("TAC", value)], "xml", "0", 1000))
            if kind not in ("latency", "format"):
                return await self._generic_fault(request, entry, rule)
        if status != 200:
            self._finalise(entry, status)
            return web.Response(status=status, text=error or _REASONS.get(status, "Error"))
        assert tac is not None
        self._finalise(entry, 200)
        body_text = wire.encode_xml([("TAC", tac.value)])
        return web.Response(text=body_text, content_type="text/xml")

    async def _generic_fault(
        self, request: web.Request, entry: LedgerEntry, rule: FaultRule
    ) -> web.StreamResponse:
        """Faults shared by every endpoint: timeouts, resets, HTTP errors, HTML bodies."""
        a = rule.action
        kind = rule.type
        if kind == "timeout":
            if a.get("after_s") is None:
                return await self._hang(request, entry)
            await asyncio.sleep(float(a["after_s"]))
            self._finalise(entry, None)
            return self._drop(request, rst=False)
        if kind in ("process_then_fail", "fail_before_process"):
            if a.get("after_s"):
                await asyncio.sleep(float(a["after_s"]))
            return await self._fail(request, entry, a["fail"])
        if kind == "http_error":
            self._finalise(entry, int(a["status"]))
            return self._status_response(int(a["status"]), a.get("retry_after"), a.get("body"))
        if kind == "html_error":
            self._finalise(entry, 200)
            return web.Response(text=wire.html_error_page(502), content_type="text/html")
        if kind == "slow_body":
            self._finalise(entry, 200)
            return await self._slow(request, entry, b"<html><body>slow</body></html>", a)
        self._finalise(entry, 500)
        return self._status_response(500)

    # --- Browser Post ------------------------------------------------------------------------

    async def browser_post(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        f = wire.parse_form(body)
        engine = self.engine
        entry = engine.new_ledger_entry("browser_post", request.headers.get("traceparent"))
        tran_type = {"SALE": "CCE1", "AUTH": "CCE2", "STORAGE": "CCE8"}.get(f.get("TRAN_CODE", ""))
        entry.merchant = f.get("MERCH_NBR")
        entry.tran_nbr = _int_or_none(f.get("TRAN_NBR"))
        entry.tran_type = tran_type
        entry.amount = f.get("AMOUNT")
        entry.masked_account = _mask(f.get("ACCOUNT_NBR"))
        ctx = MatchContext(entry.merchant, tran_type, f.get("TRAN_NBR"), entry.amount, request.path)
        decision = self._decide("browser_post", ctx)
        has_card = bool(f.get("ACCOUNT_NBR") and f.get("EXP_DATE"))
        redirect_decision = self._decide("redirect", ctx) if has_card else None
        rule = decision.rule if decision is not None else None
        if rule is None and redirect_decision is not None:
            rule = redirect_decision.rule
        self._note_fault(entry, decision if decision is not None and decision.rule else redirect_decision)
        delay = self.settings.latency_ms / 1000.0
        for d in (decision, redirect_decision):
            if d is not None:
                delay += d.latency_s
        if rule is not None and not rule.process:
            entry.outcome = "not_processed"
            if delay > 0:
                await asyncio.sleep(delay)
            kind = rule.type
            if kind == "bp_error_page":
                self._finalise(entry, 200)
                return web.Response(text=bp.error_page(), content_type="text/html")
            if kind in ("bp_decline", "bp_140"):
                forced = self._forced_redirect(f, rule)
                return self._render_redirect(entry, forced, rule)
            return await self._generic_fault(request, entry, rule)
        out = engine.browser_post(f)
        if out.post is not None:
            entry.processed = out.post.processed
            entry.duplicate = out.post.duplicate
            entry.auth_resp = out.post.auth_resp
            entry.auth_resp_text = out.post.field("AUTH_RESP_TEXT")
            entry.outcome = out.post.outcome
            if out.post.txn is not None:
                entry.auth_guid = out.post.txn.auth_guid
        else:
            entry.outcome = out.kind if out.kind != "redirect" else (out.reason or "redirect")
            if out.fields is not None:
                entry.auth_resp = dict(out.fields).get("AUTH_RESP") or dict(out.fields).get("BP_RESP_CODE")
        if delay > 0:
            await asyncio.sleep(delay)
        if out.kind == "form":
            self._finalise(entry, 200)
            amount = f.get("AMOUNT", "")
            page = bp.hosted_form(request.path, out.hidden or [], amount, out.tran_group)
            return web.Response(text=page, content_type="text/html")
        if out.kind == "error_page" or (rule is not None and rule.type == "bp_error_page"):
            self._finalise(entry, 200)
            return web.Response(text=bp.error_page(), content_type="text/html")
        if rule is not None and rule.type not in (
            "bp_tamper",
            "bp_duplicate",
            "bp_get",
            "bp_decline",
            "bp_140",
        ):
            return await self._generic_fault(request, entry, rule)
        return self._render_redirect(entry, out, rule)

    def _forced_redirect(self, f: dict[str, str], rule: FaultRule) -> BrowserPostOutcome:
        """A decline or BP_140 answered without processing the payment."""
        tac = self.engine.tacs.get(f.get("TAC", ""))
        merchant = self.engine.merchants.get(tac.merchant) if tac is not None else None
        base = tac.redirect_url if tac is not None else f.get("REDIRECT_URL", "")
        group = f.get("TRAN_CODE", "")
        if rule.type == "bp_140":
            fields: wire.Fields = [
                ("BP_RESP_CODE", "BP_140"),
                ("BP_RESP_TEXT", "Field validation failed"),
                ("BP_FIELD_ERRORS", str(rule.action.get("errors", "ACCOUNT_NBR: invalid"))),
                ("TRAN_NBR", f.get("TRAN_NBR", "")),
                ("TRAN_GROUP", group),
            ]
            target = f.get("REDIRECT_URL_ERROR") or base
        else:
            code = str(rule.action.get("code", "05"))
            fields = [
                ("AUTH_RESP", code),
                ("AUTH_RESP_TEXT", "DO NOT HONOR" if code == "05" else "DECLINED"),
                ("AUTH_CODE", ""),
                ("TRAN_NBR", f.get("TRAN_NBR", "")),
                ("TRAN_GROUP", group),
            ]
            target = f.get("REDIRECT_URL_DECLINE") or base
        for name in ("USER_DATA_1", "USER_DATA_2", "USER_DATA_3"):
            if name in f:
                fields.append((name, f[name]))
        if merchant is not None:
            fields.append(("CUST_NBR", merchant.key[0]))
            fields.append(("MERCH_NBR", merchant.key[1]))
        fields.append(("AMOUNT", f.get("AMOUNT", "")))
        if merchant is not None:
            fields.append(("MAC", redirect_mac(merchant.mac, dict(fields))))
        kind = "redirect" if target else "error_page"
        return BrowserPostOutcome(kind, target=target, fields=fields, merchant=merchant, tran_group=group)

    def _render_redirect(
        self, entry: LedgerEntry, out: BrowserPostOutcome, rule: FaultRule | None
    ) -> web.StreamResponse:
        if out.kind != "redirect" or out.fields is None:
            self._finalise(entry, 200)
            return web.Response(text=bp.error_page(), content_type="text/html")
        fields = list(out.fields)
        repeat = 1
        mode = self.settings.redirect_mode
        if rule is not None:
            a = rule.action
            if rule.type == "bp_tamper":
                fields = _tamper(fields, a, out)
            elif rule.type == "bp_duplicate":
                repeat = int(a.get("repeat", 2))
            elif rule.type == "bp_get":
                mode = "303"
        self.engine.redirects.append(
            {
                "seq": entry.seq,
                "tran_nbr": entry.tran_nbr,
                "target": out.target,
                "fields": fields,
                "mode": mode,
                "repeat": repeat,
                "at": self.engine.clock.now().isoformat(),
            }
        )
        headers = {"X-Sim-Redirect-Repeat": str(repeat)} if repeat > 1 else None
        if mode == "303":
            self._finalise(entry, 303)
            return web.Response(
                status=303,
                headers={"Location": bp.redirect_location(out.target, fields), **(headers or {})},
            )
        self._finalise(entry, 200)
        return web.Response(
            text=bp.redirect_page(out.target, fields, repeat=repeat),
            content_type="text/html",
            headers=headers,
        )

    # --- reporting and North -----------------------------------------------------------------

    async def _json_endpoint(
        self, request: web.Request, endpoint: str, target: str, build: Any
    ) -> web.StreamResponse:
        entry = self.engine.new_ledger_entry(endpoint, request.headers.get("traceparent"))
        q = request.query
        entry.merchant = q.get("merchant") or _by_merchant(q.get("findBy", ""))
        entry.tran_nbr = _int_or_none(q.get("tranNbr"))
        entry.extra = {"query": dict(q)}
        decision = self._decide(
            target, MatchContext(entry.merchant, None, q.get("tranNbr"), None, request.path)
        )
        self._note_fault(entry, decision)
        rule = decision.rule if decision is not None else None
        if decision is not None and decision.latency_s > 0:
            await asyncio.sleep(decision.latency_s)
        overrides: dict[str, Any] = {}
        if rule is not None:
            if rule.type == "north_status":
                overrides["status"] = str(rule.action.get("status", "error"))
            elif rule.type == "north_page_cap":
                overrides["page_cap"] = int(rule.action["cap"])
            elif rule.type == "bad_body":
                entry.outcome = "bad_body"
                self._finalise(entry, 200)
                kind = rule.action["kind"]
                text = '{"status":"success","data":{"' if kind in ("malformed_json", "truncated") else ""
                if kind == "html":
                    return web.Response(text=wire.html_error_page(502), content_type="text/html")
                return web.Response(text=text, content_type="application/json")
            else:
                entry.outcome = "fault"
                return await self._generic_fault(request, entry, rule)
        try:
            status, payload = build(q, overrides)
        except ValueError as exc:
            entry.outcome = "bad_request"
            self._finalise(entry, 400)
            return web.json_response({"status": "error", "message": str(exc)}, status=400)
        entry.outcome = "ok" if status == 200 else f"http_{status}"
        self._finalise(entry, status)
        return web.Response(status=status, body=payload, content_type="application/json")

    async def report_transactions(self, request: web.Request) -> web.StreamResponse:
        def build(q: Any, _o: dict[str, Any]) -> tuple[int, bytes]:
            merchant = q.get("merchant")
            if not merchant:
                raise ValueError("merchant is required")
            tran_nbr = q.get("tranNbr")
            if tran_nbr is not None and not tran_nbr.isdigit():
                raise ValueError("tranNbr must be numeric")
            txns = self.engine.report_transactions(merchant, int(tran_nbr) if tran_nbr else None)
            return 200, _dumps({"status": "success", "data": {"transactions": txns}})

        return await self._json_endpoint(request, "reporting", "reporting", build)

    async def report_ach_returns(self, request: web.Request) -> web.StreamResponse:
        def build(q: Any, _o: dict[str, Any]) -> tuple[int, bytes]:
            merchant = q.get("merchant")
            if not merchant:
                raise ValueError("merchant is required")
            from_date = date.fromisoformat(q["fromDate"]) if q.get("fromDate") else None
            rows = self.engine.ach_returns(merchant, from_date)
            return 200, _dumps({"status": "success", "data": {"returns": rows}})

        return await self._json_endpoint(request, "ach_returns", "ach_returns", build)

    async def north_disputes(self, request: web.Request) -> web.StreamResponse:
        def build(q: Any, overrides: dict[str, Any]) -> tuple[int, bytes]:
            criteria = _find_by(q.get("findBy", ""))
            merchant = criteria.get("byMerchant")
            if not merchant:
                raise ValueError("findBy must include byMerchant")
            from_date = date.fromisoformat(criteria["fromDate"]) if criteria.get("fromDate") else None
            to_date = date.fromisoformat(criteria["toDate"]) if criteria.get("toDate") else None
            page, total = self.engine.search_disputes(merchant, from_date, to_date)
            cap = overrides.get("page_cap")
            if cap is not None:
                page = page[:cap]
            status = overrides.get("status", self.settings.north_status)
            disputes = [_north_dispute(d.to_json()) for d in page]
            payload = {
                "status": status,
                "data": {
                    "disputes": disputes,
                    "meta": {"totalDisputes": total, "currentResultCount": len(disputes)},
                },
                "link": str(request.rel_url),
            }
            return 200, _dumps(payload)

        return await self._json_endpoint(request, "north", "north", build)


def entry_tran_nbr(entry: LedgerEntry) -> str:
    return "" if entry.tran_nbr is None else str(entry.tran_nbr)


def _tamper(fields: wire.Fields, action: dict[str, Any], out: BrowserPostOutcome) -> wire.Fields:
    name = action.get("field")
    result = list(fields)
    if name:
        value = str(action.get("value", ""))
        replaced = False
        for i, (k, _v) in enumerate(result):
            if k == name:
                result[i] = (k, value)
                replaced = True
        if not replaced:
            result.insert(len(result) - 1, (name, value))
    mac_mode = action.get("mac", "keep")
    if mac_mode == "drop":
        result = [(k, v) for k, v in result if k != "MAC"]
    elif mac_mode == "bad":
        result = [(k, "0" * 64 if k == "MAC" else v) for k, v in result]
    elif mac_mode == "recompute" and out.merchant is not None:
        plain = [(k, v) for k, v in result if k != "MAC"]
        result = [*plain, ("MAC", redirect_mac(out.merchant.mac, dict(plain)))]
    return result


def _find_by(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition(":")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _by_merchant(find_by: str) -> str | None:
    return _find_by(find_by).get("byMerchant") if find_by else None


def _north_dispute(d: dict[str, Any]) -> dict[str, Any]:
    d["transactionAmount"] = Decimal(cents_text(int(d["transactionAmount"])))
    d["chargebackAmount"] = Decimal(cents_text(int(d["chargebackAmount"])))
    return d


_encoder: Final = msgspec.json.Encoder(decimal_format="number")


def _dumps(payload: Any) -> bytes:
    """JSON with Decimals rendered as numbers ("10.50" stays 10.50, never a float)."""
    return _encoder.encode(payload)


def build_main_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/", sim.server_post)
    app.router.add_post("/browserpost/", sim.browser_post)
    app.router.add_get("/reporting/transactions", sim.report_transactions)
    app.router.add_get("/reporting/ach/returns", sim.report_ach_returns)
    app.router.add_get("/merchant/disputes/mid/search", sim.north_disputes)
    return app


def build_keyexch_app(sim: Simulator) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/", sim.key_exchange)
    return app
