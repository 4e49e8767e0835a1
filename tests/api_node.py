"""One API node: a separate ``homepage serve`` process on its own loopback port, against a shared Redis.

Used by ``tests/test_multinode.py`` and ``bench/serve_multinode.py``. Each node has its own
port, its own directory for unpacked model bundles and its own log, as separate machines
would; all nodes share the Redis at ``redis_url`` under ``key_prefix``.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ApiNode:
    """A ``homepage serve`` process; ``start`` waits for ``/health/ready``, ``kill`` is SIGKILL."""

    port: int
    workdir: Path
    redis_url: str
    key_prefix: str
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.workdir / "api.log"

    def start(self, timeout: float = 90.0) -> ApiNode:
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "REDIS_URL": self.redis_url,
            "HOMEPAGE_KEY_PREFIX": self.key_prefix,
            "HOMEPAGE_MODELS_DIR": str(self.workdir / "models"),
            "OPENBLAS_NUM_THREADS": "1",
            **self.env,
        }
        cmd = [sys.executable, "-m", "homepage", "serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(self.log, "ab"))
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node on port {self.port} exited ({self.proc.returncode}): {self.log_tail()}")
            if self.ready() is not None:
                return self
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"node on port {self.port} not ready within {timeout:.0f} s: {self.log_tail()}")
            time.sleep(0.1)

    def ready(self) -> dict | None:
        """``/health/ready``'s body when the node is ready (200), else None."""
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            c.request("GET", "/health/ready")
            r = c.getresponse()
            body = r.read()
            c.close()
            return json.loads(body) if r.status == 200 else None
        except (OSError, ValueError):
            return None

    def kill(self) -> None:
        """SIGKILL: the process dies with whatever requests it holds."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
