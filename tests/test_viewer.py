"""The homepage viewer: placeholder artwork, the viewer's JSON endpoints, and the page in headless Chromium.

The browser test drives Debian's ``/usr/bin/chromium`` with Playwright (no browser
download); it skips when Chromium or Playwright is missing, except in CI where it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from redis_fixtures import WORLD_SMALL, LiveServer, make_store

from homepage.api.app import create_app
from homepage.api.routes_viewer import ViewerSettings, _category, pick_samples, play_enabled, top_contributions
from homepage.api.settings import ServeSettings
from homepage.artwork_svg import placeholder_svg, variant_style
from homepage.domain import ArtworkVariant
from homepage.publish import publish_dataset
from homepage.settings import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SVG_NS = "{http://www.w3.org/2000/svg}"


# ------------------------------------------------------------------ placeholder artwork (pure)
def _texts(svg: str) -> list[str]:
    root = ET.fromstring(svg)
    return ["".join(t.itertext()) for t in root.iter(f"{SVG_NS}text")]


def test_placeholder_shows_title_year_and_emphasis_label() -> None:
    v = ArtworkVariant("7-1", 7, emphasis_genre="Horror", tone="dark")
    svg = placeholder_svg("The Thing", 1982, v)
    texts = _texts(svg)
    assert "The Thing" in texts and "1982" in texts and "Horror" in texts and "dark" in texts
    title = ET.fromstring(svg).find(f"{SVG_NS}title")
    assert title is not None and "The Thing (1982)" in (title.text or "")


def test_placeholder_escapes_markup_in_names() -> None:
    name = 'Tom & Jerry <script>alert("x")</script>'
    svg = placeholder_svg(name, None, ArtworkVariant("1-0", 1))
    assert "<script" not in svg
    root = ET.fromstring(svg)  # well-formed despite the name
    assert all(el.tag.startswith(SVG_NS) for el in root.iter())
    assert "Tom & Jerry" in " ".join(_texts(svg))


@pytest.mark.parametrize(
    ("name", "lines"),
    [
        # a combining accent stays on its letter: a line began with a lone U+0301
        ("Cafe\u0301" * 6, ["Cafe\u0301Cafe\u0301Cafe\u0301Cafe\u0301", "Cafe\u0301Cafe\u0301"]),
        # a joined emoji is one glyph of two cells: it was cut after its zero-width joiner
        ("\U0001f469\u200d\U0001f467" * 9, ["\U0001f469\u200d\U0001f467" * 8, "\U0001f469\u200d\U0001f467"]),
        # CJK takes two cells a character: 16 of them ran 320 px wide on a 200 px poster
        ("千と千尋の神隠し千と千尋の神隠し", ["千と千尋の神隠し", "千と千尋の神隠し"]),
        ("الرسالة الرسالة (The Message)", ["الرسالة الرسالة", "(The Message)"]),
        ("A" * 80, ["A" * 16] * 3 + ["A" * 15 + "…"]),
    ],
)
def test_placeholder_title_wraps_by_display_width_never_inside_a_character(name: str, lines: list[str]) -> None:
    texts = _texts(placeholder_svg(name, None, ArtworkVariant("1-0", 1)))
    assert texts[1:-1] == lines  # between the tone and the label


def test_placeholder_drops_control_characters_xml_cannot_hold() -> None:
    v = ArtworkVariant("1-1", 1, emphasis_genre="Sci\x0cFi", tone="dark\x01")
    svg = placeholder_svg("Don\x01t Look\x1b Now", 1973, v)
    root = ET.fromstring(svg)  # was "not well-formed (invalid token)"
    assert _texts(svg) == ["dark", "Dont Look Now", "1973", "Sci Fi"]  # \x0c is a space
    assert root.find(f"{SVG_NS}title") is not None


def test_emphasis_is_shown_by_colour_and_label() -> None:
    genres = [variant_style(ArtworkVariant(f"1-{i}", 1, emphasis_genre=g)) for i, g in enumerate(["Action", "Comedy", "Horror", "Sci-Fi"])]
    assert len({s.hue for s in genres}) == 4 and [s.label for s in genres] == ["Action", "Comedy", "Horror", "Sci-Fi"]
    cast = variant_style(ArtworkVariant("1-5", 1, featured_cast="Actor 0054"))
    assert cast.kind == "cast" and "Actor 0054" in cast.label
    neutral = variant_style(ArtworkVariant("1-0", 1))
    assert neutral.kind == "neutral" and neutral.saturation <= 12
    dark = variant_style(ArtworkVariant("1-6", 1, emphasis_genre="Drama", tone="dark"))
    bright = variant_style(ArtworkVariant("1-7", 1, emphasis_genre="Drama", tone="bright"))
    assert dark.hue == bright.hue and dark.lightness < bright.lightness and dark.text != bright.text
    long = placeholder_svg("A " * 60, 2000, ArtworkVariant("1-8", 1, featured_cast="Actor 0001"))
    assert len(_texts(long)) <= 4 + 3  # at most four title lines, year, tone, label


# ------------------------------------------------------------------ pure helpers of the router
def test_pick_samples_heaviest_and_lightest_active_user() -> None:
    assert pick_samples({5: 3, 9: 40, 2: 0, 7: 40, 1: 3}) == [("heavy", 7, 40), ("light", 1, 3)]
    assert pick_samples({4: 2}) == [("heavy", 4, 2)]
    assert pick_samples({4: 0}) == []


@pytest.mark.parametrize(
    ("dev", "key", "enabled"),
    [(False, None, False), (True, None, True), (True, "k" * 16, False), (False, "k" * 16, False)],
)
def test_click_to_play_only_in_development_mode_without_a_key(dev: bool, key: str | None, enabled: bool) -> None:
    assert play_enabled(ServeSettings(dev_allow_writes=dev, api_key=key)) is enabled


@pytest.mark.parametrize(("vocab", "code", "name"), [(("a", "b"), 1.0, "b"), (("a", "b"), 2.0, None), (("a", "b"), -1.0, None), (("a", "b"), 0.5, None), (None, 0.0, None), (("a",), None, None)])
def test_categorical_codes_are_named(vocab: tuple[str, ...] | None, code: float | None, name: str | None) -> None:
    assert _category(vocab, code) == name


def test_top_contributions_are_shap_values_that_sum_to_the_score() -> None:
    from homepage.pagebuilder.features import FEATURE_NAMES
    from homepage.pagebuilder.model import PageModel

    rng = np.random.default_rng(3)
    n_groups, per = 40, 6
    X = rng.normal(size=(n_groups * per, len(FEATURE_NAMES)))
    for c in ("ranker", "reason_kind", "device"):
        X[:, FEATURE_NAMES.index(c)] = rng.integers(0, 3, len(X))
    y = (X[:, FEATURE_NAMES.index("pers_mean")] > 0.3).astype(int) + (X[:, FEATURE_NAMES.index("pop_mean")] > 1).astype(int)
    params = {"min_data_in_leaf": 5, "num_threads": 1}
    model = PageModel.fit(X, y, np.full(n_groups, per), ("a", "b", "c"), ("x", "y", "z"), num_rounds=20, params=params)
    rows = [dict(zip(FEATURE_NAMES, x.tolist())) for x in X[:5]]
    rows[1]["fresh_mean"] = None  # explain output carries missing values as null
    top = top_contributions(model, rows, k=4)
    assert len(top) == 5 and all(len(t) == 4 for t in top)
    Xr = np.array([[np.nan if r[n] is None else r[n] for n in FEATURE_NAMES] for r in rows], dtype=float)[:, model.columns]
    full = np.asarray(model.booster.predict(Xr, pred_contrib=True))
    pred = model.booster.predict(Xr)
    assert np.allclose(full.sum(axis=1), pred, atol=1e-6)
    for i, t in enumerate(top):
        mags = [abs(c.contribution) for c in t]
        assert mags == sorted(mags, reverse=True)
        assert mags[0] == pytest.approx(np.abs(full[i, :-1]).max(), abs=1e-5)
        for c in t:
            assert c.value is None or c.value == pytest.approx(rows[i][c.name])
            if c.name == "ranker":
                assert c.category == ("a", "b", "c")[int(rows[i]["ranker"])]
            elif c.name not in ("reason_kind", "device"):
                assert c.category is None
    assert "pers_mean" in {c.name for t in top for c in t}  # the feature the labels depend on


# ------------------------------------------------------------------ the live service (embedded Redis, development mode)
@dataclass
class Viewer:
    url: str
    http: httpx.Client
    user: int  # a user with history
    app: Any
    store: Any


@pytest.fixture(scope="module")
def viewer(request: pytest.FixtureRequest, serving_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    """The small world published to the embedded Redis, served by a live uvicorn in development mode."""
    import pandas as pd

    emb = request.getfixturevalue("embedded_redis")
    client = request.getfixturevalue("embedded_client")
    settings = Settings(redis_url=None, key_prefix=f"t{uuid.uuid4().hex[:10]}", embedded_dir=emb.data_dir)
    store = make_store(client, settings)
    publish_dataset(store, WORLD_SMALL, models=serving_bundle)
    serve = ServeSettings(
        api_key=None,
        dev_allow_writes=True,
        deadline_ms=5000,
        refresh_seconds=0.3,
        models_dir=tmp_path_factory.mktemp("unpacked"),
    )
    app = create_app(serve, settings)
    app.state.viewer_settings = ViewerSettings(sample_size=100)
    user = int(pd.read_parquet(WORLD_SMALL / "users.parquet")["user_id"].iloc[5])
    try:
        with LiveServer(app) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
            yield Viewer(srv.url, http, user, app, store)
    finally:
        keys = list(client.scan_iter(match=f"{settings.key_prefix}:*", count=1000))
        for i in range(0, len(keys), 500):
            client.unlink(*keys[i : i + 500])


def test_artwork_endpoint_serves_each_variant_and_404s_unknown_ones(viewer: Viewer) -> None:
    card = viewer.http.get(f"/homepage/{viewer.user}").json()["rows"][0]["titles"][0]
    info = viewer.http.get(f"/titles/{card['title_id']}").json()
    bodies = set()
    for v in info["variants"]:
        r = viewer.http.get(f"/artwork/{card['title_id']}/{v['variant_id']}.svg")
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
        assert info["name"][:10] in r.text and "script" not in r.headers["content-security-policy"]
        bodies.add(r.text)
    assert len(bodies) == len(info["variants"]) >= 2  # every variant looks different
    assert viewer.http.get(f"/artwork/{card['title_id']}/no-such.svg").status_code == 404
    assert viewer.http.get("/artwork/987654321/1-0.svg").status_code == 404
    assert viewer.http.get(f"/artwork/{card['title_id']}/default.svg").status_code == 404  # it has variants


def test_viewer_serves_its_page_and_assets(viewer: Viewer) -> None:
    r = viewer.http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<h1>Homepage viewer</h1>" in r.text and "script-src 'self'" in r.headers["content-security-policy"]
    for name in re.findall(r'/viewer/static/([\w.]+)', r.text):
        assert viewer.http.get(f"/viewer/static/{name}").status_code == 200
    assert viewer.http.get("/viewer/static/app.py").status_code == 404


def test_viewer_config_and_sample_users(viewer: Viewer) -> None:
    cfg = viewer.http.get("/viewer/config").json()
    assert cfg["play_enabled"] is True and cfg["default_policy"] in cfg["policies"]
    assert "template" in cfg["policies"] and "stage-wise" not in cfg["policies"]  # the test bundle has no page model
    samples = {s["label"]: s for s in viewer.http.get("/viewer/users").json()["samples"]}
    assert set(samples) == {"heavy", "light", "cold-start"}
    assert samples["heavy"]["events"] >= samples["light"]["events"] > 0 and samples["cold-start"]["events"] == 0
    cold = viewer.http.get(f"/viewer/page/{samples['cold-start']['user_id']}").json()
    assert not any(r["ranker"] == "continue_watching" for r in cold["rows"])


def test_external_images_only_when_configured(viewer: Viewer) -> None:
    assert viewer.http.get("/viewer/config").json()["external_images"] is False
    assert "img-src 'self';" in viewer.http.get("/").headers["content-security-policy"]
    before = viewer.app.state.viewer_settings
    viewer.app.state.viewer_settings = ViewerSettings(external_images=True)
    try:
        assert viewer.http.get("/viewer/config").json()["external_images"] is True
        assert "img-src 'self' https:;" in viewer.http.get("/").headers["content-security-policy"]
    finally:
        viewer.app.state.viewer_settings = before


def test_viewer_pages_are_not_logged_as_served(viewer: Viewer) -> None:
    """Looking at a page in the viewer is not an impression: no served-log entry, no cache entry."""
    u = viewer.user + 7
    before = len(viewer.store.served_entries())
    for policy in ("template", "row-ranking"):
        assert viewer.http.get(f"/viewer/page/{u}", params={"policy": policy}).status_code == 200
    assert len(viewer.store.served_entries()) == before
    assert viewer.http.get(f"/homepage/{u}").headers["x-cache"] == "miss"
    assert len(viewer.store.served_entries()) == before + 1  # the API's page is logged (the check can fail)


def test_viewer_page_for_a_policy_with_explain_data(viewer: Viewer) -> None:
    served = viewer.http.get(f"/homepage/{viewer.user}", params={"explain": True}).json()
    page = viewer.http.get(f"/viewer/page/{viewer.user}").json()
    assert page["policy"] == served["policy"] and page["top_features"] is None  # no page model in the test bundle
    assert [r["row_id"] for r in page["rows"]] == [r["row_id"] for r in served["rows"]]  # the same build_page, same state
    stages = [r["features"]["stage"] for r in page["rows"]]
    assert stages == list(range(len(stages)))
    tpl = viewer.http.get(f"/viewer/page/{viewer.user}", params={"policy": "template"}).json()
    assert tpl["policy"] == "template" and tpl["rows"]
    for bad in ("stage-wise", "no-such-policy"):
        r = viewer.http.get(f"/viewer/page/{viewer.user}", params={"policy": bad})
        assert r.status_code == 422 and r.json()["detail"].startswith("policy:")


# ------------------------------------------------------------------ the page in headless Chromium
def _browser() -> Any:
    """Playwright's Chromium on Debian's binary, or a skip (a failure in CI) naming what is missing."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    missing = None
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        missing = f"{CHROMIUM} not found: install Debian's chromium package (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "playwright is not installed (pip install playwright; no `playwright install` needed)"
    if missing:
        if in_ci:
            pytest.fail(missing + " (CI=true: the browser test must run)")
        pytest.skip(missing)
    return sync_playwright


