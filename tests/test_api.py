"""The API over real HTTP (uvicorn on loopback) against real Redis, embedded and REDIS_URL."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from redis_fixtures import BACKENDS, WORLD_SMALL, LiveServer, make_store, test_redis_url

from homepage.api.app import create_app
from homepage.api.settings import ServeSettings
from homepage.publish import publish_dataset
from homepage.settings import Settings
from homepage.store import RedisStore

API_KEY = "test-key-" + uuid.uuid4().hex


@dataclass
class Api:
    url: str
    store: RedisStore
    settings: Settings
    version: str
    client: httpx.Client

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, **kw)

    def write(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.client.request(method, path, headers={"X-API-Key": API_KEY}, **kw)


def backend_settings(name: str, request: pytest.FixtureRequest) -> tuple[Settings, Any]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    if name == "embedded":
        emb = request.getfixturevalue("embedded_redis")
        return Settings(redis_url=None, key_prefix=prefix, embedded_dir=emb.data_dir), request.getfixturevalue("embedded_client")
    return Settings(redis_url=test_redis_url(), key_prefix=prefix), request.getfixturevalue("url_client")


def drop_prefix(client: Any, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 500):
        client.unlink(*keys[i : i + 500])


@pytest.fixture(scope="module", params=BACKENDS)
def api(request: pytest.FixtureRequest, serving_bundle: Path, recent_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """The small world (ending today) published with a bundle, served by a live uvicorn server."""
    settings, client = backend_settings(request.param, request)
    store = make_store(client, settings)
    version = publish_dataset(store, recent_world, models=serving_bundle).meta.version
    serve = ServeSettings(
        api_key=API_KEY,
        deadline_ms=2000,  # functional tests: never fall back because the shared CI box is busy
        refresh_seconds=0.3,
        models_dir=tmp_path_factory.mktemp("unpacked"),
        max_body_bytes=200_000,
    )
    try:
        with LiveServer(create_app(serve, settings)) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
            yield Api(srv.url, store, settings, version, http)
    finally:
        drop_prefix(client, settings.key_prefix)


def known_user(api: Api) -> int:
    import pandas as pd

    users = pd.read_parquet(WORLD_SMALL / "users.parquet")
    return int(users["user_id"].iloc[3])


def test_a_page_narrower_than_min_titles_is_full_not_empty(api: Api) -> None:
    """cols 2 under the default min_titles 4: every row still fills its 2 columns."""
    page = api.get(f"/homepage/{known_user(api)}", params={"rows": 5, "cols": 2}).json()
    assert page["degraded"] is False and len(page["rows"]) == 5
    assert all(len(row["titles"]) == 2 for row in page["rows"] if row["ranker"] != "continue_watching")


def test_homepage_has_the_documented_fields(api: Api) -> None:
    u = known_user(api)
    r = api.get(f"/homepage/{u}", params={"rows": 6, "cols": 5, "device": "tv"})
    assert r.status_code == 200
    page = r.json()
    assert page["user_id"] == u and page["degraded"] is False
    assert page["store_version"] == api.version and page["model_version"] and page["config_hash"]
    assert page["world_as_of"] >= page["generated_at"] - 60
    assert 1 <= len(page["rows"]) <= 6
    seen: set[int] = set()
    for row in page["rows"]:
        assert row["row_id"] and row["ranker"] and row["display_title"] and row["reason"]["kind"]
        assert 1 <= len(row["titles"]) <= 5
        for t in row["titles"]:
            assert t["title_id"] not in seen  # no title twice on a page
            seen.add(t["title_id"])
            assert t["name"] and t["variant_id"] and t["image_url"]
    assert page["request"]["rows"] == 6 and page["request"]["device"] == "tv"


@pytest.mark.parametrize("user", [0, 987_654_321, 2**62])
def test_unknown_users_get_a_page_not_an_error(api: Api, user: int) -> None:
    r = api.get(f"/homepage/{user}")
    assert r.status_code == 200
    page = r.json()
    assert page["degraded"] is False and len(page["rows"]) >= 5
    assert {row["ranker"] for row in page["rows"]} & {"trending", "top_n"}
    popular = [row for row in page["rows"] if row["reason"]["kind"] == "genre"]  # a first page fills up with popular genres
    assert len(popular) >= 3 and all(row["display_title"].startswith("Popular ") for row in popular)


def test_profile_shapes_a_new_users_first_page(api: Api) -> None:
    import pandas as pd

    regions = pd.read_parquet(WORLD_SMALL / "users.parquet")["region"].dropna().unique()
    region = str(regions[0])
    user = 900_000_001
    before = api.get(f"/homepage/{user}").json()
    assert not any(row["reason"]["region"] == region for row in before["rows"])
    r = api.write("PUT", f"/users/{user}", json={"region": region, "favourite_genres": []})
    assert r.status_code == 200 and r.json()["region"] == region
    after = api.get(f"/homepage/{user}").json()
    assert any(row["reason"]["region"] == region for row in after["rows"])
    bad = api.write("PUT", f"/users/{user}", json={"region": region, "favourite_genres": [str(_catalog(api).genres[0]), "No Such Genre", "Nor This"]})
    assert bad.status_code == 422 and [e["field"] for e in bad.json()["errors"]] == ["favourite_genres.1", "favourite_genres.2"]
    assert api.write("GET", f"/users/{user}").json() == {"user_id": user, "region": region, "favourite_genres": []}  # unchanged
    # stated favourite genres give a user without history rows of those genres (the page policy orders them)
    genres = [str(g) for g in _catalog(api).genres[:2]]
    assert all(row["display_title"].startswith("Popular ") for row in after["rows"] if row["reason"]["kind"] == "genre")
    assert api.write("PATCH", f"/users/{user}", json={"favourite_genres": genres}).status_code == 200
    rows = api.get(f"/homepage/{user}").json()["rows"]
    liked = [row["reason"]["genre"] for row in rows if row["reason"]["kind"] == "genre" and row["display_title"].endswith(" for you")]
    assert sorted(liked) == sorted(genres), liked  # what the user said
    popular = [row["reason"]["genre"] for row in rows if row["reason"]["kind"] == "genre" and row["display_title"].startswith("Popular ")]
    assert popular and not set(popular) & set(genres), popular  # then the popular genres they did not state, not a three-row page


def test_profiles_read_replace_and_patch(api: Api) -> None:
    user = 900_000_003
    assert api.write("GET", f"/users/{user}").status_code == 404
    assert api.client.get(f"/users/{user}").status_code == 401  # personal data: the key is needed to read it too
    genres = list(_catalog(api).genres[:2])
    region = str(pd.read_parquet(WORLD_SMALL / "users.parquet")["region"].dropna().iloc[0])
    r = api.write("PATCH", f"/users/{user}", json={"favourite_genres": [genres[0], genres[0]]})
    assert r.status_code == 200 and r.json() == {"user_id": user, "region": None, "favourite_genres": [genres[0]]}
    r = api.write("PATCH", f"/users/{user}", json={"region": region})  # genres are kept
    assert r.json() == {"user_id": user, "region": region, "favourite_genres": [genres[0]]}
    assert api.write("GET", f"/users/{user}").json() == r.json()
    assert api.write("PATCH", f"/users/{user}", json={"favourite_genres": genres}).json()["region"] == region  # region kept
    assert api.write("PATCH", f"/users/{user}", json={"region": None}).json() == {"user_id": user, "region": None, "favourite_genres": genres}
    api.write("PUT", f"/users/{user}", json={"region": region})  # PUT replaces: genres left out are cleared
    assert api.write("GET", f"/users/{user}").json() == {"user_id": user, "region": region, "favourite_genres": []}
    assert api.write("PATCH", f"/users/{user}", json={"regoin": "x"}).status_code == 422


def test_cache_hit_then_a_play_invalidates_it_and_shows_at_once(api: Api) -> None:
    u = known_user(api) + 1
    first = api.get(f"/homepage/{u}")
    again = api.get(f"/homepage/{u}")
    assert first.headers["x-cache"] == "miss" and again.headers["x-cache"] == "hit"
    assert again.json()["page_id"] == first.json()["page_id"]
    shown = [t["title_id"] for row in first.json()["rows"] for t in row["titles"]]
    title = shown[-1]
    r = api.write("POST", "/events", json={"user_id": u, "title_id": title, "kind": "play", "progress": 0.4})
    assert r.status_code == 202 and r.json() == {"accepted": 1, "duplicates": 0}
    after = api.get(f"/homepage/{u}")
    assert after.headers["x-cache"] == "miss"
    rows = after.json()["rows"]
    cw = [row for row in rows if row["ranker"] == "continue_watching"]
    assert cw and title in [t["title_id"] for t in cw[0]["titles"]]


def test_events_are_in_redis_when_acknowledged_and_retries_are_safe(api: Api) -> None:
    u = 900_000_002
    title = int(api.get("/homepage/1").json()["rows"][0]["titles"][0]["title_id"])
    ev = {"user_id": u, "title_id": title, "kind": "rating", "stars": 4.0, "ts": 1_790_000_000, "idempotency_key": f"k-{uuid.uuid4().hex}"}
    assert api.write("POST", "/events", json=ev).json() == {"accepted": 1, "duplicates": 0}
    assert api.write("POST", "/events", json=ev).json() == {"accepted": 0, "duplicates": 1}
    state = api.store.read_user_state(u, 1_800_000_000, _catalog(api))
    assert list(state.title_ids) == [title] and float(state.stars[0]) == 4.0
    batch = [{"user_id": u, "title_id": title, "kind": "impression", "ts": 1_790_000_100 + i} for i in range(300)]
    r = api.write("POST", "/events", json={"events": batch})
    assert r.status_code == 202 and r.json()["accepted"] == 300
    logged = [e for e in api.store.event_entries() if e[1] == u]
    assert len(logged) == 301


def _catalog(api: Api) -> Any:
    from homepage.bundle import load_bundle

    with tempfile.TemporaryDirectory() as unpacked:  # not under the checkout: the url back end's embedded_dir is relative
        return load_bundle(api.store.materialize_bundle(api.version, Path(unpacked))).catalog


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": -1, "title_id": 1, "kind": "play"}, "user_id"),
        ({"user_id": 1, "title_id": 1, "kind": "watch"}, "kind"),
        ({"user_id": 1, "title_id": 1, "kind": "rating"}, "stars"),
        ({"user_id": 1, "title_id": 1, "kind": "play", "progress": 1.5}, "progress"),
        ({"user_id": 1, "title_id": 1, "kind": "play", "page_id": "a b"}, "page_id"),
        ({"user_id": 1, "title_id": 1, "kind": "play", "colour": 1}, "colour"),
        ({"user_id": 1, "title_id": 1, "kind": "impression", "ts": 24937696982}, "ts"),  # found by the fuzzer
        ({"events": [{"user_id": 1, "title_id": 1, "kind": "play", "ts": 2**39}]}, "events.0.ts"),
        ({"events": []}, "events"),
        ({"events": [{"user_id": 1, "title_id": 1, "kind": "play"}] * 1001}, "events"),
        # ids are JSON integers: a client's bool, string or float is refused, not read as user or title 1, 1500
        ({"user_id": True, "title_id": 1, "kind": "play"}, "user_id"),
        ({"user_id": "1500", "title_id": 1, "kind": "play"}, "user_id"),
        ({"user_id": 1500.0, "title_id": 1, "kind": "play"}, "user_id"),
        ({"user_id": 1, "title_id": True, "kind": "play"}, "title_id"),
        ({"events": [{"user_id": 1, "title_id": "7", "kind": "play"}]}, "events.0.title_id"),
        ({"user_id": 1, "title_id": 1, "kind": "play", "ts": "1790000000"}, "ts"),
        ({"user_id": 1, "title_id": 1, "kind": "click", "row_index": 1.0}, "row_index"),
        ({"user_id": 1, "title_id": 1, "kind": "play", "progress": "0.5"}, "progress"),
    ],
)
def test_bad_events_are_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    r = api.write("POST", "/events", json=body)
    assert r.status_code == 422, r.text
    assert field in r.text
    assert "Traceback" not in r.text


def test_malformed_json_and_long_error_lists_say_so(api: Api) -> None:
    r = api.client.post("/events", content=b'{"user_id": 1,, }', headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body" and "malformed JSON at character 14" in r.json()["detail"], r.text
    # what the JSON parser refuses by raising something else than a syntax error is named too
    for content, why in (
        (b'{"user_id": 1, "title_id": 1, "kind": "pl\xffy"}', "not UTF-8 (byte 41)"),  # the 0xff
        (b"[" * 100_000, "nested too deeply"),
        (b'{"user_id": ' + b"9" * 5000 + b', "title_id": 1, "kind": "play"}', "a number with too many digits"),
    ):
        r = api.client.post("/events", content=content, headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
        assert r.status_code == 422 and r.json()["errors"] == [{"field": "body", "message": f"malformed JSON: {why}"}], r.text
    batch = [{"user_id": -1, "title_id": 1, "kind": "play"}] * 30
    r = api.write("POST", "/events", json={"events": batch})
    assert r.status_code == 422 and len(r.json()["errors"]) == 20 and r.json()["errors_omitted"] == 10


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/homepage/abc", "user_id"),
        ("/homepage/1.0", "user_id"),  # not user 1
        ("/homepage/+1", "user_id"),
        ("/homepage/%201", "user_id"),
        ("/homepage/1?rows=0", "rows"),
        ("/homepage/1?rows=", "rows"),
        ("/homepage/1?rows=2.5", "rows"),
        ("/homepage/1?cols=51", "cols"),
        ("/homepage/1?device=T%20V", "device"),
        ("/homepage/1?region=" + "x" * 40, "region"),
        ("/homepage/1?explain=maybe", "explain"),
        ("/homepage/1?rows=3&rows=0", "rows"),  # the last of repeated parameters counts, as everywhere in Starlette
    ],
)
def test_bad_page_parameters_are_422_naming_the_field(api: Api, path: str, field: str) -> None:
    r = api.get(path)
    assert r.status_code == 422 and r.json()["detail"].startswith(field), r.text
    assert r.json()["errors"][0]["field"] == field


def test_page_parameters_parse_like_declared_query_parameters(api: Api) -> None:
    """The route parses its query in one pass: values, percent-encoding, repeats and unknown names behave as FastAPI's."""
    page = api.get("/homepage/1?rows=0&rows=3&cols=4&device=tv&region=%55S&explain=yes&utm_source=mail").json()
    assert page["request"]["rows"] == 3 and page["request"]["cols"] == 4
    assert page["request"]["device"] == "tv" and page["request"]["region"] == "US"
    assert 1 <= len(page["rows"]) <= 3 and all(len(r["titles"]) <= 4 for r in page["rows"])
    assert all("features" in r for r in page["rows"])  # explain=yes is true
    assert [r["stage"] for r in page["rows"]] == list(range(len(page["rows"])))  # rows in the order they were placed
    assert all("forced_by" in r and (r["forced_by"] is None or isinstance(r["forced_by"], str)) for r in page["rows"])
    plain = api.get("/homepage/1").json()
    assert plain["request"]["rows"] == 10 and plain["request"]["cols"] == 10 and plain["request"]["device"] is None
    assert not any("features" in r or "stage" in r or "forced_by" in r for r in plain["rows"])
    params = {p["name"]: p for p in api.client.get("/openapi.json").json()["paths"]["/homepage/{user_id}"]["get"]["parameters"]}
    assert params["rows"]["in"] == "query" and params["rows"]["schema"]["maximum"] == 50 and params["explain"]["schema"]["type"] == "boolean"
    assert params["user_id"]["in"] == "path"


