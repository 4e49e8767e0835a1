"""MovieLens ingest: every layout, bad rows with file and line, atomic replace, metadata, variants."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from artwork.variants import VARIANT_ID_RE, derive_variants
from homepage.dataset import VARIANT_SCHEMA, load_dataset
from homepage.domain import EVENT_CODES, EventKind
from homepage.errors import HomepageError
from homepage.ingest import ingest_movielens
from homepage.ingest.regions import zip_to_region
from conftest import shared_path

DATA = Path(__file__).parent / "data" / "ingest"
MELU = ("movie-metadata-melu-ml1m", "movies_people_posters.csv")


def copy_layout(name: str, tmp_path: Path) -> Path:
    dst = tmp_path / name
    shutil.copytree(DATA / name, dst)
    return dst


def replace_line(path: Path, line_no: int, text: str, encoding: str = "utf-8") -> None:
    """Replace 1-based line ``line_no`` of ``path`` (appending when it is one past the end)."""
    lines = path.read_text(encoding=encoding).splitlines()
    if line_no == len(lines) + 1:
        lines.append(text)
    else:
        lines[line_no - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding=encoding)


# --- every layout -----------------------------------------------------------------------------

LAYOUT_CASES = [
    # dir, layout, events, titles, users, {title_id: (name, year, genres)}, {user_id: region}
    (
        "ml-latest-small-like", "movielens-csv", 7, 5, 4,
        {1: ("Toy Story", 1995, ["Adventure", "Animation", "Children", "Comedy", "Fantasy"]),
         2: ("The American President", 1995, ["Comedy", "Drama", "Romance"]),
         3: ("Babylon 5", 0, ["Sci-Fi"]), 4: ("Fawlty Towers", 1975, ["Comedy"]), 5: ("Some Documentary", 2015, [])},
        {1: None, 4: None},
    ),
    (
        "ml-1m-like", "movielens-dat", 4, 3, 4,
        {1: ("Toy Story", 1995, ["Animation", "Children", "Comedy"]), 2: ("Les Misérables", 1995, ["Drama", "Musical"])},
        {1: "US-4", 2: "US-7", 3: "INTL", 4: "US-0"},
    ),
    (
        "ml-10m-like", "movielens-dat", 3, 3, 4,
        {3: ("Grumpier Old Men", 1995, ["Comedy", "Romance"])},
        {1: None, 15: None},
    ),
    (
        "ml-100k", "movielens-100k", 5, 4, 4,
        {1: ("Toy Story", 1995, ["Animation", "Children", "Comedy"]), 3: ("Café au lait", 1994, ["Comedy"]),
         4: ("unknown", 0, [])},
        {1: "US-8", 2: "US-9", 3: "US-3", 4: "INTL"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "layout", "n_events", "n_titles", "n_users", "titles", "regions"),
    LAYOUT_CASES,
    ids=[c[0] for c in LAYOUT_CASES],
)
def test_layouts(tmp_path, name, layout, n_events, n_titles, n_users, titles, regions) -> None:
    manifest, bad = ingest_movielens(DATA / name, tmp_path / "ds")
    ds = load_dataset(tmp_path / "ds")
    assert manifest.source == layout and manifest.extra["layout"] == layout
    assert (len(ds.events), len(ds.titles), len(ds.users)) == (n_events, n_titles, n_users)
    assert set(ds.events["kind"]) == {EVENT_CODES[EventKind.RATING]}
    assert ds.events["stars"].between(0.5, 5).all()
    assert ds.events["progress"].isna().all() and ds.events["watch_seconds"].isna().all()
    assert bad.total == 0 and manifest.extra["skipped_rows"]["total"] == 0
    by_id = ds.titles.set_index("title_id")
    for tid, (tname, year, genres) in titles.items():
        assert (by_id.at[tid, "name"], by_id.at[tid, "year"], list(by_id.at[tid, "genres"])) == (tname, year, genres)
    users = ds.users.set_index("user_id")
    for uid, region in regions.items():
        got = users.at[uid, "region"]
        assert (None if pd.isna(got) else got) == region
    inputs = {p.name for p in (DATA / name).iterdir()}
    assert set(manifest.inputs_sha256) <= inputs and len(manifest.inputs_sha256) >= 2
    assert len(ds.variants) >= n_titles  # at least the neutral variant for every title


def test_tags_are_lower_cased_most_frequent_first(tmp_path) -> None:
    ingest_movielens(DATA / "ml-latest-small-like", tmp_path / "ds")
    titles = load_dataset(tmp_path / "ds").titles.set_index("title_id")
    assert list(titles.at[1, "tags"]) == ["pixar", "fun"]  # "Pixar" + "pixar" = 2, "fun" = 1
    assert list(titles.at[2, "tags"]) == ["politics, us"]  # quoted comma kept
    assert list(titles.at[3, "tags"]) == []


def test_tags_are_counted_as_of_a_models_training_cut(tmp_path) -> None:
    """A bundle trained up to T sees only the tags written by T (tags are user behaviour too)."""
    from homepage.bundle import load_bundle, train_bundle
    from homepage.config import PageConfig, PipelineConfig
    from homepage.ingest.titles import titles_as_of

    ingest_movielens(DATA / "ml-latest-small-like", tmp_path / "ds")
    ds = load_dataset(tmp_path / "ds")
    assert ds.tag_events is not None and len(ds.tag_events) == 4 and ds.manifest.counts["tag_events"] == 4
    cut = 1445714900  # after "pixar" (2011) and "fun" (2000), before "Pixar" (2015) and "politics, US" (2017)
    as_of = titles_as_of(ds.titles, ds.tag_events, cut).set_index("title_id")
    assert (list(as_of.at[1, "tags"]), list(as_of.at[2, "tags"])) == (["fun", "pixar"], [])
    assert list(ds.titles.set_index("title_id").at[1, "tags"]) == ["pixar", "fun"]  # the dataset keeps every tag
    cfg = PipelineConfig(page=PageConfig(train_model=False))
    bundle = train_bundle(ds, tmp_path / "models", cfg, until=cut)
    for catalog in (bundle.catalog, load_bundle(bundle.path).catalog):
        tags = dict(zip(catalog.title_ids.tolist(), catalog.tags))
        assert (tags[1], tags[2]) == (("fun", "pixar"), ())
    late = train_bundle(ds, tmp_path / "models", cfg, until=1500000000)
    assert dict(zip(late.catalog.title_ids.tolist(), late.catalog.tags))[2] == ("politics, us",)


def test_the_page_models_inner_rankers_see_tags_only_up_to_the_inner_split(tmp_path) -> None:
    """The page model's labels come from (inner split, until]: its rankers get the catalog as of the inner split."""
    from fixtures.world import WorldParams, generate_world, write_world
    from homepage.bundle import _catalog_at
    from homepage.catalog import Catalog
    from homepage.config import PageConfig, PipelineConfig
    from homepage.eventlog import EventLog
    from homepage.pagebuilder.training import fit_page_model

    write_world(generate_world(WorldParams(n_users=150, n_titles=120, seed=4)), tmp_path / "w")
    ds = load_dataset(tmp_path / "w")
    first, last = int(ds.events["ts"].min()), int(ds.events["ts"].max())
    tid = int(ds.titles["title_id"].iloc[0])
    tags = pd.DataFrame({"user_id": [1, 2], "title_id": [tid, tid], "tag": ["early", "late"], "ts": [first, last]})
    ds = type(ds)(ds.path, ds.manifest, ds.events, ds.titles, ds.variants, ds.users, tags)
    catalog_at = _catalog_at(ds)
    assert catalog_at is not None and catalog_at(first).tags[0] == ("early",) and set(catalog_at(last).tags[0]) == {"early", "late"}
    asked: list[int] = []

    def recorded(t: int) -> Catalog:
        asked.append(t)
        return catalog_at(t)

    catalog = Catalog.from_frames(ds.titles, ds.variants)
    log = EventLog.from_frame(ds.events, catalog, ds.users)
    cfg = PipelineConfig(page=PageConfig(max_requests=60, requests_per_user=2, num_rounds=5))
    _, report = fit_page_model(log, catalog, cfg, last, catalog_at=recorded)
    assert asked == [report.inner_split] and report.inner_split < last