def _card_ids(page: Any, selector: str) -> list[int]:
    return [int(x) for x in page.eval_on_selector_all(selector, "els => els.map(e => e.dataset.titleId)")]


def _watching_user(viewer: Viewer) -> int:
    """A user of the small world whose page has a continue-watching row (the row needs four titles)."""
    import pandas as pd

    for u in pd.read_parquet(WORLD_SMALL / "users.parquet")["user_id"].head(60):
        rows = viewer.http.get(f"/viewer/page/{int(u)}").json()["rows"]
        if any(r["ranker"] == "continue_watching" for r in rows):
            return int(u)
    pytest.fail("no user with a continue-watching row among the first 60 of the small world")


@dataclass
class Chromium:
    browser: Any
    home: Path  # the HOME chromium ran with


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    """Debian's Chromium under Playwright, once per module, with a HOME of its own."""
    sync_playwright = _browser()
    exe = str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium"))
    # its own HOME: chromium writes crash-report settings and dconf state there, which on a
    # developer's machine is their real browser profile
    home = tmp_path_factory.mktemp("chromium-home")
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_CACHE_HOME": str(home / ".cache")}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, env=env)
        try:
            yield Chromium(browser, home)
        finally:
            browser.close()


@dataclass
class Tab:
    page: Any
    errors: list[str]  # uncaught exceptions and console errors (failed loads, CSP violations)