def test_writes_need_the_api_key(api: Api) -> None:
    ev = {"user_id": 1, "title_id": 1, "kind": "impression"}
    assert api.client.post("/events", json=ev).status_code == 401
    wrong = api.client.post("/events", json=ev, headers={"X-API-Key": API_KEY[:-1] + "x"})
    assert wrong.status_code == 401 and API_KEY not in wrong.text
    assert api.client.delete("/users/1").status_code == 401
    assert api.client.post("/admin/reload").status_code == 401
    assert api.write("POST", "/events", json=ev).status_code == 202
    spec = api.client.get("/openapi.json").json()
    (scheme,) = spec["components"]["securitySchemes"].values()
    assert scheme == {"type": "apiKey", "in": "header", "name": "X-API-Key", "description": scheme["description"]}
    paths = spec["paths"]
    assert paths["/events"]["post"]["security"] and paths["/users/{user_id}"]["get"]["security"]
    assert "security" not in paths["/homepage/{user_id}"]["get"]  # reads of pages are open


def test_bodies_are_bounded(api: Api) -> None:
    body = b'{"events": [' + b" " * 300_000 + b"]}"
    r = api.client.post("/events", content=body, headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    assert r.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is found while the body streams in
        yield b'{"events": ['
        for _ in range(40):
            yield b" " * 100_000
        yield b"]}"

    r = api.client.post("/events", content=chunks(), headers={"Content-Type": "application/json", "X-API-Key": API_KEY})
    assert r.status_code == 413 and "larger than" in r.json()["detail"], r.text


def test_titles_and_similar(api: Api) -> None:
    page = api.get("/homepage/5").json()
    tid = page["rows"][0]["titles"][0]["title_id"]
    t = api.get(f"/titles/{tid}").json()
    assert t["title_id"] == tid and t["name"] and t["variants"]
    sim = api.get(f"/titles/{tid}/similar", params={"limit": 5}).json()
    assert 1 <= len(sim["similar"]) <= 5 and tid not in [s["title_id"] for s in sim["similar"]]
    assert api.get("/titles/99999999").status_code == 404


def test_health_and_metrics(api: Api) -> None:
    assert api.get("/health/live").status_code == 200
    ready = api.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["store_version"] == api.version
    api.get("/homepage/7")
    api.get("/homepage/7")
    text = api.get("/metrics").text
    assert 'homepage_request_seconds_bucket{endpoint="/homepage/{user_id}"' in text
    assert "homepage_page_cache_hits_total" in text and 'homepage_rows_served_total{ranker="' in text
    assert "homepage_events_ingested_total" in text
    # state a dashboard can show per worker: the version served, readiness, Redis
    info = [line for line in text.splitlines() if line.startswith("homepage_serving_info{") and line.endswith(" 1.0")]
    assert len(info) == 1 and f'store_version="{api.version}"' in info[0] and 'policy="' in info[0], info
    assert "homepage_ready 1.0" in text and "homepage_redis_up 1.0" in text


def test_delete_user_erases_keys_and_stream_entries(api: Api) -> None:
    u = 900_000_003
    api.write("PUT", f"/users/{u}", json={"region": "EU"})
    api.write("POST", "/events", json={"user_id": u, "title_id": 1, "kind": "play", "progress": 0.5, "ts": 1_790_000_000})
    api.get(f"/homepage/{u}")
    r = api.write("DELETE", f"/users/{u}")
    assert r.status_code == 200 and r.json()["deleted"] >= 3
    assert not [e for e in api.store.event_entries() if e[1] == u]
    assert not [e for e in api.store.served_entries() if e[1] == u]
    assert api.store.read_user_state(u, 1_800_000_000, _catalog(api)).is_cold
    # a page whose write was in flight during the erasure, logged after it: the server's refresh erases it
    served = api.store.keys.served
    before = api.store.client.xinfo_stream(served)["last-generated-id"]
    api.store.page_served(u, "f", b"late", 60, '{"late": true}', api.version)
    assert api.store.client.xinfo_stream(served)["last-generated-id"] != before  # logged (the refresh may sweep it at once)

    def logged() -> int:
        return sum(1 for _, f in api.store.client.xrange(served) if f[b"u"] == str(u).encode())

    deadline = time.monotonic() + 5
    while logged() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logged() == 0


def test_new_version_is_picked_up_without_restart_and_rollback_returns(api: Api, serving_bundle: Path, recent_world: Path) -> None:
    import time

    v2 = publish_dataset(api.store, recent_world, models=serving_bundle).meta.version

    def served_version() -> str:
        return api.get("/homepage/11", params={"rows": 3}).json()["store_version"]

    deadline = time.monotonic() + 10
    while served_version() != v2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served_version() == v2
    assert api.store.rollback() == api.version
    r = api.write("POST", "/admin/reload")
    assert r.status_code == 200 and r.json()["store_version"] == api.version
    assert served_version() == api.version


def test_the_viewer_can_be_turned_off(api: Api, tmp_path: Path) -> None:
    """HOMEPAGE_VIEWER=0: the viewer's routes (they list active users and explain their pages) are not served; pages are."""
    with LiveServer(create_app(ServeSettings(viewer=False, models_dir=tmp_path), api.settings)) as srv:
        for path in ("/", "/viewer/users", "/viewer/page/11", "/viewer/config"):
            assert httpx.get(f"{srv.url}{path}").status_code == 404, path
        assert httpx.get(f"{srv.url}/homepage/11").status_code == 200
    with LiveServer(create_app(ServeSettings(models_dir=tmp_path), api.settings)) as srv:
        assert httpx.get(f"{srv.url}/viewer/config").status_code == 200  # on by default


def test_writes_are_refused_without_a_configured_key(api: Api, tmp_path: Path) -> None:
    serve = ServeSettings(api_key=None, dev_allow_writes=False, models_dir=tmp_path)
    with LiveServer(create_app(serve, api.settings)) as srv:
        r = httpx.post(f"{srv.url}/events", json={"user_id": 1, "title_id": 1, "kind": "impression"})
        assert r.status_code == 403 and "HOMEPAGE_API_KEY" in r.json()["detail"]


def test_served_pages_export_with_attributed_plays(api: Api, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from homepage.cli import _register, app
    from homepage.servedlogs.schema import read_served_logs
    from homepage.settings import get_settings

    u = 900_000_004
    page = api.get(f"/homepage/{u}", params={"rows": 3, "cols": 4}).json()
    row = page["rows"][1]
    title = row["titles"][2]
    play = {"user_id": u, "title_id": title["title_id"], "kind": "play", "progress": 0.9, "page_id": page["page_id"],
            "row_id": row["row_id"], "row_index": 1, "col_index": 2, "variant_id": title["variant_id"]}
    assert api.write("POST", "/events", json=play).status_code == 202
    monkeypatch.setenv("HOMEPAGE_KEY_PREFIX", api.settings.key_prefix)
    if api.settings.redis_url:
        monkeypatch.setenv("REDIS_URL", api.settings.redis_url)
    else:
        monkeypatch.delenv("REDIS_URL", raising=False)
        monkeypatch.setenv("HOMEPAGE_EMBEDDED_DIR", str(api.settings.embedded_dir))
    get_settings.cache_clear()
    try:
        _register()
        out = tmp_path / "served.parquet"
        res = CliRunner().invoke(app, ["logs", "export", "--out", str(out)])
        assert res.exit_code == 0, res.output
    finally:
        get_settings.cache_clear()
    logs = read_served_logs(out)
    mine = logs[logs["page_id"] == page["page_id"]]
    assert len(mine) == sum(len(r["titles"]) for r in page["rows"])
    played = mine[mine["played"] == 1]
    assert played[["row_index", "col_index", "title_id"]].values.tolist() == [[1, 2, title["title_id"]]]


def test_homepage_serve_command_serves_the_published_version(api: Api, tmp_path: Path) -> None:
    import os
    import shutil
    import subprocess
    import time

    from redis_fixtures import free_port

    port = free_port()
    env = {**os.environ, "HOMEPAGE_KEY_PREFIX": api.settings.key_prefix, "HOMEPAGE_MODELS_DIR": str(tmp_path), "OPENBLAS_NUM_THREADS": "1"}
    if api.settings.redis_url:
        env["REDIS_URL"] = api.settings.redis_url
    else:
        env.pop("REDIS_URL", None)
        env["HOMEPAGE_EMBEDDED_DIR"] = str(api.settings.embedded_dir)
    exe = shutil.which("homepage") or str(Path(__import__("sys").executable).parent / "homepage")
    proc = subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() >= deadline:
                proc.kill()
                raise AssertionError(f"homepage serve did not become ready (exit {proc.poll()}): {proc.communicate()[1].decode()[-3000:]}")
            time.sleep(0.1)
        page = httpx.get(f"http://127.0.0.1:{port}/homepage/42", timeout=10).json()
        assert page["store_version"] == api.store.active_version() and page["rows"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)


_SWITCH_VERSIONS = """
from homepage.metrics import ServingMetrics
m = ServingMetrics()
for v in range(12):  # publishes and rollbacks
    m.set_state((f"s{v}", f"m{v % 3}", "stage-wise"), True, True)
print(m.render().decode())
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_serving_info_keeps_one_series_per_worker_through_version_switches(tmp_path: Path, workers: int) -> None:
    """A long-running worker follows many publishes and rollbacks: each left a series at 0 behind (53 after
    36 switches on two workers), so /metrics and every scrape grew for as long as the worker ran."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if workers > 1:  # as `homepage serve --workers N` runs them: values in memory-mapped files, merged by `render`
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-W", "always::UserWarning", "-c", _SWITCH_VERSIONS], env=env, capture_output=True, text=True, check=True)
    info = [ln for ln in run.stdout.splitlines() if ln.startswith("homepage_serving_info{")]
    assert len(info) == 1 and 'store_version="s11"' in info[0] and info[0].endswith(" 1.0"), info
    # nothing on stderr: with several workers prometheus_client's "Removal of labels has not been implemented
    # in multi-process mode" went there as two raw lines at each switch, past the log format (JSON lines)
    assert run.stderr == "", run.stderr[-500:]
