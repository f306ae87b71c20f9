"""The Optuna sweeper's pieces: the search-space grammar, the per-trial sampler seed, the storages, the Pareto front."""

from __future__ import annotations

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from segsweep.app.search import objective, open_storage
from segsweep.app.search_space import SearchSpaceError, grid_choices, parse
from segsweep.app.trial_seed import TrialSeededSampler
from segsweep.sweep.pareto import pareto_front


def test_the_grammar_of_the_search_space_files_as_optuna_distributions():
    searched, fixed = parse(
        [
            "optimizer.lr=tag(log, interval(0.0003, 0.03))",
            "loss.gamma=interval(0.5, 4.0)",
            "model.depth=int(interval(2, 5))",
            "model.width=tag(log, int(interval(8, 64)))",
            "loss.beta=interval(1, 3)",
            "loss=choice(focal, dice)",
            "data.batch_size=range(4, 16, 4)",
            "loss.alpha=range(0.1, 0.5, 0.1)",
            "seed=choice(1, 2, 3)",
            "trainer.max_epochs=3",
        ]
    )
    assert searched == {
        "optimizer.lr": FloatDistribution(0.0003, 0.03, log=True),
        "loss.gamma": FloatDistribution(0.5, 4.0),
        "model.depth": IntDistribution(2, 5),
        "model.width": IntDistribution(8, 64, log=True),
        "loss.beta": FloatDistribution(1.0, 3.0),  # Hydra's interval is a float one unless cast with int(...)
        "loss": CategoricalDistribution(["focal", "dice"]),
        "data.batch_size": IntDistribution(4, 16, step=4),
        "loss.alpha": FloatDistribution(0.1, 0.5, step=0.1),
        "seed": CategoricalDistribution([1, 2, 3]),
    }
    assert fixed == {"trainer.max_epochs": "3"}


def test_a_later_override_of_a_key_wins_and_bad_ranges_name_their_key():
    searched, fixed = parse(
        ["optimizer.lr=interval(0.1, 0.2)", "optimizer.lr=0.05", "loss.gamma=2", "loss.gamma=interval(1, 3.5)"]
    )
    assert fixed == {"optimizer.lr": "0.05"} and searched == {"loss.gamma": FloatDistribution(1, 3.5)}
    with pytest.raises(SearchSpaceError, match=r"^optimizer.lr: .*low"):
        parse(["optimizer.lr=tag(log, interval(0.0, 0.1))"])
    with pytest.raises(SearchSpaceError, match="grid sampler needs choice"):
        grid_choices("loss.gamma", FloatDistribution(0.5, 4.0))
    assert grid_choices("data.batch_size", IntDistribution(4, 16, step=4)) == [4, 8, 12]  # as hydra-optuna-sweeper's grid
    assert grid_choices("loss", CategoricalDistribution(["focal", "dice"])) == ["focal", "dice"]


def drawn(sampler: optuna.samplers.BaseSampler, trials: int, study: optuna.Study | None = None) -> list[float]:
    study = study or optuna.create_study(sampler=sampler)
    values = []
    for _ in range(trials):
        trial = study.ask()
        values.append(trial.suggest_float("x", 0.0, 1.0))
        study.tell(trial, values[-1])
    return values


def test_each_trial_draws_with_the_seed_plus_its_number():
    random = lambda seed: optuna.samplers.RandomSampler(seed=seed)  # noqa: E731
    values = drawn(TrialSeededSampler(random, 7), 3)
    assert values == drawn(TrialSeededSampler(random, 7), 3)  # reproducible
    assert values == [drawn(random(7 + number), 1)[0] for number in range(3)]
    # a second process on the study (or a resumed run) starts at the next trial number: new points
    study = optuna.create_study(sampler=TrialSeededSampler(random, 7))
    drawn(study.sampler, 3, study)
    second = optuna.create_study(
        storage=study._storage, study_name=study.study_name, load_if_exists=True, sampler=TrialSeededSampler(random, 7)
    )
    assert set(drawn(second.sampler, 2, second)).isdisjoint(values)


def test_storages_and_the_objective_a_job_returns(tmp_path):
    assert open_storage(None) is None
    journal = open_storage(f"journal:{tmp_path / 'study.log'}")
    assert isinstance(journal, optuna.storages.JournalStorage)
    assert isinstance(open_storage(f"sqlite:///{tmp_path / 'study.db'}"), optuna.storages.RDBStorage)
    metrics = {"val/mIoU_best": 0.5, "test/loss": 0.2}
    assert objective(metrics.get, "val/mIoU_best") == 0.5
    assert objective(metrics.get, ["val/mIoU_best", "test/loss"]) == [0.5, 0.2]
    assert objective(metrics.get, None) is None


def test_the_pareto_front_keeps_the_points_no_other_beats_on_every_objective():
    points = [[0.6, 10.0], [0.7, 20.0], [0.5, 30.0], [0.7, 20.0]]
    assert pareto_front(points, [True, False]) == [0, 1, 3]  # 2 is beaten by 0 on both; ties both stay
    assert pareto_front(points, [True, True]) == [1, 2, 3]
