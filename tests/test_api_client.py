"""What a client app meets over real HTTP: absolute image URLs served with the viewer off, CORS,
gzip, caching headers, request ids, JSON-only bodies and timestamps in seconds."""

from __future__ import annotations

import gzip
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from redis_fixtures import live_api_on_embedded

from homepage.store import RedisStore

API_KEY = "client-" + uuid.uuid4().hex
KEY = {"X-API-Key": API_KEY}
PUBLIC = "https://api.example.test"
ORIGIN = "https://app.example.test"


@dataclass
class Client:
    http: httpx.Client
    store: RedisStore


@pytest.fixture(scope="module")
def client(request: pytest.FixtureRequest, serving_bundle: Path, recent_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """A live server with the viewer off, a public URL, one CORS origin and gzip from 1 KB."""
    options = {"viewer": False, "public_url": PUBLIC + "/", "cors_origins": f" {ORIGIN}/ , https://tv.example.test", "gzip_min_bytes": 1024}
    with live_api_on_embedded(request, recent_world, serving_bundle, tmp_path_factory.mktemp("unpacked"), API_KEY, **options) as (srv, store):
        with httpx.Client(base_url=srv.url, timeout=30) as http:
            yield Client(http, store)


def test_image_urls_are_absolute_and_served_with_the_viewer_off(client: Client) -> None:
    http = client.http
    assert http.get("/").status_code == 404 and http.get("/viewer/config").status_code == 404  # the viewer is off
    page = http.get("/homepage/1001", params={"rows": 3, "cols": 3}).json()
    urls = [t["image_url"] for row in page["rows"] for t in row["titles"]]
    assert urls and all(u.startswith(PUBLIC + "/artwork/") for u in urls), urls[:3]
    r = http.get(urls[0].removeprefix(PUBLIC))
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content
    title = page["rows"][0]["titles"][0]["title_id"]
    assert all(v["image_url"].startswith(PUBLIC + "/artwork/") for v in http.get(f"/titles/{title}").json()["variants"])


def test_a_page_is_private_to_the_client_and_carries_a_request_id(client: Client) -> None:
    r = client.http.get("/homepage/1001")
    assert r.headers["cache-control"] == "private, no-store"
    assert re.fullmatch(r"[0-9a-f]{16}", r.headers["x-request-id"])
    assert client.http.get("/homepage/1001").headers["x-request-id"] != r.headers["x-request-id"]  # one per request


@pytest.mark.parametrize(("sent", "echoed"), [("ticket-42.a:b_c", True), ("has space", False), ("x" * 65, False), ("é", False)])
def test_a_plain_client_request_id_is_echoed_and_any_other_replaced(client: Client, sent: str, echoed: bool) -> None:
    r = client.http.get("/health/live", headers={"X-Request-ID": sent.encode("utf-8")})
    assert (r.headers["x-request-id"] == sent) is echoed
    assert re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", r.headers["x-request-id"])
    bad = client.http.get("/homepage/abc", headers={"X-Request-ID": "err-1"})  # errors carry it too
    assert bad.status_code == 422 and bad.headers["x-request-id"] == "err-1"


def test_pages_are_gzipped_for_clients_that_accept_it(client: Client) -> None:
    params = {"rows": 10, "cols": 10}
    raw = client.http.get("/homepage/1002", params=params, headers={"Accept-Encoding": "identity"})
    zipped = client.http.get("/homepage/1002", params=params, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in raw.headers and zipped.headers["content-encoding"] == "gzip"
    assert all("accept-encoding" in r.headers["vary"].lower() for r in (raw, zipped))  # no cache mixes the two up
    assert json.loads(zipped.content) == raw.json()  # httpx decodes; the same (cached) page
    assert int(zipped.headers["content-length"]) < len(raw.content) / 3  # it is worth it
    for refused in ("gzip;q=0", "identity, notgzip", "gzip; q=0.0, identity"):  # gzip refused or not named: as it is
        r = client.http.get("/homepage/1002", params=params, headers={"Accept-Encoding": refused})
        assert "content-encoding" not in r.headers and r.json() == raw.json(), refused
    for taken in ("deflate, gzip;q=0.5", "br;q=1.0, gzip ; q=0.1"):
        assert client.http.get("/homepage/1002", params=params, headers={"Accept-Encoding": taken}).headers.get("content-encoding") == "gzip", taken
    small = client.http.get("/health/live", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in small.headers  # under the threshold: as it is
    stream = httpx.Request("GET", client.http.base_url.join("/homepage/1002"), headers={"Accept-Encoding": "gzip"})
    with httpx.Client(timeout=30) as plain:
        body = plain.send(stream, stream=True)
        assert json.loads(gzip.decompress(b"".join(body.iter_raw()))) == raw.json()


def test_cors_lets_the_configured_origins_call_and_read_the_headers(client: Client) -> None:
    pre = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key, content-type"}
    r = client.http.options("/events", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert {"x-api-key", "content-type"} <= {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    page = client.http.get("/homepage/1001", headers={"Origin": "https://tv.example.test"})
    assert page.headers["access-control-allow-origin"] == "https://tv.example.test"
    exposed = {h.strip().lower() for h in page.headers["access-control-expose-headers"].split(",")}
    assert {"x-cache", "x-degraded", "retry-after", "x-request-id"} <= exposed
    other = client.http.options("/events", headers={**pre, "Origin": "https://evil.example.test"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    assert "access-control-allow-origin" not in client.http.get("/homepage/1001", headers={"Origin": "https://evil.example.test"}).headers


def test_a_body_that_is_not_json_is_a_415_naming_the_header_and_writes_nothing(client: Client) -> None:
    user = 920_000_000 + uuid.uuid4().int % 1000
    event = json.dumps({"user_id": user, "title_id": 1, "kind": "play"})
    for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/jsonx"):
        r = client.http.post("/events", content=event, headers={**KEY, "Content-Type": ctype})
        assert r.status_code == 415 and r.json()["detail"].startswith("Content-Type:") and ctype in r.json()["detail"], r.text
    assert client.http.get(f"/homepage/{user}").json()["rows"]  # a page, and
    hist = client.store.client.get(client.store.keys.user(client.store.active_version(), user, "hist"))
    assert not hist  # no event was applied
    r = client.http.post("/events", content=event, headers={**KEY, "Content-Type": "application/json; charset=utf-8"})
    assert r.status_code == 202, r.text
    r = client.http.post("/events", content=event, headers={**KEY, "Content-Type": "application/vnd.api+json"})
    assert r.status_code == 202, r.text
    r = client.http.put(f"/users/{user}", content=json.dumps({"region": None}), headers={**KEY, "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert client.http.post("/events", content=event, headers={"Content-Type": "text/plain"}).status_code == 401  # the key first
    r = client.http.post("/events", content=event, headers=KEY)  # no Content-Type at all (curl -d without -H)
    assert r.status_code == 415 and r.json()["detail"] == "Content-Type: the body must be application/json, the header is missing", r.text
    # and the schema says so wherever a body is taken (a client generator maps documented statuses only)
    operations = [(path, method, op) for path, ops in client.http.get("/openapi.json").json()["paths"].items() for method, op in ops.items()]
    with_body = [(path, method) for path, method, op in operations if "requestBody" in op]
    assert ("/events", "post") in with_body and ("/users/{user_id}", "put") in with_body
    assert [(path, method) for path, method, op in operations if "requestBody" in op and "415" not in op["responses"]] == []


def test_a_millisecond_timestamp_is_a_422_that_says_seconds(client: Client) -> None:
    r = client.http.post("/events", json={"user_id": 1, "title_id": 1, "kind": "play", "ts": 1_765_000_000_000}, headers=KEY)
    assert r.status_code == 422
    (error,) = r.json()["errors"]
    assert error["field"] == "ts" and "seconds" in error["message"] and "milliseconds" in error["message"], r.text


def test_head_answers_the_probes_and_images_without_a_body(client: Client) -> None:
    live = client.http.head("/health/live")
    assert live.status_code == 200 and live.content == b""
    assert client.http.head("/health/ready").status_code == 200
    page = client.http.get("/homepage/1001", params={"rows": 1, "cols": 1}).json()
    image = page["rows"][0]["titles"][0]["image_url"].removeprefix(PUBLIC)
    r = client.http.head(image)
    assert r.status_code == 200 and r.content == b"" and r.headers["content-type"].startswith("image/svg+xml")
    assert int(r.headers["content-length"]) == len(client.http.get(image).content)


def test_get_and_head_have_their_own_operation_ids_and_a_405_allows_both(client: Client) -> None:
    """GET and HEAD of one route shared an operationId, which OpenAPI client generators refuse."""
    spec = client.http.get("/openapi.json").json()
    ids = [op["operationId"] for item in spec["paths"].values() for op in item.values() if "operationId" in op]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert {"get", "head"} <= set(spec["paths"]["/health/live"]) and {"get", "head"} <= set(spec["paths"]["/artwork/{title_id}/{variant_id}.svg"])
    for path in ("/health/live", "/health/ready", "/artwork/1/default.svg"):  # a 405 lists both of the path's routes
        r = client.http.post(path, json={}, headers=KEY)
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD", (path, r.status_code, r.headers.get("allow"))
    r = client.http.post("/homepage/1", json={}, headers=KEY)
    assert r.status_code == 405 and r.headers["allow"] == "GET"