@pytest.fixture
def tab(chromium: Chromium) -> Iterator[Tab]:
    """A fresh browser tab that records errors; closed afterwards."""
    page = chromium.browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    try:
        yield Tab(page, errors)
    finally:
        page.close()


def test_viewer_in_headless_chromium(viewer: Viewer, chromium: Chromium, tmp_path: Path) -> None:
    page = chromium.browser.new_page(viewport={"width": 1400, "height": 900})
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(viewer.url + "/")

    # pick the heavy sample user: rows with headings, cards with loaded artwork and alt text
    page.click("button.sample[data-label='heavy']")
    page.wait_for_selector(".row .card img")
    rows = page.locator(".page .row")
    assert rows.count() >= 3
    headings = page.locator(".row h3").all_inner_texts()
    assert all(h.strip() for h in headings) and len(set(headings)) == len(headings)
    assert page.locator(".row").first.locator(".card").count() >= 2
    alts = page.eval_on_selector_all(".card img", "els => els.map(e => e.alt)")
    assert alts and all(a.endswith("poster") and len(a) > len(" poster") for a in alts)
    page.wait_for_function("() => { const i = document.querySelector('.card img'); return i.complete && i.naturalWidth > 0; }")
    scroll = page.eval_on_selector(".cards", "e => getComputedStyle(e).overflowX")
    assert scroll == "auto"
    assert page.locator("h1").inner_text() == "Homepage viewer" and page.locator("h2:visible").count() >= 1

    # explain: hidden, then per row the ranker, reason, stage and score; per card variant and propensity
    assert not page.locator(".explain-row").first.is_visible()
    page.check("#explain-toggle")
    first = page.locator(".explain-row").first
    assert first.is_visible()
    text = first.inner_text()
    ranker = page.locator(".row").first.get_attribute("data-ranker")
    assert ranker and ranker in text and "Stage" in text and "Reason" in text and "Score" in text
    assert re.search(r"variant \S+ · propensity", page.locator(".explain-card").first.inner_text())
    page.screenshot(path=str(tmp_path / "viewer.png"))
    if os.environ.get("VIEWER_SCREENSHOT"):
        page.screenshot(path=os.environ["VIEWER_SCREENSHOT"])

    # keyboard: arrows move focus along a row and down to the next row
    page.locator(".card[data-row='0'][data-col='0']").focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.col") == "1"
    page.keyboard.press("ArrowDown")
    assert page.evaluate("[document.activeElement.dataset.row, document.activeElement.tabIndex]") == ["1", 0]

    # compare two policies: a card is marked exactly when its title is missing from the other page
    page.check("#compare-toggle")
    page.select_option("#policy-b", "template")
    page.wait_for_function("() => document.querySelectorAll('.page').length === 2 && document.querySelectorAll('.page')[1].dataset.policy === 'template'")
    sides = [
        set(_card_ids(page, f".page:nth-of-type({i}) .card")) for i in (1, 2)
    ]
    for i in (1, 2):
        marked = set(_card_ids(page, f".page:nth-of-type({i}) .card.only-here"))
        assert marked == sides[i - 1] - sides[2 - i]
    page.screenshot(path=str(tmp_path / "viewer-compare.png"))
    page.uncheck("#compare-toggle")
    page.wait_for_function("() => document.querySelectorAll('.page').length === 1")

    # try it: a cold-start user plays a title and gets personalised rows at once
    page.click("button.sample[data-label='cold-start']")
    page.wait_for_function("() => document.querySelector('.page h2').textContent.includes('user 1000000')")
    cold_rankers = set(page.eval_on_selector_all(".row", "els => els.map(e => e.dataset.ranker)"))
    assert cold_rankers and "continue_watching" not in cold_rankers
    cold_headings = page.locator(".row h3").all_inner_texts()
    assert any(h.startswith("Popular ") for h in cold_headings) and not any("Top picks" in h for h in cold_headings)
    page.locator(".row").last.locator(".card").last.click()
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Recorded a play')")
    assert any("Top picks for you" in h for h in page.locator(".row h3").all_inner_texts())  # personal at once

    # ... and a user who is watching titles plays another: it joins their continue-watching row
    watcher = _watching_user(viewer)
    page.fill("#user-id", str(watcher))
    page.click("#user-form button[type=submit]")
    page.wait_for_function(f"() => document.querySelector('.page h2').textContent.endsWith('user {watcher}')")
    card = page.locator(".row").last.locator(".card").last
    title_id = int(card.get_attribute("data-title-id") or -1)
    assert title_id not in _card_ids(page, ".row[data-ranker='continue_watching'] .card")
    page.evaluate("document.getElementById('status').textContent = ''")
    card.click()
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Recorded a play')")
    assert title_id in _card_ids(page, ".row[data-ranker='continue_watching'] .card")
    assert page.evaluate("document.activeElement.dataset.titleId") == str(title_id)  # focus follows the played card
    page.screenshot(path=str(tmp_path / "viewer-after-play.png"))
    assert not errors, errors
    page.close()
    assert (tmp_path / "viewer.png").stat().st_size > 10_000
    assert (chromium.home / ".config" / "chromium").is_dir()  # the profile went to the test's HOME


