"""What the API tells a client about bad or unusual input, over real HTTP (uvicorn, embedded Redis).

Unknown page devices and profile genres are a 422 listing the known ones, an unknown region is a note on the page;
echoed input in error bodies is bounded; key-protected routes check the key before the body.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from pydantic import ValidationError
from redis_fixtures import live_api_on_embedded

from homepage.api.schemas import ProfileIn
from homepage.pagebuilder.features import DEVICES

API_KEY = "errors-" + uuid.uuid4().hex
KEY = {"X-API-Key": API_KEY}
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def http(request: pytest.FixtureRequest, serving_bundle: Path, recent_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A live server on the embedded Redis serving the small world; the client sends no key by itself."""
    with live_api_on_embedded(request, recent_world, serving_bundle, tmp_path_factory.mktemp("unpacked"), API_KEY) as (srv, _):
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            yield c


@pytest.fixture(scope="module")
def region(recent_world: Path) -> str:
    """A region of the world's users (the world has regional counters for it)."""
    return str(pd.read_parquet(recent_world / "users.parquet")["region"].dropna().iloc[0])


# ------------------------------------------------------------------ device and region of a page request
@pytest.mark.parametrize("path", ["/homepage/1?device=toaster", "/homepage/1?device=tv&device=phone", "/viewer/page/1?device=toaster"])
def test_an_unknown_device_is_a_422_listing_the_known_ones(http: httpx.Client, path: str) -> None:
    r = http.get(path)
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "device" and all(repr(d) in error["message"] for d in DEVICES), r.text


def test_known_devices_and_no_device_are_served_and_the_schema_lists_them(http: httpx.Client) -> None:
    for query in [*(f"?device={d}" for d in DEVICES), ""]:
        assert http.get(f"/homepage/1{query}").status_code == 200, query
    params = {p["name"]: p for p in http.get("/openapi.json").json()["paths"]["/homepage/{user_id}"]["get"]["parameters"]}
    # a query parameter is left out, never null: its schema is the enum itself (no anyOf with null)
    schema = params["device"]["schema"]
    assert schema["enum"] == list(DEVICES) and schema["type"] == "string" and "anyOf" not in schema


def test_an_unknown_region_is_served_with_a_note_saying_so(http: httpx.Client, region: str) -> None:
    page = http.get("/homepage/1", params={"region": "ZZ"}).json()
    assert page["request"]["region"] == "ZZ"
    assert [n for n in page["notes"] if "region" in n] == ["region 'ZZ': no regional data here, so no regional rows"]
    again = http.get("/homepage/1", params={"region": "ZZ"})  # a cached page gets the note too
    assert again.headers["x-cache"] == "hit" and "region 'ZZ'" in " ".join(again.json()["notes"])
    known = http.get("/homepage/1", params={"region": region}).json()
    assert not any("region" in n for n in known["notes"])
    assert any(row["reason"]["region"] == region for row in known["rows"])


def test_a_profile_region_without_data_gets_the_note_too(http: httpx.Client, region: str) -> None:
    """The note was made for the request's region only; a stated region the world has no data for said nothing."""
    assert http.put("/users/4242", json={"region": "MARS", "favourite_genres": []}, headers=KEY).status_code == 200
    page = http.get("/homepage/4242").json()
    assert "region 'MARS': no regional data here, so no regional rows" in page["notes"]
    assert not any("region" in n for n in http.get("/homepage/4242", params={"region": region}).json()["notes"])


# ------------------------------------------------------------------ favourite genres of a profile
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_an_unknown_favourite_genre_is_a_422_listing_the_catalogs_genres(http: httpx.Client, recent_world: Path, method: str) -> None:
    """It said only "unknown genre 'comedy'": no endpoint lists the genres, so a client could not learn the spelling."""
    genres = sorted({g for gs in pd.read_parquet(recent_world / "titles.parquet")["genres"] for g in gs})
    assert "Comedy" in genres and "Science Fiction" not in genres
    r = http.request(method, "/users/4243", json={"favourite_genres": ["Drama", "comedy", "Science Fiction"]}, headers=KEY)
    assert r.status_code == 422, r.text
    first, second = r.json()["errors"]
    assert first["field"] == "favourite_genres.1" and first["message"].startswith("unknown genre 'comedy' (did you mean 'Comedy'?); the catalog's genres: ")
    assert second["field"] == "favourite_genres.2" and second["message"].startswith("unknown genre 'Science Fiction'; the catalog's genres: ")
    assert all(repr(g) in e["message"] for g in genres for e in (first, second)), r.text
    assert http.get("/users/4243", headers=KEY).status_code == 404  # nothing stored
    assert http.request(method, "/users/4243", json={"favourite_genres": ["Comedy"]}, headers=KEY).json()["favourite_genres"] == ["Comedy"]
    assert http.delete("/users/4243", headers=KEY).status_code == 200


