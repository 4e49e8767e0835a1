"""A real Redis Cluster on loopback for the store tests: six ``redis-server`` processes, three primaries.

``redis_cluster`` (session scope) starts the nodes on free ports in temporary dirs, joins them
with ``redis-cli --cluster create ... --cluster-replicas 1``, waits for ``cluster_state:ok``
on every node, and at the end kills the processes and removes the dirs. Without
``/usr/bin/redis-server`` it skips, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REDIS_SERVER = os.environ.get("HOMEPAGE_TEST_REDIS_SERVER", "/usr/bin/redis-server")
NODES = 6
NODE_TIMEOUT_MS = 1500  # failover in about two seconds: the kill tests wait for it
START_TIMEOUT = 60.0

__all__ = ["ClusterNodeProc", "LocalCluster", "redis_cluster", "start_cluster"]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports whose cluster bus port (+10000) is free too."""
    ports: list[int] = []
    socks = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
            if port + 10000 > 65535:
                s.close()
                continue
            with socket.socket() as bus:
                try:
                    bus.bind(("127.0.0.1", port + 10000))
                except OSError:
                    s.close()
                    continue
            socks.append(s)
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


@dataclass
class ClusterNodeProc:
    """One ``redis-server`` process of the cluster."""

    port: int
    dir: Path
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        """Start (or restart) the node from its dir; a restarted node rejoins with its nodes.conf."""
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--save", "",
                "--appendonly", "no",
                "--repl-diskless-sync-delay", "0",  # replicas sync at once: a replica never synced cannot fail over
                "--daemonize", "no",
                "--protected-mode", "no",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL the process (a crash, not a shutdown)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def cli(self, *args: str, timeout: float = 10) -> str:
        """``redis-cli -p <port> args...`` output (raises on failure)."""
        out = subprocess.run(
            [str(Path(REDIS_SERVER).with_name("redis-cli")), "-h", "127.0.0.1", "-p", str(self.port), *args],
            capture_output=True, text=True, timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"redis-cli -p {self.port} {' '.join(args)}: {out.stderr or out.stdout}")
        return out.stdout

    def info_field(self, *args: str) -> dict[str, str]:
        """``key:value`` lines of an INFO-like reply (CLUSTER INFO, INFO replication)."""
        try:
            text = self.cli(*args, timeout=3)
        except (RuntimeError, subprocess.TimeoutExpired):
            return {}
        return dict(line.strip().split(":", 1) for line in text.splitlines() if ":" in line)


@dataclass
class LocalCluster:
    """The running cluster: its nodes and the URL the store takes."""

    root: Path
    nodes: list[ClusterNodeProc] = field(default_factory=list)
    startup_seconds: float = 0.0

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def node(self, port: int) -> ClusterNodeProc:
        return next(n for n in self.nodes if n.port == port)

    def primary_of_slot(self, slot: int) -> ClusterNodeProc:
        """The node currently serving ``slot`` as primary (asked of any live node)."""
        for n in self.live():
            owners = _slot_primaries(n)
            if owners is not None:
                for (start, end), port in owners.items():
                    if start <= slot <= end:
                        return self.node(port)
        raise RuntimeError(f"no live node knows slot {slot}")

    def live(self) -> list[ClusterNodeProc]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def wait_ok(self, timeout: float = START_TIMEOUT) -> None:
        """Until every live node says ``cluster_state:ok``, they agree on every slot's live primary, and replicas are in sync."""
        end = time.monotonic() + timeout
        while True:
            live = self.live()
            states = [n.info_field("cluster", "info").get("cluster_state") for n in live]
            views = [_slot_primaries(n) for n in live]
            live_ports = {n.port for n in live}
            if (
                live
                and all(s == "ok" for s in states)
                and all(v is not None and v == views[0] for v in views)
                and set(views[0].values()) <= live_ports  # type: ignore[union-attr]
                and sum(e - s + 1 for s, e in views[0]) == 16384  # type: ignore[union-attr]
                and all(self._synced(n) for n in live)
            ):
                return
            if time.monotonic() > end:
                raise RuntimeError(f"cluster not ok after {timeout:.0f}s: {states}; logs in {self.root}")
            time.sleep(0.1)

    def wait_replicated(self, primary: ClusterNodeProc, timeout: float = 10.0) -> None:
        """Until ``primary``'s replicas have acknowledged all its writes (replication is asynchronous)."""
        end = time.monotonic() + timeout
        while True:
            info = primary.info_field("info", "replication")
            offset = info.get("master_repl_offset")
            acked = [dict(kv.split("=", 1) for kv in v.split(","))["offset"] for k, v in info.items() if k.startswith("slave")]
            if acked and all(a == offset for a in acked):
                return
            if time.monotonic() > end:
                raise RuntimeError(f"replicas of {primary.port} did not catch up: {info}")
            time.sleep(0.05)

    @staticmethod
    def _synced(node: ClusterNodeProc) -> bool:
        """A primary, or a replica whose link to its primary is up (it can take over)."""
        info = node.info_field("info", "replication")
        return info.get("role") == "master" or info.get("master_link_status") == "up"

    def stop(self) -> None:
        for n in self.nodes:
            n.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def _slot_primaries(node: ClusterNodeProc) -> dict[tuple[int, int], int] | None:
    """(first slot, last slot) -> primary port, from the node's ``CLUSTER NODES``; None if it does not answer."""
    try:
        text = node.cli("cluster", "nodes", timeout=3)
    except (RuntimeError, subprocess.TimeoutExpired):
        return None
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8 or "master" not in parts[2].split(",") or "fail" in parts[2].split(","):
            continue
        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        for r in parts[8:]:
            if r.startswith("["):
                continue  # a slot being migrated
            first, _, last = r.partition("-")
            out[(int(first), int(last or first))] = port
    return out


def start_cluster(root: Path | None = None) -> LocalCluster:
    """Start six nodes and join them into a cluster with one replica per primary."""
    t0 = time.perf_counter()
    root = Path(root or tempfile.mkdtemp(prefix="hp-cluster-"))
    cluster = LocalCluster(root)
    try:
        for port in _free_ports(NODES):
            node = ClusterNodeProc(port, root / str(port))
            node.start()
            cluster.nodes.append(node)
        for n in cluster.nodes:  # every node answers before the join
            end = time.monotonic() + 20
            while True:
                try:
                    if n.cli("ping", timeout=2).strip() == "PONG":
                        break
                except (RuntimeError, subprocess.TimeoutExpired):
                    pass
                if n.proc is not None and n.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on {n.port} exited: {(n.dir / 'redis.log').read_text()[-2000:]}")
                if time.monotonic() > end:
                    raise RuntimeError(f"redis-server on {n.port} did not answer")
                time.sleep(0.05)
        cluster.nodes[0].cli(
            "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
            "--cluster-replicas", "1", "--cluster-yes", timeout=60,
        )
        cluster.wait_ok()
    except BaseException:
        cluster.stop()
        raise
    cluster.startup_seconds = time.perf_counter() - t0
    return cluster


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A six-node Redis Cluster on loopback for the whole session, torn down at the end."""
    if not Path(REDIS_SERVER).exists():
        msg = f"{REDIS_SERVER} not found: the Redis Cluster tests start a real cluster (apt-get install redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg + " (CI=true: these tests must run)")
        pytest.skip(msg)
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        cluster.stop()
