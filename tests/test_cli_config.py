"""``homepage config show``: the configuration in effect, as a file ``--config`` takes back unchanged."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from homepage.cli import _register, app
from homepage.config import PipelineConfig, load_config


def test_config_show_prints_the_defaults_as_a_config_file(tmp_path: Path) -> None:
    _register()
    res = CliRunner().invoke(app, ["config", "show"])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert [r["name"] for r in shown["rankers"]] == [r.name for r in PipelineConfig().rankers]
    path = tmp_path / "pipeline.json"
    path.write_text(res.output)
    assert load_config(path) == PipelineConfig()


def test_config_show_fills_in_a_files_defaults(tmp_path: Path) -> None:
    _register()
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"rankers": [{"name": "continue_watching"}, {"name": "top_n", "config": {"max_rows": 1}}]}))
    res = CliRunner().invoke(app, ["config", "show", "--config", str(path)])
    assert res.exit_code == 0, res.output
    shown = json.loads(res.output)
    assert [r["name"] for r in shown["rankers"]] == ["continue_watching", "top_n"]
    assert shown["rankers"][1]["config"]["max_rows"] == 1
    assert shown["page"] == json.loads(PipelineConfig().page.model_dump_json())


def test_a_misspelt_setting_is_named_with_the_one_meant(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """HOMEPAGE_DEADLINE=200 was silently ignored (the setting is HOMEPAGE_DEADLINE_MS): every command now says so."""
    from homepage.cli import main

    for name in ("HOMEPAGE_DEADLINE", "HOMEPAGE_VERSION_KEEP"):
        monkeypatch.setenv(name, "1")
    for name in ("HOMEPAGE_DEADLINE_MS", "HOMEPAGE_VERSIONS_KEEP", "HOMEPAGE_VIEWER_SAMPLE_SIZE", "HOMEPAGE_DEV", "HOMEPAGE_LOG_LEVEL"):
        monkeypatch.setenv(name, {"HOMEPAGE_LOG_LEVEL": "WARNING", "HOMEPAGE_DEV": "0"}.get(name, "30"))
    monkeypatch.setattr("sys.argv", ["homepage", "config", "show"])
    main()  # returns: the command succeeded
    err = capsys.readouterr().err
    assert "warning: HOMEPAGE_DEADLINE is not a setting of this version; it is ignored (did you mean HOMEPAGE_DEADLINE_MS?)" in err
    assert "warning: HOMEPAGE_VERSION_KEEP is not a setting of this version; it is ignored (did you mean HOMEPAGE_VERSIONS_KEEP?)" in err
    assert err.count("warning:") == 2, err


def test_every_homepage_variable_the_code_reads_is_a_known_setting() -> None:
    """The list the misspelling warning checks against covers every HOMEPAGE_* name in the code."""
    import re

    from homepage.api.routes_viewer import ViewerSettings
    from homepage.api.settings import ServeSettings
    from homepage.log_setup import LogSettings
    from homepage.settings import OTHER_VARIABLES, Settings, variables_of

    known = variables_of(Settings) | variables_of(LogSettings) | variables_of(ServeSettings) | variables_of(ViewerSettings) | OTHER_VARIABLES
    root = Path(__file__).resolve().parent.parent
    named = set()
    for p in [*root.joinpath("homepage").rglob("*.py"), *root.joinpath("tests").rglob("*.py")]:
        named |= set(re.findall(r"\bHOMEPAGE_[A-Z0-9_]*[A-Z0-9]\b", p.read_text()))
    named -= {"HOMEPAGE_DEADLINE", "HOMEPAGE_VERSION_KEEP"}  # the misspellings of the test above
    assert named - known == set()