def test_users_seen_only_in_tags_are_kept_with_their_first_time(tmp_path) -> None:
    ingest_movielens(DATA / "ml-latest-small-like", tmp_path / "ds")
    users = load_dataset(tmp_path / "ds").users.set_index("user_id")
    assert users.at[4, "created"] == 1500000000  # only in tags.csv
    assert users.at[1, "created"] == 964982224  # earliest of user 1's events


def test_unknown_layout_lists_the_understood_ones(tmp_path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "ratings.txt").write_text("1,2,3,4\n")
    with pytest.raises(HomepageError) as e:
        ingest_movielens(tmp_path / "src", tmp_path / "ds")
    msg = str(e.value)
    assert "unknown MovieLens layout" in msg and "ratings.txt" in msg
    for name in ("movielens-csv", "movielens-dat", "movielens-100k", "ml-25m", "ml-1m", "ml-100k"):
        assert name in msg
    assert not (tmp_path / "ds").exists()


def test_a_missing_path_or_a_zip_says_so_and_where_the_releases_are(tmp_path) -> None:
    """A path that did not exist was called "not a directory", and a downloaded zip was not told to be unzipped."""
    with pytest.raises(HomepageError) as e:
        ingest_movielens(tmp_path / "ml-latest-small", tmp_path / "ds")
    assert "no such directory" in str(e.value) and "grouplens.org" in str(e.value)
    (tmp_path / "ml-latest-small.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(HomepageError) as e:
        ingest_movielens(tmp_path / "ml-latest-small.zip", tmp_path / "ds")
    assert "a zip archive; unzip it" in str(e.value)
    assert not (tmp_path / "ds").exists()


def test_unpacked_zip_directory_is_looked_into(tmp_path) -> None:
    shutil.copytree(DATA / "ml-1m-like", tmp_path / "outer" / "ml-1m")
    manifest, _ = ingest_movielens(tmp_path / "outer", tmp_path / "ds")
    assert manifest.source == "movielens-dat" and manifest.extra["release"] == "ml-1m"
    (tmp_path / "outer" / "__MACOSX" / "ml-1m").mkdir(parents=True)  # what unzipping a zip made on a Mac adds
    assert ingest_movielens(tmp_path / "outer", tmp_path / "ds")[0].source == "movielens-dat"


# --- malformed rows ---------------------------------------------------------------------------

BAD_ROWS = [
    # layout dir, file, 1-based line, replacement text, expected message
    ("ml-latest-small-like", "ratings.csv", 4, "2,1,x,1445714835", "ratings.csv:4: rating 'x' is not a number"),
    ("ml-latest-small-like", "ratings.csv", 2, "1,1,7.5,964982703", "ratings.csv:2: rating 7.5 is outside 0.5..5"),
    ("ml-latest-small-like", "ratings.csv", 3, "1,2,0,964982224", "ratings.csv:3: rating 0 is outside 0.5..5"),
    ("ml-latest-small-like", "ratings.csv", 5, "u2,3,0.5,1445714900", "ratings.csv:5: userId 'u2' is not an integer"),
    ("ml-latest-small-like", "ratings.csv", 6, "3,four,2.0,1306463323", "ratings.csv:6: movieId 'four' is not an integer"),
    ("ml-latest-small-like", "ratings.csv", 7, "3,5,4.5,yesterday", "ratings.csv:7: timestamp 'yesterday' is not an integer"),
    ("ml-latest-small-like", "ratings.csv", 8, "3,1,3.0", "ratings.csv:8: expected 4 fields, found 3"),
    ("ml-latest-small-like", "ratings.csv", 9, "3,1,3.0,1306463500,extra", "ratings.csv:9: expected 4 fields, found 5"),
    ("ml-latest-small-like", "ratings.csv", 1, "user,movie,stars,time", "ratings.csv:1: expected columns userId,movieId,rating,timestamp"),
    ("ml-latest-small-like", "movies.csv", 3, "x2,Jumanji (1995),Comedy", "movies.csv:3: movieId 'x2' is not an integer"),
    ("ml-latest-small-like", "movies.csv", 4, "3,Babylon 5", "movies.csv:4: expected 3 fields, found 2"),
    ("ml-latest-small-like", "tags.csv", 2, "2,1,Pixar,soon", "tags.csv:2: timestamp 'soon' is not an integer"),
    ("ml-1m-like", "ratings.dat", 3, "2::2::four::978301968", "ratings.dat:3: rating 'four' is not a number"),
    ("ml-1m-like", "ratings.dat", 2, "1::3::3", "ratings.dat:2: expected 4 fields, found 3"),
    ("ml-1m-like", "users.dat", 2, "2::M::56::16", "users.dat:2: expected 5 fields, found 4"),
    ("ml-1m-like", "movies.dat", 1, "one::Toy Story (1995)::Comedy", "movies.dat:1: MovieID 'one' is not an integer"),
    ("ml-100k", "u.data", 5, "3\t4\t6\t889751712", "u.data:5: rating 6 is outside 0.5..5"),
    ("ml-100k", "u.data", 1, "1 1 5 874965758", "u.data:1: expected 4 fields, found 1"),
    ("ml-100k", "u.item", 2, "2|GoldenEye (1995)|01-Jan-1995||x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|yes|0|0",
     "u.item:2: genre flag Thriller 'yes' is not 0 or 1"),
    ("ml-100k", "u.user", 4, "4|24|M|technician", "u.user:4: expected 5 fields, found 4"),
]  # fmt: skip


@pytest.mark.parametrize(("layout", "file", "line", "text", "message"), BAD_ROWS, ids=[m for *_, m in BAD_ROWS])
def test_malformed_row_names_file_and_line(tmp_path, layout, file, line, text, message) -> None:
    src = copy_layout(layout, tmp_path)
    replace_line(src / file, line, text, encoding="latin-1" if layout != "ml-latest-small-like" else "utf-8")
    with pytest.raises(HomepageError) as e:
        ingest_movielens(src, tmp_path / "ds")
    assert str(e.value).startswith(message)
    assert not (tmp_path / "ds").exists()


def test_first_bad_line_is_reported_in_a_later_block(tmp_path) -> None:
    """Line numbers stay right across block boundaries of the chunked reader."""
    from homepage.ingest.badrows import BadRows
    from homepage.ingest.ratings import DelimitedFormat, read_ratings

    rows = [f"{i % 97},{i % 13},{1 + i % 5}.0,{1000 + i}" for i in range(5000)]
    rows[3999] = "1,2,3.0,later"  # file line 4001 (header is line 1)
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n")
    fmt = DelimitedFormat(b",", ("userId", "movieId", "rating", "timestamp"))
    with pytest.raises(HomepageError, match=r"^ratings\.csv:4001: timestamp 'later' is not an integer$"):
        read_ratings(path, fmt, BadRows(), block_bytes=4096)
    ratings, _ = read_ratings(path, fmt, BadRows(skip=True), block_bytes=4096)
    assert len(ratings) == 4999
    assert np.array_equal(ratings.ts[:5], 1000 + np.arange(5))


def test_skip_bad_counts_and_first_lines(tmp_path) -> None:
    src = copy_layout("ml-latest-small-like", tmp_path)
    replace_line(src / "ratings.csv", 3, "1,2,x,964982224")
    replace_line(src / "ratings.csv", 6, "3,4,2.0")
    replace_line(src / "ratings.csv", 9, "")  # a blank line is not a bad row
    replace_line(src / "movies.csv", 4, "three,Babylon 5,Sci-Fi")
    manifest, bad = ingest_movielens(src, tmp_path / "ds", skip_bad=True)
    skipped = manifest.extra["skipped_rows"]
    assert skipped["total"] == 3 == bad.total
    assert skipped["by_file"]["ratings.csv"]["count"] == 2
    assert skipped["by_file"]["ratings.csv"]["first_lines"] == [3, 6]
    assert skipped["by_file"]["movies.csv"]["first_lines"] == [4]
    assert manifest.counts["events"] == 7 - 2 and manifest.counts["titles"] == 5 - 1


def test_failed_ingest_keeps_the_old_dataset(tmp_path) -> None:
    out = tmp_path / "ds"
    ingest_movielens(DATA / "ml-latest-small-like", out)
    before = json.loads((out / "manifest.json").read_text())
    src = copy_layout("ml-1m-like", tmp_path)
    replace_line(src / "ratings.dat", 4, "3::1::1::not-a-time", encoding="latin-1")
    with pytest.raises(HomepageError, match="ratings.dat:4"):
        ingest_movielens(src, out)
    ds = load_dataset(out)
    assert json.loads((out / "manifest.json").read_text()) == before
    assert len(ds.events) == 7 and ds.manifest.source == "movielens-csv"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "ml-1m-like"]  # no temp dirs left


