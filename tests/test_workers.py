"""The default launcher's workers (app/workers.py): the first batch counted as BasicSweeper will launch it, results
in job order whatever order they finish in, and the callbacks told once when fewer jobs remain than workers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from segsweep.app import workers
from segsweep.app.config import CONFIG_DIR
from segsweep.app.resolvers import register_resolvers


def composed(*overrides: str) -> Any:
    register_resolvers()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()


def grid(params: dict[str, str], task: list[str], max_batch_size: int | None = None) -> Any:
    sweeper = {"_target_": workers.BASIC_SWEEPER, "params": params, "max_batch_size": max_batch_size}
    return OmegaConf.create({"hydra": {"sweeper": sweeper, "overrides": {"task": task}}})


def test_the_first_batch_is_the_grid_of_the_sweeper_params_and_the_command_line():
    assert workers.first_batch_size(composed("experiment=loss_comparison")) == 15
    assert workers.first_batch_size(grid({"loss": "ce,dice", "seed": "1,2,3"}, ["seed=1,2"])) == 4  # the command line wins
    assert workers.first_batch_size(grid({}, ["loss=ce,dice,focal", "lr=0.1"])) == 3
    assert workers.first_batch_size(grid({}, ["loss=ce,dice,focal"], max_batch_size=2)) == 2
    assert workers.first_batch_size(composed("hparams_search=optuna")) is None  # an Optuna study asks as it goes


class Told:
    def __init__(self) -> None:
        self.running: list[int] = []

    def on_workers_idle(self, config: Any, running: int, **kwargs: Any) -> None:
        self.running.append(running)


class Finishing:
    """joblib.Parallel that hands back its jobs' (number, result) in a given order, without running them."""

    def __init__(self, order: list[int]) -> None:
        self.order, self.arguments = order, {}

    def __call__(self, **arguments: Any) -> Finishing:
        self.arguments = arguments
        return self

    def run(self, jobs: Any) -> Any:
        jobs = list(jobs)
        for position in self.order:
            _, args, _ = jobs[position]
            yield args[0], f"job {args[0]}"


def test_results_come_back_in_job_order_and_the_callbacks_hear_once_when_workers_idle(monkeypatch, tmp_path):
    finishing = Finishing([1, 0, 3, 2, 4])
    monkeypatch.setattr(workers, "Parallel", lambda **arguments: finishing(**arguments).run)
    monkeypatch.setattr(workers, "configure_log", lambda *args: None)
    told, silent = Told(), object()  # a callback without the hook is left alone
    config = OmegaConf.create({"hydra": {"hydra_logging": None, "verbose": False, "sweep": {"dir": str(tmp_path / "s")}}})
    launcher = SimpleNamespace(
        config=config,
        joblib={"n_jobs": 2},
        hydra_context=SimpleNamespace(callbacks=SimpleNamespace(callbacks=[silent, told])),
        task_function=None,
    )
    results = workers.launch(launcher, [[f"seed={seed}"] for seed in range(5)], initial_job_idx=10)
    assert results == [f"job {number}" for number in range(10, 15)]
    assert told.running == [1]  # after the 4th result: one job runs, one worker idles until the end
    assert finishing.arguments["backend"] == "loky" and finishing.arguments["n_jobs"] == 2
    assert finishing.arguments["return_as"] == "generator_unordered"
    assert (tmp_path / "s").is_dir()
