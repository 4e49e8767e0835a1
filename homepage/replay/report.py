"""Replay output: a rich table, the JSON file, and a Markdown report with PNG plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from homepage.replay.metrics import PER_REQUEST, RESUME
from homepage.replay.run import ReplayResult
from homepage.strict_json import write_json

SHOWN = ("ndcg_2d", "viewport_recall", "page_recall", "duplicates", "viewport_genres", "coverage", "novelty")


def _fmt(cell: dict[str, object]) -> str:
    lo, hi = cell["ci"]  # type: ignore[misc]
    return f"{cell['mean']:.4f} [{lo:.4f}, {hi:.4f}]"


def print_tables(report: dict[str, object], console: Console | None = None) -> None:
    console = console or Console()
    policies: dict[str, dict[str, dict[str, object]]] = report["policies"]  # type: ignore[assignment]
    proto = report["protocol"]  # type: ignore[index]
    t = Table(title=f"Replay: {proto['warm_requests']} warm requests, {proto['users']} users (95% bootstrap intervals over users)")  # type: ignore[index]
    t.add_column("policy")
    for m in SHOWN:
        t.add_column(m, justify="right")
    for name, metrics in policies.items():
        t.add_row(name, *(_fmt(metrics[m]) for m in SHOWN))
    console.print(t)
    resumes = {name: m[RESUME] for name, m in policies.items() if RESUME in m}
    if resumes:
        r = Table(title=f"Resumed titles shown on the page ({RESUME}; {next(iter(resumes.values()))['requests']} requests with one)")
        r.add_column("policy")
        r.add_column(RESUME, justify="right")
        for name, cell in resumes.items():
            r.add_row(name, _fmt(cell))
        console.print(r)
    p = Table(title="Paired differences (A - B) on the same requests")
    p.add_column("A - B")
    for m in ("ndcg_2d", "viewport_recall", "page_recall"):
        p.add_column(m, justify="right")
    for pair, metrics in report["paired"].items():  # type: ignore[union-attr]
        p.add_row(pair, *(_fmt(metrics[m]) for m in ("ndcg_2d", "viewport_recall", "page_recall")))
    console.print(p)


REPORT_TITLE = "# Replay report"


def foreign_report_files(out_dir: Path) -> list[str]:
    """Files a report in ``out_dir`` would overwrite that an earlier report did not write (a project's README, say)."""
    readme = Path(out_dir) / "README.md"
    if readme.is_file() and not readme.read_text(encoding="utf-8", errors="replace").startswith(REPORT_TITLE):
        return [str(readme)]
    return []


def write_report(result: ReplayResult, report: dict[str, object], out_dir: Path) -> Path:
    """Markdown plus PNGs: hit heatmaps per policy and metric bars with intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "replay.json", report, "--report", indent=2)
    names = list(result.runs)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
    vmax = max(float(r.hit_heat.max()) for r in result.runs.values() if r.hit_heat is not None) or 1.0
    for ax, name in zip(axes[0], names):
        heat = result.runs[name].hit_heat
        im = ax.imshow(heat, cmap="viridis", vmin=0, vmax=vmax)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("column")
        ax.set_ylabel("row")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="hits")
    fig.savefig(out_dir / "hit_heatmaps.png", dpi=110, bbox_inches="tight")
    plt.close(fig)

    policies: dict[str, dict[str, dict[str, object]]] = report["policies"]  # type: ignore[assignment]
    metrics = ("ndcg_2d", "viewport_recall", "page_recall", "coverage")
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 3.0))
    for ax, m in zip(axes, metrics):
        means = np.array([policies[n][m]["mean"] for n in names], dtype=float)
        cis = np.array([policies[n][m]["ci"] for n in names], dtype=float)
        ax.bar(range(len(names)), means, yerr=[means - cis[:, 0], cis[:, 1] - means], capsize=4, color="#4c72b0")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(m, fontsize=10)
    fig.tight_layout()
    fig.savefig(out_dir / "metrics.png", dpi=110)
    plt.close(fig)

    proto = report["protocol"]
    lines = [
        REPORT_TITLE,
        "",
        f"Model version `{proto['model_version']}`, split time {proto['split_time']}, "  # type: ignore[index]
        f"{proto['warm_requests']} warm and {proto['cold_requests']} cold-start requests from {proto['users']} users.",  # type: ignore[index]
        "",
        "## Policies (warm requests; mean [95% bootstrap interval, resampling users])",
        "",
        "| policy | " + " | ".join(SHOWN) + " |",
        "|---" * (len(SHOWN) + 1) + "|",
    ]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(_fmt(policies[n][m]) for m in SHOWN) + " |")
    resumes = {n: policies[n][RESUME] for n in names if RESUME in policies[n]}
    if resumes:
        first = next(iter(resumes.values()))
        lines += ["", f"## Resumed titles shown on the page ({RESUME}, over the {first['requests']} requests with one)", ""]
        lines += [f"- **{n}**: {_fmt(cell)}" for n, cell in resumes.items()]
    lines += ["", "## Paired differences (A - B)", "", "| A - B | ndcg_2d | viewport_recall | page_recall |", "|---|---|---|---|"]
    for pair, ms in report["paired"].items():  # type: ignore[union-attr]
        lines.append(f"| {pair} | " + " | ".join(_fmt(ms[m]) for m in ("ndcg_2d", "viewport_recall", "page_recall")) + " |")
    lines += ["", "## Cold-start slice", "", "| policy | " + " | ".join(PER_REQUEST) + " |", "|---" * (len(PER_REQUEST) + 1) + "|"]
    for n, ms in report["slices"]["cold"].items():  # type: ignore[index]
        lines.append(f"| {n} | " + " | ".join(_fmt(ms[m]) for m in PER_REQUEST) + " |")
    lines += ["", "## Share of hits by ranker", ""]
    for n in names:
        share = policies[n].get("ranker_hit_share", {})
        lines.append(f"- **{n}**: " + ", ".join(f"{k} {v:.0%}" for k, v in share.items()))  # type: ignore[union-attr]
    lines += ["", "## Where each ranker's rows are placed", "", "share of pages with a row of it / its rows per page / mean row of its first row (1 = top)", ""]
    for n in names:
        placed = policies[n].get("ranker_rows", {})
        lines.append(f"- **{n}**: " + ", ".join(  # type: ignore[union-attr]
            f"{k} {v['page_share']:.0%} / {v['rows_per_page']:.1f} / {v['mean_first_row']:.1f}" for k, v in placed.items()  # type: ignore[union-attr]
        ))
    lines += ["", "## Where hits land on the page", "", "![hit heatmaps](hit_heatmaps.png)", "", "![metrics](metrics.png)", ""]
    (out_dir / "README.md").write_text("\n".join(lines))
    return out_dir / "README.md"
