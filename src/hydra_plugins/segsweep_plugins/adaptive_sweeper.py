"""The adaptive-seeds sweeper (conf/hydra/sweeper/adaptive.yaml): more seeds only where a verdict is undecided.

Hydra's basic sweeper expands the swept parameters (except ``seed``) into groups; this one runs the first stage's
seeds of every group through the configured launcher (any of them), rebuilds the verdicts from the sweep dir
(segsweep.sweep.summary, with each look at alpha / looks), and launches the next stage's seeds for the best group
and the undecided ones only (segsweep.sweep.adaptive), until all are decided or the last stage ran. A rerun into
the same sweep dir skips completed jobs (train.py), so a killed adaptive sweep is finished by its own command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException


class AdaptiveSeedSweeper(BasicSweeper):
    """``stages``: increasing seed counts (seeds 1..n); ``alpha``: the family-wise error over all looks."""

    def __init__(
        self, stages: list[int], alpha: float = 0.05, params: dict[str, str] | None = None, max_batch_size: int | None = None
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, params=params)
        self.stages, self.alpha = list(stages), float(alpha)

    def sweep(self, arguments: list[str]) -> Any:
        # imported here: Hydra imports every plugin module whenever a Hydra app starts; keep that light
        from omegaconf import OmegaConf

        from segsweep.sweep.adaptive import Design, check_stages, run_design
        from segsweep.sweep.jobs import SEED_KEY
        from segsweep.sweep.summary import summarize

        try:
            stages = check_stages(self.stages)
        except ValueError as error:
            raise HydraException(str(error)) from None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        if any(override.get_key_element() == SEED_KEY for override in parser.parse_overrides(arguments)):
            raise HydraException(
                f"hydra/sweeper=adaptive chooses the seeds itself (stages {stages}): drop the `{SEED_KEY}=` override"
            )
        # an experiment's own seed list (e.g. loss_comparison's 1,2,3) gives way to the stages
        overrides = [
            override
            for override in parser.parse_overrides([*self._parse_config(), *arguments])
            if override.get_key_element() != SEED_KEY
        ]
        groups = self.split_arguments(overrides, None)[0]
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        def launch(batch: list[list[str]], first: int) -> Any:
            self.validate_batch_is_legal(batch)
            return self.launcher.launch(batch, initial_job_idx=first)

        def verdicts() -> dict[str, tuple[dict[str, str], str]]:
            return {group.label: (group.params, group.verdict) for group in summarize(sweep_dir).groups}

        return run_design(sweep_dir, groups, Design(stages=stages, alpha=self.alpha), launch, verdicts, SEED_KEY)
