"""In-process paycore wired to the real test database and the simulator process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from paycore.config import Settings, load_settings
from paycore.gateway.port import MerchantKey
from tests.support.tokens import SANDBOX_KEY


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stack_env(database_url: str, sim: Any, **extra: str) -> dict[str, str]:
    env = {
        "PAYCORE_ENV": "test",
        "DATABASE_URL": database_url,
        "PAYCORE_EPX_SERVER_POST_URL": sim.server_post_url,
        "PAYCORE_EPX_REPORTING_URL": sim.reporting_url,
        "PAYCORE_EPX_KEY_EXCHANGE_URL": sim.key_exchange_url,
        "PAYCORE_EPX_BROWSER_POST_URL": sim.browser_post_url,
        "PAYCORE_NORTH_API_URL": sim.reporting_url,
        "PAYCORE_LOG_LEVEL": "warning",
        # the test profile of the timeout ladder (roadmap §2.2)
        "PAYCORE_GATEWAY_ATTEMPT_TIMEOUT": "1s",
        "PAYCORE_GATEWAY_TIMEOUT": "2s",
        "PAYCORE_SERVICE_CRITICAL_TIMEOUT": "3s",
        "PAYCORE_SERVICE_NONCRITICAL_TIMEOUT": "2s",
        "PAYCORE_SERVICE_TIMEOUT": "4s",
        "PAYCORE_REQUEST_TIMEOUT": "5s",
        "PAYCORE_DB_MIN_CONNS": "1",
        "PAYCORE_DB_MAX_CONNS": "10",
    }
    env.update(extra)
    return env


def stack_settings(database_url: str, sim: Any, **extra: str) -> Settings:
    return load_settings(stack_env(database_url, sim, **extra))


class ServerProcess:
    """`paycore serve` as a real child process."""

    def __init__(self, env: Mapping[str, str], *, workers: int = 1) -> None:
        self.port = free_port()
        self.env = {**os.environ, **env, "PAYCORE_HTTP_PORT": str(self.port), "PAYCORE_WORKERS": str(workers)}
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> ServerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paycore.cli", "serve"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"paycore serve exited: {err[-2000:]}")
            with suppress(OSError), urllib.request.urlopen(self.url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("paycore serve did not become ready")

    def pids(self) -> list[int]:
        """The granian main process and its workers."""
        assert self.proc is not None
        out = subprocess.run(
            ["pgrep", "-g", str(self.proc.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(p) for p in out.split()]

    def terminate(self, timeout: float = 40.0) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(10)

    def stderr_text(self) -> str:
        if self.proc is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")


__all__ = ["SANDBOX_KEY", "MerchantKey", "ServerProcess", "free_port", "stack_env", "stack_settings"]
