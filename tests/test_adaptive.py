"""Adaptive seeds: more seeds only for undecided groups, the looks' record, the report's account, a real sweep."""

from __future__ import annotations

import json
import math

import pytest

from segsweep.report import build_report
from segsweep.sweep.adaptive import DESIGN_FILE, Design, check_stages, next_groups, read_design, run_design
from segsweep.sweep.summary import summarize

from .helpers.commands import run_module
from .helpers.outputs import fake_job

# per seed: a clearly worse group, and two that no number of seeds here can tell apart
VALUES = {
    "bad": lambda seed: 0.30 + 0.01 * math.sin(seed),
    "a": lambda seed: 0.80 + 0.01 * math.sin(3 * seed),
    "b": lambda seed: 0.80 + 0.01 * math.cos(3 * seed),
}


def _design_run(sweep_dir, stages):
    launched = []

    def launch(batch, first):
        for overrides in batch:
            loss, seed = (item.split("=")[1] for item in overrides)
            value = VALUES[loss](int(seed))
            fake_job(sweep_dir / ",".join(overrides), overrides, value, [value])
        launched.append((first, batch))
        return batch

    def verdicts():
        return {group.label: (group.params, group.verdict) for group in summarize(sweep_dir).groups}

    run_design(sweep_dir, [[f"loss={name}"] for name in VALUES], Design(stages=stages, alpha=0.05), launch, verdicts)
    return launched


def test_a_decided_group_gets_no_more_seeds_and_the_undecided_ones_run_every_stage(tmp_path):
    launched = _design_run(tmp_path, [3, 5, 8])
    first_look = {item for _, batch in launched[:1] for overrides in batch for item in overrides if item.startswith("loss=")}
    later = {item for _, batch in launched[1:] for overrides in batch for item in overrides if item.startswith("loss=")}
    assert first_look == {"loss=bad", "loss=a", "loss=b"}
    assert later == {"loss=a", "loss=b"}  # the best group and the undecided one
    assert [first for first, _ in launched] == [0, 9, 13]  # job numbers go on across looks
    design = read_design(tmp_path)
    assert design.looks_done == 3 and design.decided == {"loss=bad": 3}
    assert design.seeds == {"loss=bad": 3, "loss=a": 8, "loss=b": 8}
    assert design.runs() == 19 and design.runs_saved() == 5
    report = build_report(tmp_path, num_images=0)
    assert report.looks == 3
    verdicts = {group.label: (group.verdict, group.decided_after) for group in report.groups}
    assert verdicts["loss=bad"] == ("worse", 3)
    markdown = (tmp_path / "report.md").read_text()
    assert "## Adaptive seeds" in markdown and "decided after 3 seeds" in markdown and "5 fewer than 8 seeds" in markdown
    assert "tested at 0.05/3 each time" in markdown
    rows = (tmp_path / "report.csv").read_text().splitlines()
    assert "decided_after_seeds" in rows[0]


def test_every_look_tests_at_alpha_over_the_looks(tmp_path):
    _design_run(tmp_path, [3, 5, 8])
    adaptive = summarize(tmp_path)
    (tmp_path / DESIGN_FILE).unlink()
    fixed = summarize(tmp_path)  # the same results read as one fixed design
    p = {group.label: group.p_holm for group in fixed.groups}
    assert adaptive.looks == 3 and fixed.looks == 1
    for group in adaptive.groups:
        if group.verdict != "best":
            assert group.p_holm == pytest.approx(p[group.label])
            assert (group.verdict == "worse") == (group.p_holm <= 0.05 / 3)


def test_all_decided_stops_at_once_and_stages_are_checked(tmp_path):
    assert next_groups({"x": "best", "y": "worse"}, Design([3, 5], 0.05)) == []
    assert next_groups({"x": "best", "y": "indistinguishable", "z": "worse"}, Design([3, 5], 0.05)) == ["x", "y"]
    with pytest.raises(ValueError, match="hydra.sweeper.stages must increase"):
        check_stages([3, 3])
    with pytest.raises(ValueError, match="hydra.sweeper.stages must"):
        check_stages(["three"])
    (tmp_path / DESIGN_FILE).write_text("{not json")
    assert read_design(tmp_path) is None


@pytest.mark.slow
def test_a_real_adaptive_sweep_runs_its_looks_and_a_rerun_skips_what_finished(tmp_path):
    sweep = tmp_path / "sweep"
    command = [
        "-m",
        "hydra/sweeper=adaptive",
        "hydra.sweeper.stages=[2,3]",
        "loss=ce,dice",
        "debug=fast",
        f"hydra.sweep.dir={sweep}",
    ]
    run_module("segsweep.train", *command)
    design = json.loads((sweep / DESIGN_FILE).read_text())
    assert design["stages"] == [2, 3] and design["looks_done"] >= 1
    jobs = sorted(path.name for path in sweep.iterdir() if (path / "metrics.json").is_file())
    assert {"loss=ce,seed=1", "loss=ce,seed=2", "loss=dice,seed=1", "loss=dice,seed=2"} <= set(jobs)
    assert sum(design["seeds"].values()) == len(jobs)
    assert "Adaptive seeds" in (sweep / "report.md").read_text()
    written = {job: (sweep / job / "metrics.json").stat().st_mtime_ns for job in jobs}
    run_module("segsweep.train", *command)  # the same command again: every finished job is skipped, none rerun
    assert {job: (sweep / job / "metrics.json").stat().st_mtime_ns for job in jobs} == written
    assert sorted(path.name for path in sweep.iterdir() if (path / "metrics.json").is_file()) == jobs
    refused = run_module("segsweep.train", *command, "seed=1,2", check=False)
    assert refused.returncode != 0 and "chooses the seeds itself" in refused.stdout + refused.stderr


def test_the_adaptive_configs_compose_and_the_sweeper_instantiates(make_config):
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate

    make_config("experiment=loss_comparison_adaptive")
    sweeper = HydraConfig.get().sweeper
    assert list(sweeper.stages) == [3, 5, 8, 12] and sweeper.alpha == 0.05
    assert "seed" in sweeper.params  # the loss study's own seeds, which the sweeper sets aside for its stages
    built = instantiate(sweeper)
    assert type(built).__name__ == "AdaptiveSeedSweeper" and built.stages == [3, 5, 8, 12]
