"""`paycore worker` as a real child process (for kill -9 and SIGTERM tests, and e2e)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import Any


class WorkerProcess:
    def __init__(
        self, env: Mapping[str, str], *, module: str = "paycore.cli", args: Sequence[str] = ("worker",)
    ):
        self.env = {**os.environ, "PAYCORE_WORKER_METRICS_PORT": "0", **env}
        self.command = [sys.executable, "-m", module, *args]
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict[str, Any] | None = None
        self._ready = threading.Event()
        self._stderr: list[str] = []

    def start(self, timeout: float = 30.0) -> WorkerProcess:
        self.proc = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if not self._ready.wait(timeout):
            self.kill()
            raise RuntimeError(f"the worker did not start: {self.stderr_text()[-3000:]}")
        if self.ready is None:
            raise RuntimeError(f"the worker exited: {self.stderr_text()[-3000:]}")
        return self

    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            with suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == "worker_ready":
                    self.ready = event
                    self._ready.set()
        self._ready.set()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def metrics_url(self) -> str:
        assert self.ready is not None
        return f"http://127.0.0.1:{self.ready['metrics_port']}"

    def stderr_text(self) -> str:
        return "".join(self._stderr)

    def terminate(self, timeout: float = 40.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            time.sleep(0.05)
        raise TimeoutError("the worker did not exit")
