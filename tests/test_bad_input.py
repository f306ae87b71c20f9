"""Bad input through the real entry points: one line naming the key, no traceback, exit code 1, no run dir left."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import HydraException

from segsweep.app.preflight import composition_error, error_line

from .helpers.commands import run_module

# (entry point, overrides, what the one error line must say); train's cases need no checkpoint
TRAIN_CASES = [
    (["data.batch_size=abc"], "data.batch_size='abc': expected an integer"),
    (["optimizer.lr=abc"], "optimizer.lr='abc': expected a number"),
    (["threads=abc"], "threads='abc': expected one of 'auto' or an integer or null"),
    (["trainer.max_epochs=abc"], "trainer.max_epochs='abc': expected an integer"),
    (["loss=dice", "loss.smooth=abc"], "loss.smooth='abc': expected a number"),
    (["model.base_channels=[16]"], "model.base_channels=[16]: expected an integer"),
    (["optimizer.lr=-1"], "optimizer.lr=-1: Invalid learning rate: -1"),
    (["model.num_classes=5"], "model.num_classes=5 but the data has 4 classes"),
    (["data.train_size=10000000"], "data.train_size=10000000: the scenes need"),
    # Hydra's own composition errors, composed before Hydra runs (app/preflight.py)
    (["data.fooo=1"], "Could not override 'data.fooo'. To append to your config use +data.fooo=1. Key 'fooo' is not in struct"),
    (["loss=hinge"], "Could not find 'loss/hinge'. Available options in 'loss': boundary, ce, compound, dice, dice_ce"),
    # what a bad override meant (app/override_hints.py), instead of Hydra's `+key=...`, which fails next
    (["data.root=/tmp"], "data.root=/tmp: data.root belongs to data=folder (or its presets: data=ade20k"),
    (["loss.gamma=2"], "loss.gamma=2: loss.gamma belongs to loss=focal"),
    (["los=dice"], "los=dice: los is no config group or key; did you mean loss=dice?"),
    (["optimizer.lrr=0.1"], "optimizer.lrr=0.1: optimizer.lrr is no key of optimizer; did you mean optimizer.lr=0.1?"),
    (["ckpt_path=outputs/x/loss=ce,seed=7"], """a value holding '=' must be quoted: 'ckpt_path="outputs/x/loss=ce,seed=7"'"""),
    (["data=folder"], "data.root is required: the dataset's folder"),
]
CHECKPOINT_CASES = [
    ("segsweep.predict", ["input=generate", "size=32", "tile_batch=abc"], "tile_batch='abc': expected an integer"),
    ("segsweep.predict", ["input=generate", "size=32", "overlap=abc"], "overlap='abc': expected a number"),
    ("segsweep.eval", ["data.batch_size=abc"], "data.batch_size='abc': expected an integer or null"),
    ("segsweep.eval", ["threads=abc"], "threads='abc': expected an integer or null"),
]


def assert_one_line_and_nothing_left(result, expected: str, run_dir: Path) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-2000:]
    (line,) = [line for line in output.splitlines() if "failed:" in line]
    assert expected in line
    assert "Traceback" not in output
    assert not run_dir.exists(), f"a rejected command leaves no run dir: {sorted(run_dir.rglob('*'))}"


@pytest.mark.parametrize(("overrides", "expected"), TRAIN_CASES, ids=[" ".join(case[0]) for case in TRAIN_CASES])
def test_train_rejects_bad_input_in_one_line(tmp_path, overrides, expected):
    run_dir = tmp_path / "run"
    result = run_module("segsweep.train", "debug=fast", *overrides, f"hydra.run.dir={run_dir}", check=False)
    assert_one_line_and_nothing_left(result, expected, run_dir)


@pytest.mark.parametrize(("module", "overrides", "expected"), CHECKPOINT_CASES, ids=[case[2] for case in CHECKPOINT_CASES])
def test_eval_and_predict_reject_bad_input_in_one_line(fast_run, tmp_path, module, overrides, expected):
    run_dir = tmp_path / "out"
    result = run_module(module, f"ckpt_path={fast_run}", *overrides, f"hydra.run.dir={run_dir}", check=False)
    assert_one_line_and_nothing_left(result, expected, run_dir)


@pytest.mark.parametrize(("module", "overrides"), [("segsweep.eval", []), ("segsweep.predict", ["input=generate"])])
def test_eval_and_predict_without_a_checkpoint_are_one_line(tmp_path, module, overrides):
    # no hydra.run.dir: the default one interpolates ckpt_path, which Hydra resolved into a traceback
    result = run_module(module, *overrides, cwd=tmp_path, check=False)
    assert_one_line_and_nothing_left(result, "ckpt_path is required: a checkpoint file or a run dir", tmp_path / "outputs")


def test_a_sweep_with_an_unknown_option_is_one_line_before_any_job(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_module("segsweep.train", "-m", "debug=fast", "loss=ce,hinge", f"hydra.sweep.dir={sweep_dir}", check=False)
    assert_one_line_and_nothing_left(result, "Could not find 'loss/hinge'", sweep_dir)


def test_a_sweep_in_which_a_job_failed_exits_1_after_its_report_and_says_so_last(tmp_path):
    sweep_dir = tmp_path / "sweep"
    result = run_module(
        "segsweep.train", "-m", "debug=fast", "optimizer.lr=0.001,abc", "+hydra.callbacks.report.plots=false",
        f"hydra.sweep.dir={sweep_dir}", check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "sweep failed: 1 of 2 jobs did not finish (optimizer.lr=abc)"
    assert "- `optimizer.lr=abc`: failed: ValueError: optimizer.lr='abc'" in (sweep_dir / "report.md").read_text()


def test_hydra_messages_become_one_line():
    message = "In 'train': Could not find 'loss/x'\n\nAvailable options in 'loss':\n\tce\n\tdice\nConfig search path:\n\tx"
    error = HydraException(message)
    assert error_line(error) == "In 'train': Could not find 'loss/x'. Available options in 'loss': ce, dice"


def test_help_and_sweeps_of_numbers_are_left_to_hydra():
    assert composition_error("train", ["--help"]) is None
    assert composition_error("train", ["-m", "seed=range(1,4)", "optimizer.lr=interval(0.001,0.01)"]) is None
    assert composition_error("train", ["-m", "data.fooo=range(1,4)"]).endswith("Key 'fooo' is not in struct")


def test_a_rejected_command_in_an_existing_dir_removes_only_its_own_files(tmp_path):
    run_dir = tmp_path / "mine"
    run_dir.mkdir()
    (run_dir / "notes.txt").write_text("keep me")
    result = run_module("segsweep.train", "debug=fast", "data.batch_size=abc", f"hydra.run.dir={run_dir}", check=False)
    assert result.returncode == 1
    # no .hydra/ left: the next command into this dir is a first command, not a resume of a run that never was
    assert sorted(path.name for path in run_dir.iterdir()) == ["notes.txt"]
    assert (run_dir / "notes.txt").read_text() == "keep me"


def test_the_traceback_is_one_switch_away(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGSWEEP_TRACEBACK", "1")
    result = run_module("segsweep.train", "optimizer.lr=abc", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert result.returncode == 1 and "Traceback" in result.stderr and "optimizer.lr='abc'" in result.stderr
