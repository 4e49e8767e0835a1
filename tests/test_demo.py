"""The README's first command, ``homepage demo``, end to end: a real process, a real HTTP request, a clean stop."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_demo_serves_a_page_from_its_own_embedded_redis_even_with_redis_url_set(tmp_path: Path) -> None:
    """REDIS_URL names a port where nothing listens: the demo must not use it (a made-up world must not land in a real server)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOMEPAGE_")}
    env = {k: v for k, v in env.items() if k.lower() not in ("redis_url", "homepage_redis_url")}
    # every spelling the settings read (case-insensitively), one of them empty
    env.update(REDIS_URL="redis://127.0.0.1:1/0", redis_url="redis://127.0.0.1:2/0", homepage_redis_url="", OPENBLAS_NUM_THREADS="1")
    env.update(HOMEPAGE_LOG_FORMAT="json", HOMEPAGE_LOG_LEVEL="INFO")
    argv = [sys.executable, "-m", "homepage", "demo", "--users", "60", "--titles", "80", "--port", str(port), "--var", str(tmp_path / "var")]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 600
        url = None
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            m = re.search(r"curl (http://127\.0\.0\.1:\d+/homepage/(\d+))", line)
            if m:
                url, user = m.group(1), int(m.group(2))
        assert url is not None, "".join(lines)
        assert any("the demo uses its own embedded Redis" in x for x in lines), "".join(lines)
        page = None
        while page is None and time.monotonic() < deadline:  # the line is printed just before uvicorn binds
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    page = json.loads(r.read())
            except OSError:
                time.sleep(0.2)
        assert page is not None
        assert page["user_id"] == user and not page["degraded"]
        assert page["rows"] and all(row["titles"] for row in page["rows"])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.stdout is not None
    lines += proc.stdout.readlines()
    assert proc.returncode == 128 + signal.SIGTERM, "".join(lines)  # a clean exit on SIGTERM, by the shell's convention
    logged = [json.loads(x) for x in lines if x.startswith("{")]  # HOMEPAGE_LOG_FORMAT=json: one object a line
    assert any(r["logger"] == "uvicorn.error" and "Started server process" in r["message"] for r in logged), "".join(lines)
    assert not list((tmp_path / "var" / "redis").glob("*.sock"))  # the embedded Redis stopped with it


def test_demo_refuses_a_port_in_use_before_doing_any_work(tmp_path: Path) -> None:
    """A port taken by another server is an error naming it at once, not after a minute of generating and training."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = [sys.executable, "-m", "homepage", "demo", "--port", str(port), "--var", str(tmp_path / "var")]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert f"--port {port}: 127.0.0.1:{port} is in use" in " ".join(res.stderr.split()) and "Traceback" not in res.stderr
    assert not (tmp_path / "var").exists()
