"""A sampler seeded afresh for every trial (seed + trial number), whatever Optuna sampler it wraps.

One seed for a whole study would make a resumed study replay the points of its first run, and several sweeper
processes sharing one study draw the same points. The trial number is unique in the study (the storage hands it
out), so ``seed + number`` differs between processes and across resumes, and each trial stays reproducible.
Samplers keep their state in the study's storage, not in the sampler object, so rebuilding one per trial loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, QMCSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState


class TrialSeededSampler(BaseSampler):
    """``build(seed)`` makes the wrapped sampler; before each trial it is rebuilt with ``seed + trial.number``."""

    def __init__(self, build: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._build, self._seed = build, seed
        self.sampler = build(seed)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        # a QMC sequence is one scrambled sequence for the whole study: its points are shared out through the storage
        if self._seed is not None and not isinstance(self.sampler, QMCSampler):
            self.sampler = self._build(self._seed + trial.number)
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution) -> Any:
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
