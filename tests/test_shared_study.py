"""Several sweeper processes on one study (two terminals, a SLURM array, several nodes): no trial lost or run twice."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna
import pytest
import yaml

from segsweep.app.search import open_storage

from .helpers.commands import run_module
from .helpers.outputs import job_dirs, read_metrics


def two_sweepers(tmp_path: Path, storage: str) -> list[optuna.trial.FrozenTrial]:
    """Two sweeper processes at once, each with its own sweep dir and 2 trials, on one storage; the study's trials."""
    common = ["hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage='{storage}'", "debug=fast"]
    common += ["hydra.launcher.processes=1"]
    with ThreadPoolExecutor(2) as pool:
        runs = [pool.submit(run_module, "segsweep.train", *common, f"hydra.sweep.dir={tmp_path / name}") for name in "ab"]
        for run in runs:
            run.result()
    return optuna.load_study(study_name="segsweep", storage=open_storage(storage)).trials


def assert_shared(tmp_path: Path, trials: list[optuna.trial.FrozenTrial]) -> None:
    assert sorted(trial.number for trial in trials) == [0, 1, 2, 3]
    assert all(trial.state.name == "COMPLETE" for trial in trials)
    drawn = {json.dumps(trial.params, sort_keys=True) for trial in trials}
    assert len(drawn) == 4  # each trial seeded with its own number: the processes drew different points
    assert [len(job_dirs(tmp_path / name)) for name in "ab"] == [2, 2]
    # every trial ran once, in one of the processes: the jobs' overrides are the trials' parameters
    ran = [
        set(yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())) for name in "ab" for job in job_dirs(tmp_path / name)
    ]
    asked = [{f"{key}={value}" for key, value in trial.params.items()} for trial in trials]
    assert sorted(map(sorted, (overrides & set().union(*asked) for overrides in ran))) == sorted(map(sorted, asked))
    values = sorted(trial.value for trial in trials)
    assert values == sorted(read_metrics(job)["best"]["val/mIoU"] for name in "ab" for job in job_dirs(tmp_path / name))


def test_two_sweepers_share_a_sqlite_study(tmp_path):
    assert_shared(tmp_path, two_sweepers(tmp_path, f"sqlite:///{tmp_path / 'shared.db'}"))


@pytest.mark.slow
def test_two_sweepers_share_a_journal_file_study(tmp_path):
    assert_shared(tmp_path, two_sweepers(tmp_path, f"journal:{tmp_path / 'study.log'}"))
