"""Pruning in an Optuna search: jobs report to their trials, a pruned trial is PRUNED, `pruned` and listed apart."""

from __future__ import annotations

from pathlib import Path

import optuna

from segsweep.app.pruning import was_pruned

from .helpers.commands import run_module
from .helpers.outputs import job_dirs, read_metrics

FAST = ["debug=fast", "trainer.max_epochs=3"]


def study_trials(sweep: Path, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'optuna.db'}").trials


def test_a_pruned_trial_stops_after_its_first_report_and_is_pruned_everywhere(tmp_path):
    sweep = tmp_path / "pruned"
    # a threshold no run reaches: every trial is pruned at its first validation
    pruner = "++hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.99}"
    run_module("segsweep.train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", pruner, *FAST, f"hydra.sweep.dir={sweep}")
    trials = study_trials(sweep, "segsweep")
    assert [trial.state.name for trial in trials] == ["PRUNED", "PRUNED"]
    assert all(list(trial.intermediate_values) == [0] for trial in trials)  # the first epoch's report (step 0), then stopped
    for job in job_dirs(sweep):
        record = read_metrics(job)
        assert was_pruned(job) and record["status"] == "pruned" and record["test"] == {}
        assert len(record["history"]) == 1 and "pruned at epoch 1 (val/mIoU_best=" in record["error"]
    report = (sweep / "report.md").read_text()
    assert "Pruned (stopped early by the search's pruner): 2 of 2 trials, 0 (`" in report
    # pruned trials are not failures: the failed list stays empty and the headline says why nothing is compared
    assert "## Failed or missing jobs\n\nNone: every job finished or was pruned." in report
    assert "(0 job(s) failed or missing, 2 pruned by the search, listed below)" in report


def test_an_unpruned_trial_reports_every_epoch_and_completes(tmp_path):
    sweep = tmp_path / "kept"
    pruner = "++hydra.sweeper.pruner={_target_:optuna.pruners.ThresholdPruner,lower:0.0}"
    run_module("segsweep.train", "hparams_search=optuna", "hydra.sweeper.n_trials=1", pruner, *FAST, f"hydra.sweep.dir={sweep}")
    (trial,) = study_trials(sweep, "segsweep")
    assert trial.state.name == "COMPLETE" and sorted(trial.intermediate_values) == [0, 1, 2]
    (job,) = job_dirs(sweep)
    assert read_metrics(job)["status"] == "completed" and not was_pruned(job)