@pytest.mark.parametrize("genre", ["Ciência-Ficção", "アニメ", "Film-Noir (Néo)"])
def test_a_favourite_genre_in_any_script_is_checked_against_the_catalog(http: httpx.Client, genre: str) -> None:
    """An ASCII-only pattern refused a catalog's 'Ciência-Ficção' before the catalog was asked: no profile could name it."""
    r = http.put("/users/4244", json={"favourite_genres": ["Drama", genre]}, headers=KEY)
    assert r.status_code == 422, r.text
    (error,) = r.json()["errors"]
    assert error["field"] == "favourite_genres.1" and error["message"].startswith(f"unknown genre {genre!r}; the catalog's genres: "), r.text
    assert ProfileIn(favourite_genres=[genre]).favourite_genres == [genre]  # a catalog holding it gets it stored


@pytest.mark.parametrize("genre", ["Drama\n", "Dra\x00ma", "Drama|Comedy", "<b>"])
def test_a_favourite_genre_with_control_characters_or_markup_is_still_refused_by_its_pattern(genre: str) -> None:
    with pytest.raises(ValidationError, match="should match pattern"):
        ProfileIn(favourite_genres=[genre])


# ------------------------------------------------------------------ echoed input is bounded
def test_the_viewers_422_does_not_echo_a_long_policy_back(http: httpx.Client) -> None:
    r = http.get("/viewer/page/1", params={"policy": "p" * 12_000})
    assert r.status_code == 422 and r.json()["detail"].startswith("policy: 'ppp"), r.text[:300]
    assert len(r.content) < 1_000 and "'… (11800 more characters) is not one of" in r.text


def test_error_bodies_bound_echoed_field_names(http: httpx.Client) -> None:
    r = http.post("/events", json={"user_id": 1, "title_id": 1, "kind": "play", "x" * 50_000: 1}, headers=KEY)
    assert r.status_code == 422 and len(r.content) < 2_000, r.text[:300]
    (error,) = r.json()["errors"]
    assert error["field"] == "x" * 200 + "… (49800 more characters)" and error["message"] == "Extra inputs are not permitted"


# ------------------------------------------------------------------ the key before the body
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/events"), ("PUT", "/users/1"), ("PATCH", "/users/1")]
)
def test_a_malformed_body_without_the_key_is_401_not_422(http: httpx.Client, method: str, path: str) -> None:
    bad = b'{"user_id": 1,, }'
    for headers in ({}, {"X-API-Key": API_KEY + "x"}):
        r = http.request(method, path, content=bad, headers={**JSON, **headers})
        assert r.status_code == 401 and r.json() == {"detail": "X-API-Key: missing or wrong"}, r.text
        assert r.headers["www-authenticate"] == "APIKey"
    r = http.request(method, path, content=bad, headers={**JSON, **KEY})  # with the key: the body's error
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "body"
    spec = http.get("/openapi.json").json()
    assert spec["paths"][path.replace("/1", "/{user_id}")][method.lower()]["security"] == [{"APIKeyHeader": []}]


@pytest.mark.parametrize(("method", "path"), [("POST", "/events/"), ("GET", "/homepage/1/"), ("GET", "/health/ready/")])
def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_host_header(http: httpx.Client, method: str, path: str) -> None:
    """A 307 built from the client's Host header sent a POST, with its X-API-Key, to wherever that header named."""
    r = http.request(method, path, headers={**KEY, "Host": "evil.example"}, json={"user_id": 1, "title_id": 10, "kind": "play"}, follow_redirects=False)
    assert r.status_code == 404 and "location" not in r.headers, (r.status_code, dict(r.headers))
