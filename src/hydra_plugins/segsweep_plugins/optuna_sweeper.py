"""segsweep's Optuna sweeper (conf/hydra/sweeper/optuna.yaml): a Hydra sweeper on Optuna >= 4, its study loop in
segsweep.app.search. The sampler and the pruner arrive as configs (``_recursive_: false``): the sweeper builds them,
the sampler reseeded for every trial (segsweep.app.trial_seed)."""

from __future__ import annotations

from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """``params``: the search space (segsweep.app.search_space); ``direction``: one or a list (multi-objective);
    ``storage``: an RDB URL or ``journal:<file>``; ``seed``: the sampler's, plus each trial's number."""

    def __init__(
        self,
        sampler: DictConfig,
        direction: Any = "minimize",
        storage: str | None = None,
        study_name: str | None = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        max_failure_rate: float = 0.0,
        seed: int | None = None,
        pruner: DictConfig | None = None,
        params: DictConfig | None = None,
    ) -> None:
        self.sampler, self.pruner, self.direction, self.params = sampler, pruner, direction, params
        self.storage, self.study_name, self.seed = storage, study_name, seed
        self.n_trials, self.n_jobs, self.max_failure_rate = int(n_trials), int(n_jobs), float(max_failure_rate)
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.job_idx = config, hydra_context, 0
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = config.hydra.sweep.dir

    def sweep(self, arguments: list[str]) -> None:
        # imported here: Hydra imports every plugin module whenever a Hydra app starts; keep that light
        from segsweep.app.search import run_study

        run_study(self, arguments)