# --- regions and variants ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zip_code", "region"),
    [("55117", "US-5"), ("98107-4616", "US-9"), (" 02139", "US-0"), ("T8H1N", "INTL"), ("L9G2B", "INTL"), ("", None)],
)
def test_zip_to_region(zip_code, region) -> None:
    assert zip_to_region(pd.Series([zip_code])).iloc[0] == region


def test_derive_variants() -> None:
    titles = pd.DataFrame(
        {
            "title_id": [10, 20, 30],
            "genres": [["Comedy", "Horror", "Drama", "War"], [], ["Sci-Fi"]],
            "cast": [["Tom Hanks", "Tim Allen", "Don Rickles"], [], ["坂本 龍一", "Zoë Kravitz"]],
        }
    )
    v = derive_variants(titles, {10: "https://img.example/10.jpg", 99: "https://img.example/99.jpg"})
    assert list(v.columns) == VARIANT_SCHEMA.names
    assert v["variant_id"].is_unique and all(VARIANT_ID_RE.match(x) for x in v["variant_id"])
    per = v.groupby("title_id").size().to_dict()
    assert per == {10: 1 + 3 + 2 + 1, 20: 1, 30: 1 + 1 + 2}
    t10 = v[v["title_id"] == 10].set_index("variant_id")
    assert list(t10.index) == ["10-n", "10-g-comedy", "10-g-horror", "10-g-drama", "10-c-tom-hanks", "10-c-tim-allen", "10-p"]
    assert t10.at["10-p", "image_url"] == "https://img.example/10.jpg" and t10.at["10-p", "tone"] == "poster"
    assert t10.at["10-g-horror", "image_url"] == "/artwork/10/10-g-horror.svg"
    assert t10.at["10-g-horror", "emphasis_genre"] == "Horror" and t10.at["10-c-tom-hanks", "featured_cast"] == "Tom Hanks"
    assert set(v[v["title_id"] == 30]["featured_cast"].dropna()) == {"坂本 龍一", "Zoë Kravitz"}
    assert "30-c-zoe-kravitz" in set(v["variant_id"])
    assert 99 not in set(v["title_id"])