def _samples(page: Any) -> dict[str, int]:
    """The sample users' ids by label, once the viewer has listed them."""
    page.wait_for_selector("button.sample[data-label='cold-start']")
    pairs = page.eval_on_selector_all("button.sample", "els => els.map(e => [e.dataset.label, e.dataset.userId])")
    return {label: int(u) for label, u in pairs}


def _shown_user(page: Any) -> str:
    return page.evaluate("[...document.querySelectorAll('.page h2')].map(h => h.textContent).join(' | ')")


def test_a_late_page_does_not_replace_the_user_picked_last(viewer: Viewer, tab: Tab) -> None:
    """Heavy, then light picked at once: the heavy page arriving last is dropped, not shown under the light user's id."""
    page = tab.page
    page.goto(viewer.url + "/")
    users = _samples(page)
    held: list[Any] = []
    page.route(f"**/viewer/page/{users['heavy']}?*", lambda route: held.append(route))
    page.click("button.sample[data-label='heavy']")
    for _ in range(200):  # the route handler runs while Playwright waits
        if held:
            break
        page.wait_for_timeout(25)
    assert held, "the heavy user's page was never requested"
    page.click("button.sample[data-label='light']")
    page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {users['light']}:')")
    with page.expect_response(f"**/viewer/page/{users['heavy']}?*"):
        held[0].continue_()
    page.wait_for_timeout(500)  # let the late answer reach the page (it is dropped at once with the fix)
    assert _shown_user(page).endswith(f"user {users['light']}")
    assert page.input_value("#user-id") == str(users["light"]) and f"user={users['light']}" in page.url
    assert page.locator("#status").inner_text().startswith(f"User {users['light']}:")


