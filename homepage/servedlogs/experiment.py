"""The served-log experiment on a synthetic world: log pages, estimate examination, train
the page model with and without position-bias correction, and measure every policy's
TRUE expected plays on held-out users, beside an oracle greedy page.

Users are split once: logs come from the training users, quality is measured on the others
at times drawn from the same post-cut-off window. ``bench/served_logs.py`` prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from fixtures.simulator import BrowsingSimulator
from homepage.eventlog import EventLog
from homepage.page import PageModels
from homepage.servedlogs.examination import estimate_examination
from homepage.servedlogs.quality import ORACLE, PolicyEntry, paired_difference, summarise, true_expected_plays
from homepage.servedlogs.replay import LOGGED, ReplayPolicy, replay_served_logs
from homepage.servedlogs.simulate import LogSpec, simulate_served_logs
from homepage.servedlogs.training import fit_on_stage_data, served_stage_data_multi


@dataclass(frozen=True)
class ExperimentSpec:
    pages: int = 1200
    visits: int = 20
    random_share: float = 0.05
    logging_policy: str = "template"
    rows: int = 10
    cols: int = 10
    test_share: float = 0.2
    eval_requests: int = 400
    replay_pages: int = 200  # held-out served pages for the replay-estimator check (0: skip)
    num_rounds: int = 200
    floor: float = 0.05
    objective: str = "lambdarank"  # or "regression" on the label values
    seed: int = 0


def with_page_model(models: PageModels, page_model: object, artwork: bool = True) -> PageModels:
    """``models`` with another page model (and without the artwork selector when ``artwork`` is False)."""
    return PageModels(models.version, models.config_hash, models.catalog, models.rankers, page_model=page_model,  # type: ignore[arg-type]
                      artwork=models.artwork if artwork else None, rules=models.rules)


def run_experiment(
    sim: BrowsingSimulator,
    log: EventLog,
    models: PageModels,
    start: int,
    end: int,
    half_life: float,
    spec: ExperimentSpec,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """The whole experiment; returns a JSON-ready report."""
    import time

    say = progress or (lambda s: None)
    # row choice is what is measured: every page, the oracle's included, shows the neutral artwork
    models = with_page_model(models, models.page_model, artwork=False)
    rng = np.random.default_rng(spec.seed)
    users = rng.permutation(log.user_ids)
    n_test = max(1, int(users.size * spec.test_share))
    test_u, train_u = users[:n_test], users[n_test:]
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    say("simulate served logs")
    logspec = LogSpec(spec.pages, start, end, spec.random_share, spec.logging_policy, spec.rows, spec.cols, half_life, spec.seed, spec.visits)
    logs = simulate_served_logs(sim, log, models, train_u, logspec)
    timings["simulate"] = time.perf_counter() - t0

    est = estimate_examination(logs, spec.rows, spec.cols)
    true_exam = sim.examination(spec.rows, spec.cols)
    true_rel = true_exam / true_exam[0, 0]
    err = np.abs(est.theta - true_rel)

    t0 = time.perf_counter()
    say("stage data and training: corrected, uncorrected, true examination")
    (d_corr, d_unc, d_true), rep = served_stage_data_multi(logs, log, models, [est.theta, None, true_rel], half_life, spec.floor, graded=spec.objective != "regression")
    m_corr = fit_on_stage_data(d_corr, rep, models, True, spec.num_rounds, spec.objective)
    m_unc = fit_on_stage_data(d_unc, rep, models, False, spec.num_rounds, spec.objective)
    m_true = fit_on_stage_data(d_true, rep, models, True, spec.num_rounds, spec.objective)
    timings["train"] = time.perf_counter() - t0

    corrected, uncorrected, true_corr = with_page_model(models, m_corr), with_page_model(models, m_unc), with_page_model(models, m_true)
    entries = [
        PolicyEntry("corrected", corrected),
        PolicyEntry("uncorrected", uncorrected),
        PolicyEntry("corrected-true-examination", true_corr),
        PolicyEntry(f"logging ({spec.logging_policy})", models, spec.logging_policy),
        PolicyEntry("row-ranking", models, "row-ranking"),
        PolicyEntry("template", models, "template"),
        PolicyEntry(ORACLE, None),
    ]
    entries = [e for i, e in enumerate(entries) if e.name not in {x.name for x in entries[:i]}]
    t0 = time.perf_counter()
    say("true expected plays on held-out users")
    eval_u = rng.choice(test_u, size=spec.eval_requests, replace=True)
    eval_t = rng.integers(start, end + 1, size=spec.eval_requests)
    vals = true_expected_plays(sim, log, entries, eval_u, eval_t, spec.rows, spec.cols, half_life)
    timings["evaluate"] = time.perf_counter() - t0

    report: dict[str, object] = {
        "spec": asdict(spec),
        "logs": {"pages": int(logs["page_id"].nunique()), "impressions": int(len(logs)), "plays": int(logs["played"].sum()),
                 "randomised_pages": est.pages, "training": asdict(rep)},
        "examination": {
            "method": est.method,
            "max_abs_error": float(err.max()),
            "mean_abs_error": float(err.mean()),
            "viewport_max_abs_error": float(err[:4, :6].max()),
            "estimate": np.round(est.theta, 4).tolist(),
            "truth": np.round(true_rel, 4).tolist(),
        },
        "true_expected_plays": summarise(vals),
        "paired": {
            "corrected - uncorrected": paired_difference(vals["corrected"], vals["uncorrected"]),
            "corrected - logging": paired_difference(vals["corrected"], vals[f"logging ({spec.logging_policy})"]),
        },
    }
    if spec.replay_pages > 0:
        t0 = time.perf_counter()
        say("replay from held-out served logs")
        held = simulate_served_logs(sim, log, models, test_u, LogSpec(spec.replay_pages, start, end, spec.random_share, spec.logging_policy, spec.rows, spec.cols, half_life, spec.seed + 1, spec.visits))
        pols = [ReplayPolicy("corrected", corrected, "stage-wise"), ReplayPolicy("uncorrected", uncorrected, "stage-wise"), ReplayPolicy("row-ranking", models, "row-ranking")]
        rep_json = replay_served_logs(held, log, pols, est.theta, half_life, spec.floor).to_json()
        lay = held.drop_duplicates(["user_id", "ts", "policy"])
        truth_vals = true_expected_plays(sim, log, [PolicyEntry("corrected", corrected), PolicyEntry("uncorrected", uncorrected), PolicyEntry("row-ranking", models, "row-ranking")],
                                         lay["user_id"].to_numpy(), lay["ts"].to_numpy(), spec.rows, spec.cols, half_life)
        rep_json["true_expected_plays_same_requests"] = {k: float(v.mean()) for k, v in truth_vals.items()}
        rep_json["logged_true_note"] = f"{LOGGED}: observed plays per visit on the served pages"
        report["replay"] = rep_json
        timings["replay"] = time.perf_counter() - t0
    report["seconds"] = timings
    return report