# --- real data ------------------------------------------------------------------------------


@pytest.mark.shared_data
def test_cli_ingest_ml_latest_small(mlsmall_dir, tmp_path) -> None:
    from homepage.cli import _register, app

    _register()
    runner = CliRunner()
    out = tmp_path / "x"
    res = runner.invoke(app, ["ingest", "movielens", str(mlsmall_dir), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["dataset", "info", str(out), "--json"])
    info = json.loads(res.stdout)
    assert (info["events"], info["titles"], info["users"]) == (100836, 9742, 610)
    assert info["kinds"] == {"rating": 100836} and info["source"] == "movielens-csv"
    ds = load_dataset(out)
    assert ds.manifest.extra["release"] == "ml-latest-small"
    assert ds.titles["year"].gt(0).mean() > 0.99
    assert not any("(no genres listed)" in g for g in ds.titles["genres"])
    assert ds.variants["title_id"].nunique() == 9742


@pytest.mark.shared_data
def test_metadata_join_on_melu(mlsmall_dir, tmp_path) -> None:
    meta = shared_path(*MELU)
    manifest, _ = ingest_movielens(mlsmall_dir, tmp_path / "ds", metadata=meta)
    ds = load_dataset(tmp_path / "ds")
    toy = ds.titles.set_index("title_id").loc[1]
    assert list(toy["director"]) == ["John Lasseter"]
    assert list(toy["cast"])[:2] == ["Tom Hanks", "Tim Allen"] and toy["maturity"] == "G"
    posters = ds.variants[ds.variants["tone"] == "poster"]
    assert posters.set_index("title_id").at[1, "image_url"].startswith("https://")
    assert {"1-c-tom-hanks", "1-c-tim-allen", "1-p"} <= set(ds.variants["variant_id"])
    assert manifest.extra["metadata"]["titles_with_cast"] > 2500  # the README: 2,949 movies join
    assert any(k.startswith("metadata/") for k in manifest.inputs_sha256)
    no_meta = ds.titles[~ds.titles["title_id"].isin(pd.read_csv(meta)["movieId"])]
    assert all(len(c) == 0 for c in no_meta["cast"]) and no_meta["maturity"].isna().all()


def test_cli_error_is_one_line_with_exit_code_2(tmp_path, monkeypatch, capsys) -> None:
    from homepage.cli import main

    src = copy_layout("ml-latest-small-like", tmp_path)
    replace_line(src / "ratings.csv", 5, "2,3,lots,1445714900")
    monkeypatch.setattr("sys.argv", ["homepage", "ingest", "movielens", str(src), "--out", str(tmp_path / "ds")])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    stderr = capsys.readouterr().err
    assert re.search(r"ratings\.csv:5: rating 'lots' is not a number", stderr)
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    "argv, message",
    [(["replay", "ds", "--out", "x.json"], "No such option: --out"), (["no-such-command"], "No such command"), (["train"], "Missing argument")],
)
def test_cli_usage_error_is_click_style_not_a_traceback(argv, message, monkeypatch, capsys) -> None:
    """An unknown option or command, or a missing argument: click's usage message, exit code 2, whatever click typer uses."""
    from homepage.cli import main

    monkeypatch.setattr("sys.argv", ["homepage", *argv])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    stderr = capsys.readouterr().err
    assert "Usage: homepage" in stderr and f"Error: {message}" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("option", ["--split-time", "--until"])
def test_replay_names_the_time_option_it_cannot_read(option, tmp_path, monkeypatch, capsys) -> None:
    """A bad time is reported under its own option, before any dataset or bundle is read."""
    from homepage.cli import main

    argv = ["homepage", "replay", str(tmp_path / "no-dataset"), "--models", str(tmp_path / "no-models"), option, "last tuesday"]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    assert f"{option}: 'last tuesday' is neither Unix seconds nor an ISO date/time" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "DS", "--models", "M", "--split-time"],
        ["replay", "DS", "--models", "M", "--until"],
        ["train", "DS", "--out", "M", "--until"],
        ["explain", "DS", "--models", "M", "--user", "1", "--at"],
        ["eval", "rankers", "DS", "--split-time"],
        ["publish", "DS", "--at"],
    ],
)
def test_a_time_option_in_milliseconds_is_refused(argv, tmp_path, monkeypatch, capsys) -> None:
    """Milliseconds given as a time (``1537799250000``) are refused, naming the option, as ingest and ``POST /events`` refuse them.

    Read as seconds, ``explain --at`` built the page of the year 50700 and ``train --until`` trained on every event.
    """
    from homepage.cli import main

    ds = tmp_path / "ds"
    if "eval" in argv:  # reads the dataset before the option
        ingest_movielens(copy_layout("ml-latest-small-like", tmp_path), ds)
    args = [str(ds) if a == "DS" else str(tmp_path / "models") if a == "M" else a for a in argv]
    monkeypatch.setattr("sys.argv", ["homepage", *args, "1537799250000"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    assert f"{argv[-1]}: 1537799250000 is after the year 9999: Unix seconds expected, not milliseconds" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "expected"),
    [("²", "'²' is neither Unix seconds nor an ISO date/time"), ("1700000000.5", "'1700000000.5' is neither"), ("٣", "'٣' is neither")],
)
def test_a_time_option_that_is_no_ascii_integer_is_a_one_line_error(text: str, expected: str) -> None:
    """Non-ASCII digits ("²" passed ``str.isdigit`` and then ``int`` raised a bare ValueError) and fractions name the option."""
    from homepage.cli.train import parse_time

    with pytest.raises(HomepageError, match=re.escape(f"--at: {expected}")):
        parse_time(text, "--at")