def test_a_failed_page_is_named_and_leaves_no_stale_page(viewer: Viewer, tab: Tab) -> None:
    """A 503 or a 422 (an id typed out of range) is shown with its reason; the previous user's page goes, the UI still works."""
    page = tab.page
    page.goto(viewer.url + "/")
    users = _samples(page)
    page.click("button.sample[data-label='heavy']")
    page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {users['heavy']}:')")
    detail = "the loaded version is not in Redis (restarted empty?): publish again"
    route = f"**/viewer/page/{users['light']}?*"
    page.route(route, lambda r: r.fulfill(status=503, content_type="application/json", body=json.dumps({"detail": detail})))
    page.click("button.sample[data-label='light']")
    page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Could not load')")
    assert f"503 {detail}" in page.locator("#status").inner_text()
    assert page.locator(".page").count() == 0, _shown_user(page)  # not the heavy user's page under the light user's id
    page.unroute(route)
    page.fill("#user-id", "99999999999999999999")
    page.press("#user-id", "Enter")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('422')")
    assert "user_id:" in page.locator("#status").inner_text() and page.locator(".page").count() == 0
    page.click("button.sample[data-label='light']")  # still usable once the service answers
    page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {users['light']}:')")
    assert _shown_user(page).endswith(f"user {users['light']}")


