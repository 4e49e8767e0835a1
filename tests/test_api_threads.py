"""A serving worker runs BLAS with one thread: a page is a few small matrix products, and a
second BLAS thread spin-waiting beside the other workers burns the cores they need.

The server runs in a child process with its event loop on the main thread, as uvicorn runs a
worker (OpenBLAS ignores a thread count set from another thread once the main thread set one).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis_fixtures import WORLD_SMALL, free_port, make_store
from test_api import backend_settings, drop_prefix

from homepage.publish import publish_dataset

SERVER = r"""
import json, sys, threading, time
import httpx, numpy, uvicorn  # numpy loads OpenBLAS, so the limit below has a library to act on
from threadpoolctl import threadpool_info, threadpool_limits

def blas():
    return sorted({int(lib["num_threads"]) for lib in threadpool_info() if lib["user_api"] == "blas"})

threadpool_limits(2, user_api="blas")  # more than one, whatever this machine's default
from homepage.api.app import create_app

seen = {"before": blas()}
server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning"))

def probe():
    while not server.started:
        time.sleep(0.02)
    seen["status"] = httpx.get(f"http://127.0.0.1:{sys.argv[1]}/homepage/1", timeout=30).status_code
    seen["serving"] = blas()
    server.should_exit = True

threading.Thread(target=probe, daemon=True).start()
server.run()
seen["after"] = blas()
print(json.dumps(seen))
"""


def test_the_app_limits_blas_to_one_thread_while_it_serves(request: pytest.FixtureRequest, serving_bundle: Path, tmp_path: Path) -> None:
    settings, client = backend_settings("embedded", request)
    publish_dataset(make_store(client, settings), WORLD_SMALL, models=serving_bundle)
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    env.update(HOMEPAGE_KEY_PREFIX=settings.key_prefix, HOMEPAGE_EMBEDDED_DIR=str(settings.embedded_dir), HOMEPAGE_MODELS_DIR=str(tmp_path))
    try:
        out = subprocess.run([sys.executable, "-c", SERVER, str(free_port())], env=env, capture_output=True, text=True, timeout=120)
    finally:
        drop_prefix(client, settings.key_prefix)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    if seen["before"] in ([], [1]):
        pytest.skip(f"BLAS threads before serving: {seen['before']}; nothing for the limit to lower")
    assert seen["status"] == 200
    assert seen["serving"] == [1]
    assert seen["after"] == seen["before"]  # given back when the app stops
