"""The Optuna sweeper of conf/hparams_search: hydra-optuna-sweeper with segsweep's study loop (segsweep.app.search)."""

from __future__ import annotations

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper


class FailureTolerantOptunaSweeper(OptunaSweeper):
    """Records a failed trial (raised, NaN or no value) as FAIL and stops only past ``max_failure_rate``."""

    def sweep(self, arguments: list[str]) -> None:
        # imported here: Hydra imports every plugin module whenever a Hydra app starts; keep that light
        from segsweep.app.search import run_study

        run_study(self.sweeper, arguments)
