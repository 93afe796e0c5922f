"""The control API (epx-protocol.md §10.2), on its own port that paycore never exposes.

JSON in, JSON out. Errors are `{"error": "..."}` with HTTP 400/404.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import Any

from aiohttp import web

from paycore.epx_sim import calendar
from paycore.epx_sim.app import Simulator
from paycore.epx_sim.engine import parse_cutoff
from paycore.epx_sim.faults import FaultSpecError
from paycore.epx_sim.model import Merchant, Settings, cents_text, iso
from paycore.epx_sim.wire import RESPONSE_FORMATS

Listener = Callable[[bool], Awaitable[None]]


class BadRequest(ValueError):
    pass


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = await request.json()
    except ValueError:
        raise BadRequest("body must be JSON") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BadRequest("body must be a JSON object")
    return data


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise BadRequest(f"{name} must be true or false")


def apply_settings(settings: Settings, body: dict[str, Any]) -> None:
    """Validate and apply a partial settings update (unknown keys are refused)."""
    for key, value in body.items():
        if key == "duplicate_mode":
            if value not in ("reject", "replay"):
                raise BadRequest("duplicate_mode must be reject or replay")
            settings.duplicate_mode = value
        elif key == "storage_code":
            if value not in ("00", "85"):
                raise BadRequest("storage_code must be 00 or 85")
            settings.storage_code = value
        elif key == "response_format":
            if value not in RESPONSE_FORMATS:
                raise BadRequest(f"response_format must be one of {RESPONSE_FORMATS}")
            settings.response_format = value
        elif key == "redirect_mode":
            if value not in ("post", "303"):
                raise BadRequest("redirect_mode must be post or 303")
            settings.redirect_mode = value
        elif key == "rate_limit_mode":
            if value not in ("queue", "503"):
                raise BadRequest("rate_limit_mode must be queue or 503")
            settings.rate_limit_mode = value
        elif key in ("allow_any_pan", "single_capture", "strict", "tac_single_use"):
            setattr(settings, key, _bool(value, key))
        elif key in ("auth_lapse_days", "ach_return_delay_days", "oversize_bytes"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise BadRequest(f"{key} must be a non-negative integer")
            setattr(settings, key, value)
        elif key in ("tac_lifetime_s", "latency_ms", "hang_max_s"):
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                raise BadRequest(f"{key} must be a non-negative number")
            setattr(settings, key, float(value))
        elif key == "rate_limit_rps":
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise BadRequest("rate_limit_rps must be a positive number or null")
            settings.rate_limit_rps = None if value is None else float(value)
        elif key == "north_page_cap":
            if value is not None and (not isinstance(value, int) or value < 0):
                raise BadRequest("north_page_cap must be a non-negative integer or null")
            settings.north_page_cap = value
        elif key == "north_status":
            settings.north_status = str(value)
        elif key == "batch_cutoff":
            try:
                settings.batch_cutoff = None if value is None else parse_cutoff(str(value))
            except ValueError:
                raise BadRequest("batch_cutoff must be HH:MM or null") from None
        else:
            raise BadRequest(f"unknown setting {key!r}")


def _parse_dt(value: Any) -> datetime:
    try:
        at = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"invalid timestamp {value!r}") from None
    if at.tzinfo is None:
        raise BadRequest("timestamps must carry a time zone (e.g. 2026-01-05T10:00:00Z)")
    return at


def _parse_date(value: Any, name: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise BadRequest(f"{name} must be YYYY-MM-DD") from None


class Control:
    def __init__(self, sim: Simulator, defaults: Settings, listener: Listener | None = None) -> None:
        self.sim = sim
        self.defaults = defaults
        self.listener = listener

    @property
    def engine(self) -> Any:
        return self.sim.engine

    def _clock_json(self) -> dict[str, Any]:
        now = self.engine.clock.now()
        return {
            "now": iso(now),
            "frozen": self.engine.clock.frozen,
            "today": now.date().isoformat(),
            "banking_day": calendar.is_banking_day(now.date()),
        }

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "uptime_s": round(time.monotonic() - self.sim.started_mono, 3),
                "seed": self.engine.seed,
                "main_listener_up": self.sim.main_listener_up,
                **self._clock_json(),
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        body = await _body(request)
        scope = body.get("scope", "all")
        if scope not in ("all", "test"):
            raise BadRequest("scope must be all or test")
        self.sim.faults.clear()
        self._restore_settings()
        if self.listener is not None and not self.sim.main_listener_up:
            await self.listener(True)
        if scope == "all":
            seed = body.get("seed")
            if seed is not None and not isinstance(seed, int):
                raise BadRequest("seed must be an integer")
            if body.get("drop_merchants"):
                self.engine.extra_merchants.clear()
            self.engine.reset(seed)
            self.sim.faults.seed = self.engine.seed
            self.sim.stats.clear()
        else:
            self.engine.reset_clock()
        return web.json_response({"status": "ok", "scope": scope})

    def _restore_settings(self) -> None:
        s = self.engine.settings
        for f in dataclasses.fields(Settings):
            setattr(s, f.name, getattr(self.defaults, f.name))

    async def get_clock(self, _request: web.Request) -> web.Response:
        return web.json_response(self._clock_json())

    async def post_clock(self, request: web.Request) -> web.Response:
        body = await _body(request)
        clock = self.engine.clock
        if body.get("reset"):
            self.engine.reset_clock()
        if "frozen" in body:
            clock.freeze(_bool(body["frozen"], "frozen"))
        if body.get("now") is not None:
            clock.set(_parse_dt(body["now"]))
        seconds = float(body.get("advance_seconds", 0) or 0) + 86400.0 * float(
            body.get("advance_days", 0) or 0
        )
        if seconds < 0:
            raise BadRequest("the clock only moves forward by advance_*; use now to go back")
        if seconds:
            clock.advance(timedelta(seconds=seconds))
        banking = body.get("advance_banking_days")
        if banking:
            now = clock.now()
            target = calendar.add_banking_days(now.date(), int(banking))
            clock.advance(timedelta(days=(target - now.date()).days))
        self.engine.clock_changed()
        self.engine.tick(clock.now())
        return web.json_response(self._clock_json())

    async def get_settings(self, _request: web.Request) -> web.Response:
        return web.json_response(self.engine.settings.to_json())

    async def post_settings(self, request: web.Request) -> web.Response:
        body = await _body(request)
        apply_settings(self.engine.settings, body)
        return web.json_response(self.engine.settings.to_json())

    async def get_merchants(self, _request: web.Request) -> web.Response:
        return web.json_response({"merchants": [m.to_json() for m in self.engine.merchants.values()]})

    async def post_merchants(self, request: web.Request) -> web.Response:
        body = await _body(request)
        items = body.get("merchants", [body])
        added = []
        for item in items:
            if not isinstance(item, dict):
                raise BadRequest("a merchant is a JSON object")
            try:
                key = (
                    str(item["cust_nbr"]),
                    str(item["merch_nbr"]),
                    str(item["dba_nbr"]),
                    str(item["terminal_nbr"]),
                )
                mac = str(item["mac"])
            except KeyError as exc:
                raise BadRequest(f"missing {exc.args[0]}") from None
            if not all(part.isdigit() for part in key):
                raise BadRequest("the 4-part key is numeric strings")
            fmt = item.get("response_format")
            if fmt is not None and fmt not in RESPONSE_FORMATS:
                raise BadRequest(f"response_format must be one of {RESPONSE_FORMATS}")
            single = item.get("single_capture")
            if single is not None:
                single = _bool(single, "single_capture")
            merchant = Merchant(key, mac, fmt, single)
            self.engine.add_merchant(merchant)
            if merchant.key not in {m.key for m in self.engine.extra_merchants}:
                self.engine.extra_merchants.append(merchant)
            added.append(merchant.to_json())
        return web.json_response({"merchants": added}, status=201)

    async def get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response({"faults": [r.to_json() for r in self.sim.faults.rules]})

    async def post_faults(self, request: web.Request) -> web.Response:
        if not request.can_read_body:
            raise BadRequest("a fault rule is required")
        try:
            data = await request.json()
        except ValueError:
            raise BadRequest("body must be JSON") from None
        specs = data if isinstance(data, list) else [data]
        try:
            rules = [self.sim.faults.add(spec, time.monotonic()) for spec in specs]
        except FaultSpecError as exc:
            raise BadRequest(str(exc)) from None
        if isinstance(data, list):
            return web.json_response({"faults": [r.to_json() for r in rules]}, status=201)
        return web.json_response(rules[0].to_json(), status=201)

    async def delete_faults(self, _request: web.Request) -> web.Response:
        self.sim.faults.clear()
        return web.json_response({"status": "ok"})

    async def delete_fault(self, request: web.Request) -> web.Response:
        if not self.sim.faults.remove(request.match_info["rule_id"]):
            return _error(404, "no such fault rule")
        return web.json_response({"status": "ok"})

    async def close_batch(self, _request: web.Request) -> web.Response:
        return web.json_response(self.engine.close_batch())

    async def ledger(self, request: web.Request) -> web.Response:
        q = request.query
        tran_nbr = q.get("tran_nbr")
        merchant = q.get("merchant")
        tran_type = q.get("tran_type")
        endpoint = q.get("endpoint")
        processed = q.get("processed")
        since = int(q.get("since", "0") or 0)
        limit = int(q.get("limit", "0") or 0)
        want_tn = int(tran_nbr) if tran_nbr else None
        want_processed = None if processed is None else processed.lower() in ("1", "true", "yes")
        out = []
        for e in self.engine.ledger:
            if e.seq <= since:
                continue
            if want_tn is not None and e.tran_nbr != want_tn:
                continue
            if merchant is not None and e.merchant != merchant:
                continue
            if tran_type is not None and e.tran_type != tran_type:
                continue
            if endpoint is not None and e.endpoint != endpoint:
                continue
            if want_processed is not None and e.processed != want_processed:
                continue
            out.append(e.to_json())
        if limit:
            out = out[-limit:]
        return web.json_response({"entries": out, "count": len(out)})

    async def transactions(self, request: web.Request) -> web.Response:
        """Gateway-side state of transactions (masked), for assertions."""
        q = request.query
        merchant = q.get("merchant", "900300")
        tran_nbr = q.get("tran_nbr")
        rows = []
        for t in self.engine.find_txns(merchant, int(tran_nbr) if tran_nbr else None):
            inst = t.instrument
            rows.append(
                {
                    "tran_nbr": t.tran_nbr,
                    "tran_type": t.tran_type,
                    "op": t.op,
                    "amount": cents_text(t.amount),
                    "auth_resp": t.auth_resp,
                    "auth_guid": t.auth_guid,
                    "captured": cents_text(t.captured),
                    "refunded": cents_text(t.refunded),
                    "voided": t.voided,
                    "settled": t.settled,
                    "ach_settle_date": None if t.ach_settle_date is None else t.ach_settle_date.isoformat(),
                    "parent_tran_nbr": None if t.parent is None else t.parent.tran_nbr,
                    "masked_account": None if inst is None else inst.masked,
                    "processed_at": iso(t.processed_at),
                }
            )
        return web.json_response({"transactions": rows})

    async def stats(self, _request: web.Request) -> web.Response:
        by_endpoint: dict[str, dict[str, int]] = {}
        for (endpoint, outcome), n in sorted(self.sim.stats.items()):
            by_endpoint.setdefault(endpoint, {})[outcome] = n
        return web.json_response(
            {
                "endpoints": by_endpoint,
                "total": sum(self.sim.stats.values()),
                "ledger_size": len(self.engine.ledger),
                "transactions": sum(len(b) for b in self.engine.txns.values()),
                "brics": len(self.engine.brics),
                "open_batch": len(self.engine.open_batch),
                "batches_closed": self.engine.batches_closed,
                "faults": [
                    {"id": r.id, "name": r.name, "matches": r.matches, "fired": r.fired}
                    for r in self.sim.faults.rules
                ],
            }
        )

    async def post_ach_return(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if "tran_nbr" not in body or "code" not in body:
            raise BadRequest("tran_nbr and code are required")
        code = str(body["code"]).upper()
        if not (len(code) == 3 and code[0] in "RC" and code[1:].isdigit()):
            raise BadRequest("code must be Rnn (return) or Cnn (notification of change)")
        when = _parse_date(body["return_date"], "return_date") if body.get("return_date") else None
        try:
            ret = self.engine.inject_ach_return(
                body.get("merchant"), int(body["tran_nbr"]), code, when, body.get("corrected_data")
            )
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        return web.json_response(ret.to_json(), status=201)

    async def get_ach_returns(self, request: web.Request) -> web.Response:
        merchant = request.query.get("merchant")
        rows = [
            {**r.to_json(), "injected": r.injected}
            for r in self.engine.returns
            if merchant is None or r.txn.merchant[1] == merchant
        ]
        return web.json_response({"returns": rows})

    async def post_dispute(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if "tran_nbr" not in body:
            raise BadRequest("tran_nbr is required")
        try:
            dispute = self.engine.create_dispute(body)
        except KeyError as exc:
            return _error(404, str(exc.args[0]))
        return web.json_response(_dispute_json(dispute.to_json()), status=201)

    async def patch_dispute(self, request: web.Request) -> web.Response:
        body = await _body(request)
        case = request.match_info.get("case") or body.get("case_number")
        if not case:
            raise BadRequest("case_number is required")
        try:
            dispute = self.engine.update_dispute(str(case), body)
        except KeyError:
            return _error(404, "no such dispute")
        return web.json_response(_dispute_json(dispute.to_json()))

    async def get_disputes(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"disputes": [_dispute_json(d.to_json()) for d in self.engine.disputes.values()]}
        )

    async def redirects(self, request: web.Request) -> web.Response:
        tran_nbr = request.query.get("tran_nbr")
        rows = [r for r in self.engine.redirects if tran_nbr is None or str(r["tran_nbr"]) == tran_nbr]
        return web.json_response({"redirects": rows})

    async def listeners(self, request: web.Request) -> web.Response:
        body = await _body(request)
        state = body.get("main")
        if state not in ("up", "down"):
            raise BadRequest('main must be "up" or "down"')
        if self.listener is None:
            return _error(404, "listener control is not available")
        await self.listener(state == "up")
        return web.json_response({"main": "up" if self.sim.main_listener_up else "down"})


def _dispute_json(d: dict[str, Any]) -> dict[str, Any]:
    d["transactionAmount"] = cents_text(int(d["transactionAmount"]))
    d["chargebackAmount"] = cents_text(int(d["chargebackAmount"]))
    return d


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return _error(400, str(exc))
    except (ValueError, TypeError) as exc:
        return _error(400, f"invalid request: {exc}")


def build_control_app(control: Control) -> web.Application:
    app = web.Application(middlewares=[_errors])
    r = app.router
    r.add_get("/_sim/health", control.health)
    r.add_post("/_sim/reset", control.reset)
    r.add_get("/_sim/clock", control.get_clock)
    r.add_post("/_sim/clock", control.post_clock)
    r.add_get("/_sim/settings", control.get_settings)
    r.add_post("/_sim/settings", control.post_settings)
    r.add_get("/_sim/merchants", control.get_merchants)
    r.add_post("/_sim/merchants", control.post_merchants)
    r.add_get("/_sim/faults", control.get_faults)
    r.add_post("/_sim/faults", control.post_faults)
    r.add_delete("/_sim/faults", control.delete_faults)
    r.add_delete("/_sim/faults/{rule_id}", control.delete_fault)
    r.add_post("/_sim/batch/close", control.close_batch)
    r.add_get("/_sim/ledger", control.ledger)
    r.add_get("/_sim/transactions", control.transactions)
    r.add_get("/_sim/stats", control.stats)
    r.add_get("/_sim/ach/returns", control.get_ach_returns)
    r.add_post("/_sim/ach/returns", control.post_ach_return)
    r.add_get("/_sim/disputes", control.get_disputes)
    r.add_post("/_sim/disputes", control.post_dispute)
    r.add_patch("/_sim/disputes", control.patch_dispute)
    r.add_patch("/_sim/disputes/{case}", control.patch_dispute)
    r.add_get("/_sim/browserpost/redirects", control.redirects)
    r.add_post("/_sim/listeners", control.listeners)
    return app
