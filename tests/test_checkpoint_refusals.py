"""Checkpoints that are not what their commands need: every refusal is one line that names the file, exit code 1."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from .helpers.commands import run_module


def _config(edit: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], Any]:
    def change(checkpoint: dict[str, Any]) -> dict[str, Any]:
        edit(checkpoint["hyper_parameters"]["config"])
        return checkpoint

    return change


CRAFTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "a list": lambda checkpoint: [1, 2, 3],
    "hyper_parameters an int": lambda checkpoint: checkpoint | {"hyper_parameters": 5},
    "state_dict a list": lambda checkpoint: checkpoint | {"state_dict": [1]},
    "model a string": _config(lambda config: config.update(model="x")),
    "num_classes a string": _config(lambda config: config["model"].update(num_classes="many")),
    "no Lightning loops": lambda checkpoint: {key: value for key, value in checkpoint.items() if key != "loops"},
}
# what each command reads of a checkpoint: eval and predict the weights and config, fit also Lightning's own keys
NEEDS_FIT = {"no Lightning loops"}


def crafted(fast_run: Path, folder: Path, craft: str) -> Path:
    checkpoint = torch.load(fast_run / "checkpoints" / "best.ckpt", weights_only=True)
    path = folder / "crafted.ckpt"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(CRAFTS[craft](copy.deepcopy(checkpoint)), path)
    return path


def assert_one_line_naming(result: Any, path: Path, command: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert f"{command} failed: {path}: " in last, last


@pytest.mark.slow
@pytest.mark.parametrize("craft", [craft for craft in CRAFTS if craft not in NEEDS_FIT])
def test_eval_names_the_checkpoint_it_cannot_load(fast_run, tmp_path, craft):
    path = crafted(fast_run, tmp_path, craft)
    result = run_module("segsweep.eval", f"ckpt_path={path}", f"hydra.run.dir={tmp_path / 'eval'}", check=False)
    assert_one_line_naming(result, path, "eval")
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
@pytest.mark.parametrize("craft", ["a list", "state_dict a list", "no Lightning loops"])
def test_training_from_a_checkpoint_file_it_cannot_continue_names_it(fast_run, tmp_path, craft):
    path = crafted(fast_run, tmp_path, craft)
    run_dir = tmp_path / "run"
    result = run_module("segsweep.train", "debug=fast", f"ckpt_path={path}", f"hydra.run.dir={run_dir}", check=False)
    assert_one_line_naming(result, path, "train")
    assert not run_dir.exists()  # refused before any work: no run dir left behind


@pytest.mark.slow
@pytest.mark.parametrize("craft", ["hyper_parameters an int", "no Lightning loops"])
def test_continuing_a_run_dir_whose_last_checkpoint_is_crafted_names_the_file(fast_run, tmp_path, craft):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.move(crafted(fast_run, tmp_path, craft), run_dir / "checkpoints" / "last.ckpt")
    result = run_module("segsweep.train", f"ckpt_path={run_dir}", check=False)
    assert_one_line_naming(result, run_dir / "checkpoints" / "last.ckpt", "train")
