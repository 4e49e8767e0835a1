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