def test_out_that_is_a_file_is_left_alone(tmp_path) -> None:
    """``--out`` naming an existing file (a typo, the input itself) is refused, not renamed away and replaced."""
    src = copy_layout("ml-latest-small-like", tmp_path)
    target = tmp_path / "notes.txt"
    target.write_text("precious")
    with pytest.raises(HomepageError, match="is a file, not a dataset"):
        ingest_movielens(src, target)
    assert target.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "notes.txt"])  # no temp dir left behind


def test_train_from_logs_will_not_write_into_a_dataset(tmp_path, monkeypatch, capsys) -> None:
    """A page model's --out that is a dataset (or any non-empty non-model directory) is refused before any work."""
    from homepage.cli import main

    src = copy_layout("ml-latest-small-like", tmp_path)
    ds = tmp_path / "ds"
    ingest_movielens(src, ds)
    before = (ds / "manifest.json").read_text()
    argv = ["homepage", "train-from-logs", str(ds), "--models", str(tmp_path / "m"), "--served-logs", str(tmp_path / "s.parquet"), "--out", str(ds)]
    monkeypatch.setattr("sys.argv", argv)
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2 and "is not a page model directory" in capsys.readouterr().err
    assert (ds / "manifest.json").read_text() == before and not (ds / "model.txt").exists()


@pytest.mark.parametrize("file, line, text", [("ratings.csv", 5, "99999999999999999999,3,4.0,1445714900"), ("ratings.csv", 5, "2,3,4.0,99999999999999999999"), ("movies.csv", 3, "99999999999999999999,Big (2000),Drama")])
def test_an_id_or_time_too_big_for_64_bits_is_a_bad_row(tmp_path, file, line, text) -> None:
    """20-digit numbers are reported with file and line (and skipped with skip_bad), not an OverflowError."""
    src = copy_layout("ml-latest-small-like", tmp_path)
    replace_line(src / file, line, text)
    with pytest.raises(HomepageError, match=rf"{file}:{line}: .* out of range"):
        ingest_movielens(src, tmp_path / "ds")
    ingest_movielens(src, tmp_path / "ds", skip_bad=True)
    assert load_dataset(tmp_path / "ds").events["user_id"].max() < 10**18


def test_eval_rankers_reads_split_time_as_train_and_replay_do(tmp_path, monkeypatch, capsys) -> None:
    """`eval rankers --split-time` takes ISO or Unix seconds like `train --until`, and names itself when it cannot."""
    from homepage.cli import main

    ds = tmp_path / "ds"
    ingest_movielens(copy_layout("ml-latest-small-like", tmp_path), ds)
    monkeypatch.setattr("sys.argv", ["homepage", "eval", "rankers", str(ds), "--split-time", "tuesday"])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2 and "--split-time: 'tuesday' is neither Unix seconds nor an ISO date/time" in capsys.readouterr().err


def test_cli_skip_bad_reports_on_stderr(tmp_path, monkeypatch, capsys) -> None:
    from homepage.cli import main

    src = copy_layout("ml-100k", tmp_path)
    replace_line(src / "u.data", 2, "1\t2\t9\t876893171", encoding="latin-1")
    replace_line(src / "u.data", 4, "3\tx\t1\t876893119", encoding="latin-1")
    out = tmp_path / "ds"
    monkeypatch.setattr("sys.argv", ["homepage", "ingest", "movielens", str(src), "--out", str(out), "--skip-bad", "--quiet"])
    main()  # returns normally on success
    stderr = capsys.readouterr().err
    assert "skipped 2 malformed rows" in stderr and "u.data: 2 (first at lines 2, 4;" in stderr
    assert load_dataset(out).manifest.counts["events"] == 3


# --- quirks a review found in MovieLens-format files (2026-12-06) ------------------------------


def _ratings_csv(path: Path, rows: list[str]) -> None:
    path.write_text("userId,movieId,rating,timestamp\n" + "".join(r + "\n" for r in rows))


def test_integral_floats_get_the_same_verdict_in_a_clean_block_and_beside_a_bad_row(tmp_path) -> None:
    """'964982703.0' (a pandas round-trip) is read as an integer whether or not its block also holds a bad row."""
    src = copy_layout("ml-latest-small-like", tmp_path)
    rows = ["1,1,4.0,964982703.0", "1.0,2,3.5,9.64982224e8", "2,1,5.0,1445714835", "2,3,0.5,1445714900.0"]
    _ratings_csv(src / "ratings.csv", rows)
    ingest_movielens(src, tmp_path / "clean")
    clean = load_dataset(tmp_path / "clean").events
    assert sorted(clean["ts"]) == [964982224, 964982703, 1445714835, 1445714900]
    _ratings_csv(src / "ratings.csv", rows + ["2,4,x,1445714999.0"])
    with pytest.raises(HomepageError, match=r"ratings\.csv:6: rating 'x' is not a number"):
        ingest_movielens(src, tmp_path / "mixed")
    _, bad = ingest_movielens(src, tmp_path / "mixed", skip_bad=True)
    assert bad.total == 1
    pd.testing.assert_frame_equal(load_dataset(tmp_path / "mixed").events, clean)
    _ratings_csv(src / "ratings.csv", ["1,1,4.0,964982703.5", "1,2,3.5,-5.0"])
    with pytest.raises(HomepageError, match=r"ratings\.csv:2: timestamp '964982703.5' is not an integer"):
        ingest_movielens(src, tmp_path / "frac")


