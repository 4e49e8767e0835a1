"""Redis Cluster connections: ``redis+cluster://[user:password@]host:port[,host:port...][/?options]`` URLs
(``rediss+cluster://`` for TLS) and a lazily made client."""

from __future__ import annotations

from typing import Any

from redis.connection import parse_url

from homepage.settings import CLUSTER_SCHEMES, Settings, shown_url
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

            # the URL's own timeouts win, as redis-py's from_url lets a one-server URL's (given twice: a TypeError)
            options = {"socket_timeout": self.settings.socket_timeout, "socket_connect_timeout": self.settings.connect_timeout}
            self._client = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in cluster_nodes(self.url)], **{**options, **cluster_options(self.url)}
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)


def _parts(url: str) -> tuple[bool, str, str, str]:
    """(TLS, user info, host list, query) of a cluster URL; all empty for another URL."""
    scheme = next((s for s in CLUSTER_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        return False, "", "", ""
    rest, _, query = url[len(scheme) :].partition("?")
    netloc = rest.split("/", 1)[0]
    userinfo, _, hosts = netloc.rpartition("@")  # a password holds no '@' unencoded, a host never does
    return scheme.startswith("rediss"), userinfo, hosts, query


def cluster_options(url: str) -> dict[str, Any]:
    """What a cluster URL says besides its nodes: user and password, TLS and the URL's options (``ssl_ca_certs=...``).

    Read as redis-py reads a one-server URL (percent-decoding, typed options), so the same
    options work on both; before 2026-12-07 the user info was taken for part of the first
    host, so no password reached the cluster and the connection error printed it.
    """
    tls, userinfo, _, query = _parts(url)
    kwargs = parse_url(f"{'rediss' if tls else 'redis'}://{userinfo + '@' if userinfo else ''}node/?{query}")
    for k in ("host", "port", "db", "connection_class"):
        kwargs.pop(k, None)
    if tls:
        kwargs["ssl"] = True
    return kwargs


def cluster_nodes(url: str) -> list[tuple[str, int]]:
    """(host, port) startup nodes of ``redis+cluster://[user:password@]host:port[,host:port...]`` (IPv6: ``[::1]:7000``)."""
    hosts = _parts(url)[2]
    out = []
    for part in filter(None, hosts.split(",")):
        host, sep, port = part.rpartition(":")
        if host.startswith("[") and host.endswith("]"):  # an IPv6 address, bracketed as in any URL: the resolver wants it bare
            host = host[1:-1]
        if not sep or not host or not port.isdigit():
            raise StoreError(f"REDIS_URL {shown_url(url)}: give {CLUSTER_SCHEME}host:port[,host:port...]")
        out.append((host, int(port)))
    if not out:
        raise StoreError(f"REDIS_URL {shown_url(url)}: give {CLUSTER_SCHEME}host:port[,host:port...]")
    return out
