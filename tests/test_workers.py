"""The default launcher's workers (app/workers.py): the first batch counted as BasicSweeper will launch it, results
in job order whatever order they finish in, and the callbacks told once when fewer jobs remain than workers."""

from __future__ import annotations

import subprocess
import sys
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
    assert workers.batch_sizes(grid({}, ["loss=ce,dice,focal", "seed=1,2"], max_batch_size=4)) == [4, 2]


def test_a_worker_leaves_its_imports_out_of_the_garbage_collectors_scans():
    code = "import gc; from segsweep.app import workers; workers._import_job_stack(); print(gc.get_freeze_count())"
    frozen = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert int(frozen) > 100_000  # Lightning's and torch's objects: loky's collection after each job skips them


def test_a_command_leaves_what_is_alive_at_exit_out_of_the_final_collection(tmp_path):
    # an exit hook registered before the command's runs after it (they run in reverse) and sees the objects frozen
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen at exit', gc.get_freeze_count() > 0))\n"
        "from segsweep.app.preflight import checked_command\n"
        "sys.argv = ['segsweep-train', 'seed=3']\n"
        "checked_command('training', 'train')(lambda cfg: print('ran', gc.get_freeze_count() == 0))()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert result.stdout.splitlines() == ["ran True", "frozen at exit True"]


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


def test_the_workers_are_released_when_the_sweeps_last_jobs_are_done(monkeypatch, tmp_path):
    monkeypatch.setattr(workers, "Parallel", lambda **arguments: Finishing([1, 0, 2])(**arguments).run)
    monkeypatch.setattr(workers, "configure_log", lambda *args: None)
    released = []
    monkeypatch.setattr(workers, "_release_workers", lambda: released.append(True))
    config = grid({}, ["seed=1,2,3,4,5"], max_batch_size=3)
    config.hydra.merge_with({"hydra_logging": None, "verbose": False, "sweep": {"dir": str(tmp_path / "s")}})
    context = SimpleNamespace(callbacks=SimpleNamespace(callbacks=[]))
    launcher = SimpleNamespace(config=config, joblib={"n_jobs": 2}, hydra_context=context, task_function=None)
    workers.launch(launcher, [["seed=1"], ["seed=2"], ["seed=3"]], initial_job_idx=0)
    assert released == []  # a second batch of 2 jobs follows: the same workers run it
    monkeypatch.setattr(workers, "Parallel", lambda **arguments: Finishing([1, 0])(**arguments).run)
    workers.launch(launcher, [["seed=4"], ["seed=5"]], initial_job_idx=3)
    assert released == [True]
    launcher.config = OmegaConf.merge(config, {"hydra": {"sweeper": {"_target_": "an.optuna.Sweeper"}}})
    workers.launch(launcher, [["seed=4"], ["seed=5"]], initial_job_idx=3)
    assert released == [True]  # a study may ask for more jobs: its workers stay


def test_releasing_the_workers_lets_them_exit_without_waiting():
    from joblib import Parallel, delayed

    Parallel(n_jobs=2, backend="loky")(delayed(abs)(number) for number in (-1, -2))
    from joblib.externals.loky import reusable_executor

    executor = reusable_executor._executor
    workers._release_workers()
    assert executor._flags.shutdown  # the executor no longer takes jobs; its workers are told to exit
    Parallel(n_jobs=2, backend="loky")(delayed(abs)(number) for number in (-1, -2))  # a later Parallel starts anew