@pytest.mark.parametrize(
    ("filed", "shown"),
    [
        ("Matrix, The (1999)", "The Matrix"),
        ("Crow, The: Wicked Prayer (2005)", "The Crow: Wicked Prayer"),
        ("Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)", "The Good, the Bad and the Ugly (Il Buono, il brutto, il cattivo)"),
        ("City of the Living Dead (a.k.a. Gates of Hell, The) (1980)", "City of the Living Dead (a.k.a. The Gates of Hell)"),
        ("Bear, The (Ours, L') (1988)", "The Bear (L'Ours)"),
        ("Walk in the Clouds, A (1995)", "A Walk in the Clouds"),
        ("Paris, Texas (1984)", "Paris, Texas"),
        # other languages' articles, as ml-latest-small files them: they stayed last
        ("Vitelloni, I (a.k.a. The Young and the Passionate) (1953)", "I Vitelloni (a.k.a. The Young and the Passionate)"),
        ("Andalusian Dog, An (Chien andalou, Un) (1929)", "An Andalusian Dog (Un Chien andalou)"),
        ("Seventh Seal, The (Sjunde inseglet, Det) (1957)", "The Seventh Seal (Det Sjunde inseglet)"),
        ("Green Butchers, The (Grønne slagtere, De) (2003)", "The Green Butchers (De Grønne slagtere)"),
        ("Special Day, A (Giornata particolare, Una) (1977)", "A Special Day (Una Giornata particolare)"),
        ("Spiel, Ein (1990)", "Ein Spiel"),
    ],
)
def test_a_title_filed_under_its_noun_is_named_article_first(tmp_path, filed: str, shown: str) -> None:
    """MovieLens files "Matrix, The": the page said "Because you watched Matrix, The" (a fifth of ml-latest-small's titles)."""
    src = copy_layout("ml-latest-small-like", tmp_path)
    movies = (src / "movies.csv").read_text(encoding="utf-8").replace('"American President, The (1995)"', '"' + filed.replace('"', '""') + '"')
    (src / "movies.csv").write_text(movies, encoding="utf-8")
    ingest_movielens(src, tmp_path / "ds")
    assert load_dataset(tmp_path / "ds").titles.set_index("title_id")["name"].loc[2] == shown


@pytest.mark.parametrize("ts", ["1445714900000", "999999999999999999"])
def test_a_time_after_the_year_9999_is_a_bad_row(tmp_path, ts) -> None:
    """Milliseconds or garbage: reported with file and line, not stored to break publish and `dataset info` later."""
    src = copy_layout("ml-latest-small-like", tmp_path)
    replace_line(src / "ratings.csv", 4, f"2,1,5.0,{ts}")
    with pytest.raises(HomepageError, match=rf"ratings\.csv:4: timestamp {ts} is out of range \(after the year 9999"):
        ingest_movielens(src, tmp_path / "ds")


