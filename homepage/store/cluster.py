"""Redis Cluster connections: ``redis+cluster://host:port[,host:port...]`` URLs and a lazily made client."""

from __future__ import annotations

from typing import Any

from homepage.settings import Settings, shown_url
from homepage.store.errors import StoreError

CLUSTER_SCHEME = "redis+cluster://"


class LazyCluster:
    """A ``RedisCluster`` made on first use: it contacts a node when built, and a store is built at start-up."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self._client: Any = None

    def _get(self) -> Any:
        if self._client is None:
            from redis.cluster import ClusterNode, RedisCluster

            self._client = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(self.url)],
                socket_timeout=self.settings.socket_timeout,
                socket_connect_timeout=self.settings.connect_timeout,
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """(host, port) startup nodes of ``redis+cluster://host:port[,host:port...]``."""
    rest = url[len(CLUSTER_SCHEME) :] if url.startswith(CLUSTER_SCHEME) else ""
    hosts = rest.split("/", 1)[0]
    out = []
    for part in filter(None, hosts.split(",")):
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise StoreError(f"REDIS_URL {shown_url(url)}: give {CLUSTER_SCHEME}host:port[,host:port...]")
        out.append((host, int(port)))
    if not out:
        raise StoreError(f"REDIS_URL {shown_url(url)}: give {CLUSTER_SCHEME}host:port[,host:port...]")
    return out
