"""Optuna search helpers for the hydra-optuna-sweeper configs (conf/hparams_search)."""

from __future__ import annotations

from pathlib import Path


def existing_trials(storage: str, study_name: str) -> int:
    """Trials already in the study (0 if its sqlite file or the study does not exist yet)."""
    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        return 0
    import optuna  # only sweeps with the Optuna sweeper pay for this import

    try:
        return len(optuna.load_study(study_name=study_name, storage=storage).trials)
    except KeyError:
        return 0


def resumable_seed(seed: int, storage: str, study_name: str) -> int:
    """The sampler's seed plus the trials so far: a resumed study draws new points instead of
    replaying the first ones of its earlier runs, and stays reproducible."""
    return int(seed) + existing_trials(storage, study_name)