def test_an_external_image_that_fails_shows_the_placeholder(viewer: Viewer, tab: Tab) -> None:
    """With external images on, a poster URL that 404s falls back to the variant's placeholder, not a broken image."""
    page = tab.page
    before = viewer.app.state.viewer_settings
    viewer.app.state.viewer_settings = ViewerSettings(sample_size=100, external_images=True)
    broken = "https://images.example/poster-missing.jpg"

    def with_external_urls(route: Any) -> None:
        body = route.fetch().json()
        for row in body["rows"]:
            for card in row["titles"]:
                card["image_url"] = broken
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    try:
        page.route("**/viewer/page/**", with_external_urls)
        page.route("https://images.example/**", lambda r: r.fulfill(status=404, body="not found"))
        page.goto(viewer.url + "/")
        page.click("button.sample[data-label='heavy']")
        page.wait_for_selector(".row .card img")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.card img')].slice(0, 4).every(i => i.complete && i.naturalWidth > 0)"
        )
        srcs = page.eval_on_selector_all(".card img", "els => els.slice(0, 4).map(e => e.getAttribute('src'))")
        assert srcs and all(s.startswith("/artwork/") and s.endswith(".svg") for s in srcs), srcs
    finally:
        viewer.app.state.viewer_settings = before


def test_a_right_to_left_title_is_laid_out_right_to_left(viewer: Viewer, tab: Tab) -> None:
    """A long Hebrew title ran left to right in its card: the ellipsis cut off its first words, not its last."""
    page = tab.page
    hebrew = "הסיפור הארוך מאוד של הכפר הקטן בהרים"

    def with_hebrew_title(route: Any) -> None:
        body = route.fetch().json()
        body["rows"][0]["titles"][0]["name"] = hebrew
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/viewer/page/**", with_hebrew_title)
    page.goto(viewer.url + "/")
    page.click("button.sample[data-label='heavy']")
    page.wait_for_selector(".row .card .card-title")
    first, second = page.eval_on_selector_all(
        ".row .card .card-title",
        "els => els.slice(0, 2).map(e => { const s = getComputedStyle(e); return [e.textContent, s.direction, s.textAlign, e.scrollWidth > e.clientWidth]; })",
    )
    assert first[0].startswith(hebrew) and first[1:] == ["rtl", "start", True], first
    assert second[1] == "ltr", second  # an English title stays left to right
    assert not tab.errors


def test_back_and_forward_return_to_the_users_and_policies_shown(viewer: Viewer, tab: Tab) -> None:
    """Each user, policy or compare picked is a history entry: Back shows the previous view, with its controls."""
    page = tab.page
    page.goto(viewer.url + "/")
    users = _samples(page)
    default = page.input_value("#policy-a")

    def shown(user: int, policy: str) -> None:
        page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {user}: ') && document.getElementById('status').textContent.includes('({policy})')")
        assert _shown_user(page) == f"{policy} page for user {user}"
        assert page.input_value("#user-id") == str(user) and page.input_value("#policy-a") == policy
        assert f"user={user}&policy={policy}" in page.url

    page.click("button.sample[data-label='heavy']")
    shown(users["heavy"], default)
    page.click("button.sample[data-label='light']")
    shown(users["light"], default)
    page.select_option("#policy-a", "template")
    shown(users["light"], "template")
    page.go_back()
    shown(users["light"], default)
    page.go_back()
    shown(users["heavy"], default)
    page.go_forward()
    shown(users["light"], default)
    page.go_back()
    page.go_back()  # the viewer as first opened: no user
    page.wait_for_function("() => document.getElementById('status').textContent.endsWith('pick a user.')")
    assert page.locator(".page").count() == 0 and page.input_value("#user-id") == ""


OVERFLOW_JS = """() => {
  const W = document.documentElement.clientWidth;
  const out = [];
  for (const e of document.querySelectorAll('body *')) {
    const r = e.getBoundingClientRect();
    if (!r.width || e.closest('.cards') || e.closest('.visually-hidden') || e.classList.contains('skip')) continue;
    const box = e.closest('.page') || document.body;  // compare columns must not spill into each other
    const right = Math.min(W, box.getBoundingClientRect().right);
    if (r.right > right + 1 || r.left < -1) out.push(`${e.tagName}.${e.className} ${Math.round(r.left)}..${Math.round(r.right)} of ${Math.round(right)}`);
  }
  return [document.documentElement.scrollWidth, W, out.slice(0, 6)];
}"""


@pytest.mark.parametrize("query", ["explain=1", "compare=template&explain=1"])
def test_viewer_reflows_at_320_css_pixels(viewer: Viewer, tab: Tab, query: str) -> None:
    """At 320 px (a phone, or 400% zoom of 1280) nothing but a row of cards scrolls sideways, nothing is cut off."""
    page = tab.page
    page.set_viewport_size({"width": 320, "height": 800})
    page.goto(f"{viewer.url}/?user={viewer.user}&policy=row-ranking&{query}")
    page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {viewer.user}:')")
    assert page.locator(".page").count() == (2 if "compare" in query else 1)
    scroll_width, width, spilled = page.evaluate(OVERFLOW_JS)
    assert scroll_width <= width and not spilled, (scroll_width, width, spilled)
    assert page.locator("#policy-b").is_visible() and page.locator(".explain-row").first.is_visible()


def test_viewer_console_is_free_of_errors(viewer: Viewer, tab: Tab) -> None:
    """Opening the viewer and a page logs no error: no failed load (the icon included), no CSP violation."""
    page = tab.page
    page.goto(f"{viewer.url}/?user={viewer.user}&policy=row-ranking&explain=1")
    page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {viewer.user}:')")
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => [...document.querySelectorAll('.card img')].slice(0, 4).every(i => i.complete && i.naturalWidth > 0)")
    assert not tab.errors, tab.errors
    assert page.evaluate("document.querySelector('link[rel=icon]').href").endswith("/viewer/static/favicon.svg")


def test_viewer_waits_for_a_service_that_is_starting(viewer: Viewer, tab: Tab) -> None:
    """A 503 from /viewer/config (no version loaded yet) is shown and asked again; the viewer then works."""
    page = tab.page
    answers: list[int] = []

    def starting(route: Any) -> None:
        if not answers:
            answers.append(503)
            route.fulfill(status=503, content_type="application/json", headers={"Retry-After": "1"}, body=json.dumps({"detail": "model not loaded yet"}))
        else:
            answers.append(200)
            route.continue_()

    page.route("**/viewer/config", starting)
    page.goto(viewer.url + "/")
    page.wait_for_function("() => document.getElementById('status').textContent.endsWith('pick a user.')", timeout=15_000)
    assert answers == [503, 200]
    users = _samples(page)
    page.click("button.sample[data-label='light']")
    page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {users['light']}:')")
    assert _shown_user(page).endswith(f"user {users['light']}")


