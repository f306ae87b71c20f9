"""The console contract: a run says where it is and how it did, a sweep prints one line per finished job, a line per
epoch outside a terminal, no known third-party noise, the run's log file holds its log, HPARAMS names group choices."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from segsweep.app.banner import end_line, results_line
from segsweep.runs.choices import recorded_choices
from segsweep.runs.console import NOISE_MESSAGES, NOISE_WARNINGS, route_to_run_log, significant

from .helpers.commands import run_module

FAST = ["debug=fast", "trainer.max_epochs=2"]


def no_noise(output: str) -> list[str]:
    patterns = [re.compile(pattern) for pattern in NOISE_WARNINGS] + list(NOISE_MESSAGES)
    return [line for line in output.splitlines() if any(pattern.match(line) for pattern in patterns)]


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> tuple[Path, str]:
    log_dir = tmp_path_factory.mktemp("console")
    result = run_module("segsweep.train", *FAST, "loss=weighted_ce", f"paths.log_dir={log_dir}")
    (run_dir,) = (log_dir / "train" / "runs").iterdir()
    return run_dir, result.stdout + result.stderr


@pytest.mark.slow
def test_a_run_prints_its_dir_at_start_and_end_with_its_results(single_run):
    run_dir, output = single_run
    assert f"run dir: {run_dir}" in output
    assert re.search(r"run: loss=weighted_ce model=unet data=scenes .*device cpu", output)
    assert re.search(rf"done: {re.escape(str(run_dir))}  best val mIoU [\d.]+  test mIoU [\d.]+", output)


@pytest.mark.slow
def test_outside_a_terminal_every_epoch_gets_one_line(single_run):
    _, output = single_run
    assert re.search(r"epoch 1/2  train/loss [\d.]+  val/loss [\d.]+  val/mIoU [\d.]+", output)
    assert re.search(r"epoch 2/2  ", output)


@pytest.mark.slow
def test_a_run_prints_no_known_noise_and_rounds_its_metrics(single_run):
    _, output = single_run
    assert no_noise(output) == []
    assert "Tip:" not in output
    # Lightning's test table (every float in full) is replaced by one rounded line
    assert not re.search(r"\d\.\d{6,}", output.split("test: ", 1)[1].splitlines()[0])


@pytest.mark.slow
def test_the_run_log_holds_the_run_log_with_warnings(single_run):
    run_dir, _ = single_run
    text = (run_dir / "train.log").read_text()
    assert "run dir:" in text
    assert "epoch 2/2" in text
    assert "Restoring states from the checkpoint" in text  # Lightning's own messages reach the file


@pytest.mark.slow
def test_hparams_show_the_group_choices_by_name(single_run):
    run_dir, _ = single_run
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["choice/loss"].string_value == "weighted_ce"
    assert hparams["choice/model"].string_value == "unet"


@pytest.mark.slow
def test_a_single_run_is_named_by_its_overrides_after_its_time(single_run):
    run_dir, _ = single_run
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_debug=fast,loss=weighted_ce,trainer.max_epochs=2", run_dir.name)


@pytest.mark.slow
def test_a_sweep_prints_one_line_per_finished_job_and_keeps_job_output_in_its_log(tmp_path):
    sweep = tmp_path / "sweep"
    command = [*FAST, "trainer.enable_model_summary=true", "loss=ce,dice", "threads=1", f"hydra.sweep.dir={sweep}"]
    result = run_module("segsweep.train", "-m", *command)
    lines = [line for line in result.stdout.splitlines() if line.startswith("#") and "test mIoU" in line]
    assert [line.split()[:2] for line in lines] == [["#0", "loss=ce"], ["#1", "loss=dice"]]
    assert all(re.search(r"test mIoU [\d.]+  \d+ s  completed$", line) for line in lines)
    # the jobs' own output (epoch lines, run dir) is in their log files, not on the console
    assert "epoch 1/2" not in result.stdout + result.stderr
    assert "Total params" not in result.stdout + result.stderr
    assert "Total params" in (sweep / "loss=dice" / "train.log").read_text()
    assert "epoch 2/2" in (sweep / "loss=dice" / "train.log").read_text()
    assert no_noise(result.stdout + result.stderr) == []


def test_numbers_are_rounded_to_four_significant_digits():
    assert significant(0.9781285524368286) == "0.9781"
    assert significant(float("nan")) == "-"
    assert results_line({"test/mIoU": 0.123456, "test/iou/car": 0.5, "val/loss": 1.0}) == "test: mIoU 0.1235  iou/car 0.5"
    assert end_line(Path("/r"), {"test/mIoU": 0.5}) == "done: /r  best val mIoU -  test mIoU 0.5"


def test_known_noise_is_dropped_on_the_handlers_so_child_loggers_are_filtered_too():
    root = logging.getLogger()
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    root.addHandler(handler)
    try:
        route_to_run_log()
        # a child of Lightning's logger of its own: other tests' logging setups may have disabled or raised the real ones
        child = logging.getLogger("pytorch_lightning.segsweep_console_test")
        child.setLevel(logging.INFO)
        child.warning("💡 Tip: try installing [litlogger](https://pypi.org/project/litlogger/)")
        child.warning("a message that helps")
    finally:
        root.removeHandler(handler)
        logging.captureWarnings(False)
    assert seen == ["a message that helps"]


def test_group_choices_are_read_from_the_runs_first_command(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n      loss: weighted_ce\n      experiment: null\n      hydra/launcher: basic\n"
    )
    assert recorded_choices(str(tmp_path)) == {"loss": "weighted_ce"}
    assert recorded_choices(str(tmp_path / "missing")) == {}