def test_a_movies_file_without_titles_is_a_one_line_error(tmp_path) -> None:
    src = copy_layout("ml-latest-small-like", tmp_path)
    (src / "movies.csv").write_text("movieId,title,genres\n")
    with pytest.raises(HomepageError, match=r"movies\.csv has no titles"):
        ingest_movielens(src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_ratings_of_unlisted_titles_are_reported_and_train_names_the_cause(tmp_path, monkeypatch, capsys) -> None:
    from homepage.bundle import BundleError, train_bundle
    from homepage.cli import main
    from homepage.config import PipelineConfig

    src = copy_layout("ml-latest-small-like", tmp_path)
    _ratings_csv(src / "ratings.csv", ["1,901,4.0,964982703", "1,902,3.5,964982224", "2,901,5.0,1445714835"])
    monkeypatch.setattr("sys.argv", ["homepage", "ingest", "movielens", str(src), "--out", str(tmp_path / "ds"), "--quiet"])
    main()
    assert "warning: 3 ratings (100%) are of titles the movies file does not list" in capsys.readouterr().err
    with pytest.raises(BundleError, match="no plays or ratings of titles in its catalog to train on"):
        train_bundle(load_dataset(tmp_path / "ds"), tmp_path / "models", PipelineConfig())


def test_only_line_ends_split_a_dat_file(tmp_path) -> None:
    """A cp1252 ellipsis (0x85) or a form feed inside a title is part of it, not a line break (str.splitlines)."""
    src = copy_layout("ml-1m-like", tmp_path)
    original = (src / "movies.dat").read_bytes()
    (src / "movies.dat").write_bytes(original.replace(b"rables", b"ra\x85\x0cbles"))
    ingest_movielens(src, tmp_path / "ds")
    names = load_dataset(tmp_path / "ds").titles.set_index("title_id")["name"]
    assert names.loc[2] == "Les Miséra…\x0cbles" and len(names) == 3  # 0x85 is cp1252's ellipsis
    (src / "movies.dat").write_bytes(original.decode("latin-1").encode("utf-8-sig"))  # UTF-8 with a BOM
    ingest_movielens(src, tmp_path / "ds")
    assert load_dataset(tmp_path / "ds").titles.set_index("title_id")["name"].loc[2] == "Les Misérables"


def test_ties_in_time_are_ordered_by_user_and_title_not_by_the_file(tmp_path) -> None:
    """The same ratings shuffled make the same dataset (and so the same figures)."""
    rows = [f"{u},{m},4.0,{1_000_000 + (u * m) % 3}" for u in (1, 2, 3) for m in (1, 2, 3, 4, 5)]
    frames = []
    for k, order in enumerate((rows, rows[::-1], rows[7:] + rows[:7])):
        src = copy_layout("ml-latest-small-like", tmp_path / str(k))
        _ratings_csv(src / "ratings.csv", order)
        ingest_movielens(src, tmp_path / f"ds{k}")
        frames.append(load_dataset(tmp_path / f"ds{k}").events)
    ev = frames[0]
    assert list(zip(ev["ts"], ev["user_id"], ev["title_id"])) == sorted(zip(ev["ts"], ev["user_id"], ev["title_id"]))
    for other in frames[1:]:
        pd.testing.assert_frame_equal(other, ev)


def test_metadata_numbered_for_another_catalog_is_refused(tmp_path) -> None:
    """MeLU metadata keyed by ml-1m ids joined to ml-100k's own ids would give films other films' casts."""
    src = copy_layout("ml-latest-small-like", tmp_path)
    n = 30
    (src / "movies.csv").write_text("movieId,title,genres\n" + "".join(f"{i},Film {i} ({1950 + i}),Drama\n" for i in range(1, n + 1)))
    _ratings_csv(src / "ratings.csv", [f"1,{i},4.0,{1_000_000 + i}" for i in range(1, n + 1)])
    header = "movieId,title,year,rated,released,genre,director,actors,poster_url\n"
    for name, shift in (("same.csv", 1), ("other.csv", 7)):
        (tmp_path / name).write_text(header + "".join(f"{i},Film {i},{1950 + i + shift},PG,,Drama,Someone,\"A, B\",N/A\n" for i in range(1, n + 1)))
    ingest_movielens(src, tmp_path / "ds", metadata=tmp_path / "same.csv")  # a year off by one is a release date
    assert list(load_dataset(tmp_path / "ds").titles["director"].iloc[0]) == ["Someone"]
    with pytest.raises(HomepageError, match=r"years match only 0% of the 30 titles with the same id"):
        ingest_movielens(src, tmp_path / "ds2", metadata=tmp_path / "other.csv")


def test_extra_columns_after_the_known_ones_are_ignored_in_every_csv(tmp_path) -> None:
    """ratings.csv already took them; movies.csv and tags.csv accepted the header, then refused every row."""
    src = copy_layout("ml-latest-small-like", tmp_path)
    ingest_movielens(src, tmp_path / "plain")
    for f in ("movies.csv", "tags.csv"):
        lines = (src / f).read_text().splitlines()
        body = [ln + ",x" if k % 2 else ln for k, ln in enumerate(ln for ln in lines[1:] if ln)]  # some rows leave it out
        (src / f).write_text("\n".join([lines[0] + ",note"] + body) + "\n")
    ingest_movielens(src, tmp_path / "extra")
    a, b = load_dataset(tmp_path / "plain"), load_dataset(tmp_path / "extra")
    pd.testing.assert_frame_equal(a.titles, b.titles)
    pd.testing.assert_frame_equal(a.tag_events, b.tag_events)


def test_repeated_ids_in_the_movies_and_users_files_are_counted_and_reported(tmp_path, monkeypatch, capsys) -> None:
    from homepage.cli import main

    src = copy_layout("ml-1m-like", tmp_path)
    movies = (src / "movies.dat").read_bytes().splitlines()
    (src / "movies.dat").write_bytes(b"\n".join(movies + [movies[0].replace(b"Toy Story", b"Toy Story again")]) + b"\n")
    users = (src / "users.dat").read_bytes().splitlines()
    (src / "users.dat").write_bytes(b"\n".join(users + users[:2]) + b"\n")
    monkeypatch.setattr("sys.argv", ["homepage", "ingest", "movielens", str(src), "--out", str(tmp_path / "ds"), "--quiet"])
    main()
    err = capsys.readouterr().err
    assert "warning: movies.dat: 1 rows repeat an id of an earlier row" in err and "warning: users file: 2 rows repeat" in err
    ds = load_dataset(tmp_path / "ds")
    assert ds.manifest.extra["repeated_ids"] == {"movies.dat": 1, "users file": 2}
    assert ds.titles.set_index("title_id").loc[1, "name"] == "Toy Story"


@pytest.mark.parametrize("shuffled", [False, True], ids=["user-title-order", "shuffled"])
def test_repeated_ratings_keep_the_earliest_of_each_user_and_title_and_are_reported(tmp_path, monkeypatch, capsys, shuffled) -> None:
    """A re-rated title is one title watched: counted once, at its first rating, and the ingest says so."""
    from homepage.cli import main

    src = copy_layout("ml-latest-small-like", tmp_path)
    rows = [
        "1,2,4.0,964982100",
        "1,2,2.0,964982050",  # the earliest of user 1's three ratings of title 2
        "1,2,5.0,964982300",
        "1,3,3.5,964982400",
        "2,1,3.0,964982200",  # same second as the next: the first in the file is kept
        "2,1,1.0,964982200",
        "2,3,4.5,964982500",
    ]
    if shuffled:
        rows = [rows[k] for k in (6, 2, 4, 0, 3, 5, 1)]
    _ratings_csv(src / "ratings.csv", rows)
    monkeypatch.setattr("sys.argv", ["homepage", "ingest", "movielens", str(src), "--out", str(tmp_path / "ds"), "--quiet"])
    main()
    err = capsys.readouterr().err
    assert "warning: 3 ratings repeat the (user, title) pair of an earlier rating; the earliest of each was kept" in err
    ds = load_dataset(tmp_path / "ds")
    assert ds.manifest.extra["repeated_ratings"] == 3
    got = sorted(zip(ds.events["user_id"], ds.events["title_id"], ds.events["ts"], ds.events["stars"]))
    assert got == [(1, 2, 964982050, 2.0), (1, 3, 964982400, 3.5), (2, 1, 964982200, 3.0), (2, 3, 964982500, 4.5)]
    assert np.all(np.diff(ds.events["ts"].to_numpy()) >= 0)


def test_ratings_on_a_ten_point_scale_are_named_as_such_and_skipping_most_rows_is_a_warning(tmp_path, monkeypatch, capsys) -> None:
    """A 1-10 file: --skip-bad kept only the ratings up to 5 (82% of ml-latest-small's rows went) and said only a count."""
    from homepage.cli import main

    src = copy_layout("ml-latest-small-like", tmp_path)
    _ratings_csv(src / "ratings.csv", [f"{u},{m},{(u + m) % 10 + 1},96498{u}{m}00" for u in range(1, 5) for m in (1, 2, 3)])
    with pytest.raises(HomepageError, match=r"ratings\.csv:\d+: rating \d+ is outside 0\.5\.\.5 \(a 1-10 scale\? .*halve the ratings"):
        ingest_movielens(src, tmp_path / "ds")
    monkeypatch.setattr("sys.argv", ["homepage", "ingest", "movielens", str(src), "--out", str(tmp_path / "ds"), "--skip-bad", "--quiet"])
    main()
    err = capsys.readouterr().err
    assert re.search(r"warning: \d+% of the rows were skipped: the file may not be in the format read", err), err


def test_train_on_ratings_all_at_one_second_says_why_there_is_no_page_model(tmp_path) -> None:
    from homepage.bundle import BundleError, train_bundle
    from homepage.config import PipelineConfig

    src = copy_layout("ml-latest-small-like", tmp_path)
    _ratings_csv(src / "ratings.csv", [f"{u},{m},4.0,1000000000" for u in range(1, 6) for m in (1, 2, 3, 4, 5)])
    ingest_movielens(src, tmp_path / "ds")
    with pytest.raises(BundleError, match=r"no training groups: .*\(0 plays or ratings between the inner split.*"
                       r"; 100% of the events up to the cut fall on one day, 2001-09-09, so both splits land in it .*\"train_model\": false"):
        train_bundle(load_dataset(tmp_path / "ds"), tmp_path / "models", PipelineConfig())
    config = PipelineConfig.model_validate({"page": {"train_model": False}})
    assert (train_bundle(load_dataset(tmp_path / "ds"), tmp_path / "models", config).path / "manifest.json").is_file()


@pytest.mark.parametrize("row, message", [("1,1,4.0,1e400", "timestamp '1e400' is not an integer"), ("1,1,4.0,\u00b2", "timestamp '\u00b2' is not an integer"), ("\u0663,1,4.0,964982703", "userId '\u0663' is not an integer")])
@pytest.mark.filterwarnings("error::RuntimeWarning")  # numpy's cast warning on the user's terminal, before the error line
def test_overflowing_floats_and_non_ascii_digits_are_bad_rows_not_tracebacks(tmp_path, row, message) -> None:
    src = copy_layout("ml-latest-small-like", tmp_path)
    _ratings_csv(src / "ratings.csv", ["1,2,3.5,964982224", row, "2,1,5.0,1445714835"])
    with pytest.raises(HomepageError, match=rf"ratings\.csv:3: {re.escape(message)}"):
        ingest_movielens(src, tmp_path / "ds")
    _, bad = ingest_movielens(src, tmp_path / "ds", skip_bad=True)
    assert bad.total == 1 and len(load_dataset(tmp_path / "ds").events) == 2


def test_a_damaged_or_older_dataset_can_still_be_replaced(tmp_path) -> None:
    """Only a model bundle's manifest stops a write; a dataset this code cannot read is what a re-ingest is for."""
    src = copy_layout("ml-latest-small-like", tmp_path)
    ingest_movielens(src, tmp_path / "ds")
    manifest = tmp_path / "ds" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"format_version": 1', '"format_version": 0'))
    ingest_movielens(src, tmp_path / "ds")
    manifest.write_text("{oops")
    ingest_movielens(src, tmp_path / "ds")
    assert len(load_dataset(tmp_path / "ds").events) == 7


def test_a_cp1252_movies_file_keeps_its_punctuation(tmp_path) -> None:
    """0x80-0x9f were read as latin-1's C1 controls: "Don\x92t Look Now" and an ellipsis the name's strip removed."""
    src = copy_layout("ml-1m-like", tmp_path)
    text = (src / "movies.dat").read_bytes().decode("latin-1")
    text = text.replace("Toy Story", "Don\u2019t Look Now\u2026").replace("Misérables", "Mis\u00e9rables \u201cTout\u201d")
    (src / "movies.dat").write_bytes(text.encode("cp1252"))
    ingest_movielens(src, tmp_path / "ds")
    names = load_dataset(tmp_path / "ds").titles.set_index("title_id")["name"]
    assert names.loc[1] == "Don\u2019t Look Now\u2026" and names.loc[2] == "Les Mis\u00e9rables \u201cTout\u201d"
    # 0x81 is undefined in cp1252: that line is latin-1 (a C1 control), the others stay cp1252
    (src / "movies.dat").write_bytes(text.encode("cp1252").replace(b"Now", b"N\x81ow"))
    ingest_movielens(src, tmp_path / "ds")
    names = load_dataset(tmp_path / "ds").titles.set_index("title_id")["name"]
    assert names.loc[1] == "Don\x92t Look N\x81ow"  # latin-1's 0x85 is a space to the year's pattern
    assert names.loc[2] == "Les Mis\u00e9rables \u201cTout\u201d"


def test_one_latin1_line_in_a_utf8_file_leaves_the_other_lines_alone(tmp_path) -> None:
    """The whole file was decoded as latin-1: every UTF-8 accented title became mojibake ('MisÃ©rables')."""
    src = copy_layout("ml-1m-like", tmp_path)
    lines = (src / "movies.dat").read_bytes().decode("latin-1").split("\n")
    utf8 = [ln.encode("utf-8") for ln in lines]
    utf8[0] = lines[0].replace("Toy Story", "Toy Störy").encode("latin-1")  # one edited line in latin-1
    (src / "movies.dat").write_bytes(b"\n".join(utf8))
    ingest_movielens(src, tmp_path / "ds")
    names = load_dataset(tmp_path / "ds").titles.set_index("title_id")["name"]
    assert names.loc[2] == "Les Misérables" and names.loc[1] == "Toy Störy"