def _ax_buttons(page: Any) -> dict[str, str]:
    """Chromium's accessibility tree (what a screen reader gets): each card button's name -> description."""
    cdp = page.context.new_cdp_session(page)
    try:
        nodes = cdp.send("Accessibility.getFullAXTree")["nodes"]
    finally:
        cdp.detach()
    out = {}
    for n in nodes:
        if n.get("role", {}).get("value") == "button" and n.get("name", {}).get("value", "").startswith("Play "):
            out[n["name"]["value"]] = n.get("description", {}).get("value", "")
    return out


def test_card_explain_reaches_screen_readers(viewer: Viewer, tab: Tab) -> None:
    """With explain on, a card's variant and propensity are its description (its name alone hides them); off, nothing."""
    page = tab.page
    page.goto(f"{viewer.url}/?user={viewer.user}&policy=row-ranking")
    page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {viewer.user}:')")
    shown = page.eval_on_selector_all(".card", "els => els.map(e => e.querySelector('.explain-card').textContent)")
    assert shown and all(d == "" for d in _ax_buttons(page).values())
    page.check("#explain-toggle")
    described = _ax_buttons(page)
    assert sorted(described.values()) == sorted(shown)  # every card, each with its own
    assert all(re.fullmatch(r"variant \S+ · propensity \d\.\d\d", d) for d in described.values())
    page.reload()  # explain=1 in the URL: the cards are described as they are first drawn
    page.wait_for_function(f"() => document.getElementById('status').textContent.startsWith('User {viewer.user}:')")
    assert sorted(_ax_buttons(page).values()) == sorted(shown)
    page.uncheck("#explain-toggle")
    assert all(d == "" for d in _ax_buttons(page).values())
