"""The report of a hyperparameter search: the top trials (a column per searched parameter), search.png, rounded names."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from segsweep.report import build_report, main
from segsweep.runs.overrides import shown_value
from segsweep.sweep.search import plot_data, read_search
from segsweep.sweep.summary import summarize

from .helpers.outputs import assert_png, fake_job, top_trials_rows

OPTUNA = "hydra_plugins.segsweep_plugins.optuna_sweeper.OptunaSweeper"
PARAMS = {"optimizer.lr": "tag(log, interval(0.0003, 0.03))", "loss.gamma": "interval(0.5, 4.0)", "loss": "choice(focal, dice)"}
# in the order the trials ran: lr, gamma, loss, best val mIoU (the objective), test mIoU, status
TRIALS = [
    ("0.00204722352812965", "0.5004003118607071", "focal", 0.61, 0.60, "completed"),
    ("0.0012072199394143831", "1.8886861598073448", "dice", 0.72, 0.70, "completed"),
    ("0.0007073619217940215", "3.25", "focal", 0.90, 0.90, "failed"),
    ("0.02", "2.0", "dice", 0.55, 0.50, "completed"),
]
HEADER = "| trial | optimizer.lr | loss.gamma | loss | objective (val/mIoU_best) | test mIoU | status |"


def optuna_sweep(
    sweep_dir: Path,
    direction: str | list[str] = "maximize",
    multirun_yaml: bool = True,
    metric: str | list[str] = "val/mIoU_best",
) -> Path:
    """An Optuna-like sweep dir: jobs named as Optuna trials' job dirs are, their sweeper in multirun.yaml or, as the
    Optuna sweeper leaves it, only in each job's .hydra/."""
    sweeper = {"_target_": OPTUNA, "direction": direction, "params": PARAMS}
    config = {"optimized_metric": metric, "hydra": {"sweeper": sweeper}}
    for number, (lr, gamma, loss, objective, test, status) in enumerate(TRIALS):
        # named so that name order is not run order: the trial number comes from when the job started
        job = sweep_dir / f"loss={loss},loss.gamma={float(gamma):.4g},optimizer.lr={float(lr):.4g}"
        overrides = [f"optimizer.lr={lr}", f"loss.gamma={gamma}", f"loss={loss}", "hparams_search=optuna"]
        fake_job(job, overrides, test, [0.1, objective], status)
        os.utime(job / ".hydra" / "overrides.yaml", (1_000_000 + number, 1_000_000 + number))
        if not multirun_yaml:
            (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": config["hydra"]}, sort_keys=False))
            (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"optimized_metric": config["optimized_metric"]}))
    if multirun_yaml:
        (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return sweep_dir


def test_a_search_report_has_the_top_trials_with_a_column_per_searched_parameter(tmp_path):
    report = build_report(optuna_sweep(tmp_path), num_images=0)
    text = (tmp_path / "report.md").read_text()
    header, *rows = top_trials_rows(text)
    assert f"| {' | '.join(header)} |" == HEADER
    assert [row[0] for row in rows] == ["1", "0", "3", "2"]  # by objective, best first; the failed trial last
    assert rows[1] == ["0", "0.002047", "0.5004", "focal", "0.61", "0.6", "completed"]
    assert rows[-1][-3:] == ["-", "0.9", "failed"]  # no objective: the study counted none
    assert "| **1** | **0.001207** |" in text  # the best trial in bold
    assert "![search](search.png)" in text
    assert "search" in report.paths
    assert_png(tmp_path / "search.png")


def test_the_comparison_table_names_groups_by_rounded_values(tmp_path):
    build_report(optuna_sweep(tmp_path), num_images=0, plots=False)
    text = (tmp_path / "report.md").read_text()
    assert "| **loss=dice,loss.gamma=1.889,optimizer.lr=0.001207** |" in text


def test_a_minimizing_search_read_from_the_jobs_hydra_dirs_ranks_lowest_first(tmp_path, capsys):
    optuna_sweep(tmp_path, direction="minimize", multirun_yaml=False)
    assert main([str(tmp_path), "--num-images", "0"]) == 0
    printed = capsys.readouterr().out
    assert "Top trials by val/mIoU_best (lowest first)" in printed
    assert str(tmp_path / "search.png") in printed
    header, *rows = top_trials_rows((tmp_path / "report.md").read_text())
    assert [row[0] for row in rows] == ["3", "0", "1", "2"]


def test_the_plot_data_follows_the_search_space(tmp_path):
    search = read_search(summarize(optuna_sweep(tmp_path)))
    plot = plot_data(search)
    assert plot.numbers == [0, 1, 3]
    assert plot.best == [0.61, 0.72, 0.72]  # the running best of a maximized objective
    assert plot.unranked == 1
    assert plot.params["optimizer.lr"][0] == "log"
    assert plot.params["loss.gamma"][0] == "linear"
    assert plot.params["loss"] == ("category", ["focal", "dice", "dice"])


def test_a_grid_sweep_has_no_top_trials(tmp_path):
    basic = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None}}}
    (tmp_path / "multirun.yaml").write_text(yaml.safe_dump(basic))
    for loss in ("ce", "dice"):
        fake_job(tmp_path / f"loss={loss}", [f"loss={loss}"], 0.5, [0.4, 0.5])
    report = build_report(tmp_path, num_images=0)
    assert read_search(report) is None
    assert "## Top trials" not in (tmp_path / "report.md").read_text()
    assert not (tmp_path / "search.png").exists()


def test_floats_are_shown_at_four_significant_digits_and_nothing_else_changes():
    assert shown_value("0.00204722352812965") == "0.002047"
    assert shown_value("2.7559267640273755e-06") == "2.756e-06"
    assert shown_value("12345") == "12345"
    assert shown_value("focal") == "focal"
    assert shown_value("<default>") == "<default>"


def pareto_rows(text: str) -> list[str]:
    section = text.split("## Pareto front", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| trial")]


def test_a_multi_objective_search_reports_its_pareto_front(tmp_path):
    metrics = ["val/mIoU_best", "test/mIoU"]
    build_report(optuna_sweep(tmp_path / "both", ["maximize", "maximize"], metric=metrics), num_images=0, plots=False)
    text = (tmp_path / "both" / "report.md").read_text()
    assert "| trial | optimizer.lr | loss.gamma | loss | val/mIoU_best (max) | test/mIoU (max) |" in text
    assert pareto_rows(text) == ["| 1 | 0.001207 | 1.889 | dice | 0.72 | 0.7 |"]  # it beats 0 and 3 on both; 2 failed
    build_report(optuna_sweep(tmp_path / "trade", ["maximize", "minimize"], metric=metrics), num_images=0, plots=False)
    rows = pareto_rows((tmp_path / "trade" / "report.md").read_text())
    assert [row.split(" | ")[0] for row in rows] == ["| 0", "| 1", "| 3"]  # each best on one side of the trade-off


def test_a_single_objective_search_has_no_pareto_front(tmp_path):
    build_report(optuna_sweep(tmp_path), num_images=0, plots=False)
    assert "## Pareto front" not in (tmp_path / "report.md").read_text()
