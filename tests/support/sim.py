"""Run the EPX simulator as a real subprocess in tests, and drive its control API.

    sim = start_simulator(latency_ms=0, seed=1)      # free ports, waits for /_sim/health
    ...  paycore talks to sim.server_post_url, sim.key_exchange_url, sim.browser_post_url, ...
    async with SimControl(sim.control_url) as ctl:
        await ctl.add_fault({"action": {"type": "process_then_fail", "fail": 503}, "first": 1})
        entries = await ctl.ledger(tran_nbr=1234567890)
    sim.stop()

`restart()` keeps the ports but starts a fresh process: all simulator state (transactions, BRICs,
faults, clock, ledger) is lost, exactly as when the real gateway loses a connection's context.
Only `--ledger-file` (pass it in `extra_args`) survives a restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import aiohttp

START_TIMEOUT_S = 20.0


class SimulatorError(RuntimeError):
    pass


class SimProcess:
    """A running `python -m paycore.epx_sim` process (also a context manager)."""

    server_post_url: str
    key_exchange_url: str
    browser_post_url: str
    reporting_url: str
    north_url: str
    control_url: str
    ca_file: str | None
    pid: int

    def __init__(self, args: list[str]) -> None:
        self._base_args = list(args)
        self._ports: tuple[int, int, int] | None = None
        self._proc: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self._launch()

    # --- lifecycle ---------------------------------------------------------------------------

    def _launch(self) -> None:
        ports = ["--port", "0", "--keyexch-port", "0", "--control-port", "0"]
        if self._ports is not None:
            main, kx, ctl = self._ports
            ports = ["--port", str(main), "--keyexch-port", str(kx), "--control-port", str(ctl)]
        cmd = [sys.executable, "-m", "paycore.epx_sim", *ports, *self._base_args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env, start_new_session=True
        )
        self._proc = proc
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.put(line)

        threading.Thread(target=pump, name="epx-sim-stdout", daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        ready: dict[str, Any] | None = None
        while ready is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or proc.poll() is not None:
                self.kill()
                raise SimulatorError(f"simulator did not start: {self.stderr_text()[-2000:]}")
            try:
                line = lines.get(timeout=min(0.2, remaining))
            except queue.Empty:
                continue
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                if isinstance(data, dict) and data.get("event") == "epx_sim_ready":
                    ready = data
        self.server_post_url = ready["server_post_url"]
        self.key_exchange_url = ready["key_exchange_url"]
        self.browser_post_url = ready["browser_post_url"]
        self.reporting_url = ready["reporting_url"]
        self.north_url = ready.get("north_url", ready["reporting_url"])
        self.control_url = ready["control_url"]
        self.ca_file = ready.get("ca_file")
        self.pid = int(ready["pid"])
        self._ports = (_port(self.server_post_url), _port(self.key_exchange_url), _port(self.control_url))
        self.wait_healthy(deadline - time.monotonic())

    def wait_healthy(self, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + max(timeout, 0.5)
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                return self.control("GET", "/_sim/health")
            except (OSError, urllib.error.URLError) as exc:
                last = exc
                time.sleep(0.05)
        raise SimulatorError(f"simulator not healthy: {last}")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL (the chaos case: in-flight requests see a reset)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(5)

    def restart(self) -> None:
        """Stop (if running) and start again on the same ports; the simulator's state is lost."""
        self.stop()
        self._launch()

    def stderr_text(self) -> str:
        self._stderr.flush()
        self._stderr.seek(0)
        return self._stderr.read()

    def __enter__(self) -> Self:
        return self

    def close(self) -> None:
        """Stop the process and release its captured stderr."""
        self.stop()
        self._stderr.close()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- conveniences ------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        """paycore settings that point the gateway clients at this simulator."""
        out = {
            "PAYCORE_EPX_SERVER_POST_URL": self.server_post_url,
            "PAYCORE_EPX_KEY_EXCHANGE_URL": self.key_exchange_url,
            "PAYCORE_EPX_BROWSER_POST_URL": self.browser_post_url,
            "PAYCORE_EPX_REPORTING_URL": self.reporting_url,
            "PAYCORE_NORTH_API_URL": self.north_url,
        }
        if self.ca_file:
            out["PAYCORE_EPX_CA_FILE"] = self.ca_file
        return out

    def control(self, method: str, path: str, body: Any = None, timeout: float = 5.0) -> Any:
        """A blocking control-API call (for session fixtures and scripts; tests use SimControl)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.control_url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1].split("/", 1)[0])


def start_simulator(*, latency_ms: float = 0, seed: int = 1, extra_args: Sequence[str] = ()) -> SimProcess:
    """Start the simulator on free ports and wait until `/_sim/health` answers."""
    return SimProcess(["--latency-ms", str(latency_ms), "--seed", str(seed), *extra_args])


class SimControlError(RuntimeError):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"control API answered {status}: {body}")
        self.status = status
        self.body = body


class SimControl:
    """Async client of the control API (one per test: its aiohttp session is bound to the loop)."""

    def __init__(self, control_url: str, session: aiohttp.ClientSession | None = None) -> None:
        self.control_url = control_url.rstrip("/")
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(
        self, method: str, path: str, body: Any = None, params: dict[str, str] | None = None
    ) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self._session.request(method, self.control_url + path, json=body, params=params) as resp:
            data = await resp.json(content_type=None)
            if resp.status >= 400:
                raise SimControlError(resp.status, data)
            return data

    # --- state -------------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/_sim/health")
        return result

    async def reset(self, *, seed: int | None = None) -> None:
        """Forget everything: transactions, BRICs, ledger, faults, disputes; settings and clock back."""
        body: dict[str, Any] = {"scope": "all"}
        if seed is not None:
            body["seed"] = seed
        await self._call("POST", "/_sim/reset", body)

    async def reset_test_state(self) -> None:
        """Between tests: faults cleared, settings/clock/listener restored; ledger and state kept."""
        await self._call("POST", "/_sim/reset", {"scope": "test"})

    async def settings(self, **changes: Any) -> dict[str, Any]:
        """Read (no arguments) or change runtime switches, e.g. `settings(duplicate_mode="replay")`."""
        if not changes:
            current: dict[str, Any] = await self._call("GET", "/_sim/settings")
            return current
        updated: dict[str, Any] = await self._call("POST", "/_sim/settings", changes)
        return updated

    async def add_merchant(
        self,
        cust_nbr: str,
        merch_nbr: str,
        dba_nbr: str,
        terminal_nbr: str,
        mac: str,
        *,
        response_format: str | None = None,
        single_capture: bool | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "cust_nbr": cust_nbr,
            "merch_nbr": merch_nbr,
            "dba_nbr": dba_nbr,
            "terminal_nbr": terminal_nbr,
            "mac": mac,
        }
        if response_format is not None:
            body["response_format"] = response_format
        if single_capture is not None:
            body["single_capture"] = single_capture
        result = await self._call("POST", "/_sim/merchants", body)
        merchant: dict[str, Any] = result["merchants"][0]
        return merchant

    async def ledger(
        self,
        tran_nbr: int | None = None,
        merchant: str | None = None,
        *,
        tran_type: str | None = None,
        endpoint: str | None = None,
        processed: bool | None = None,
        since: int | None = None,
    ) -> list[dict[str, Any]]:
        params: dict[str, str] = {}
        if tran_nbr is not None:
            params["tran_nbr"] = str(tran_nbr)
        if merchant is not None:
            params["merchant"] = merchant
        if tran_type is not None:
            params["tran_type"] = tran_type
        if endpoint is not None:
            params["endpoint"] = endpoint
        if processed is not None:
            params["processed"] = "true" if processed else "false"
        if since is not None:
            params["since"] = str(since)
        result = await self._call("GET", "/_sim/ledger", params=params)
        entries: list[dict[str, Any]] = result["entries"]
        return entries

    async def transactions(
        self, merchant: str = "900300", tran_nbr: int | None = None
    ) -> list[dict[str, Any]]:
        params = {"merchant": merchant}
        if tran_nbr is not None:
            params["tran_nbr"] = str(tran_nbr)
        result = await self._call("GET", "/_sim/transactions", params=params)
        rows: list[dict[str, Any]] = result["transactions"]
        return rows

    async def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/_sim/stats")
        return result

    # --- faults ------------------------------------------------------------------------------

    async def add_fault(self, rule: dict[str, Any]) -> str:
        """Add a rule (see docs/simulator.md); returns its id."""
        result = await self._call("POST", "/_sim/faults", rule)
        return str(result["id"])

    async def faults(self) -> list[dict[str, Any]]:
        result = await self._call("GET", "/_sim/faults")
        rules: list[dict[str, Any]] = result["faults"]
        return rules

    async def remove_fault(self, rule_id: str) -> None:
        await self._call("DELETE", f"/_sim/faults/{rule_id}")

    async def clear_faults(self) -> None:
        await self._call("DELETE", "/_sim/faults")

    async def listener(self, up: bool) -> None:
        """Close (real ECONNREFUSED) or reopen the Server Post / Browser Post / reporting port."""
        await self._call("POST", "/_sim/listeners", {"main": "up" if up else "down"})

    # --- clock and batches -------------------------------------------------------------------

    async def close_batch(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("POST", "/_sim/batch/close")
        return result

    async def clock(
        self, *, now: datetime | str | None = None, frozen: bool | None = None, reset: bool = False
    ) -> dict[str, Any]:
        """Read the simulated clock (no arguments), set it, freeze/unfreeze it or put it back to real time."""
        body: dict[str, Any] = {}
        if reset:
            body["reset"] = True
        if frozen is not None:
            body["frozen"] = frozen
        if now is not None:
            body["now"] = now.isoformat() if isinstance(now, datetime) else now
        if not body:
            current: dict[str, Any] = await self._call("GET", "/_sim/clock")
            return current
        result: dict[str, Any] = await self._call("POST", "/_sim/clock", body)
        return result

    async def advance_clock(
        self, seconds: float = 0, days: float = 0, *, banking_days: int = 0
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"advance_seconds": seconds, "advance_days": days}
        if banking_days:
            body["advance_banking_days"] = banking_days
        result: dict[str, Any] = await self._call("POST", "/_sim/clock", body)
        return result

    # --- ACH and disputes --------------------------------------------------------------------

    async def inject_ach_return(
        self,
        tran_nbr: int,
        code: str,
        *,
        merchant: str | None = None,
        return_date: str | None = None,
        corrected_data: str | None = None,
    ) -> dict[str, Any]:
        """A return (`R01`…) or a notification of change (`C01`…) for a processed ACH entry."""
        body: dict[str, Any] = {"tran_nbr": tran_nbr, "code": code}
        if merchant is not None:
            body["merchant"] = merchant
        if return_date is not None:
            body["return_date"] = return_date
        if corrected_data is not None:
            body["corrected_data"] = corrected_data
        result: dict[str, Any] = await self._call("POST", "/_sim/ach/returns", body)
        return result

    async def create_dispute(
        self, tran_nbr: int, *, merchant: str = "900300", status: str = "NEW", **fields: Any
    ) -> dict[str, Any]:
        """A North dispute on a processed transaction; returns it (with its `caseNumber`)."""
        body = {"tran_nbr": tran_nbr, "merchant": merchant, "status": status, **fields}
        result: dict[str, Any] = await self._call("POST", "/_sim/disputes", body)
        return result

    async def update_dispute(self, case_number: str, **fields: Any) -> dict[str, Any]:
        """Move a dispute (e.g. `status="WON"`) or change its reason or amount."""
        result: dict[str, Any] = await self._call("PATCH", f"/_sim/disputes/{case_number}", fields)
        return result

    async def redirects(self, tran_nbr: int | None = None) -> list[dict[str, Any]]:
        """The Browser Post redirects sent (masked), so a test can replay or delay one."""
        params = {"tran_nbr": str(tran_nbr)} if tran_nbr is not None else None
        result = await self._call("GET", "/_sim/browserpost/redirects", params=params)
        rows: list[dict[str, Any]] = result["redirects"]
        return rows
