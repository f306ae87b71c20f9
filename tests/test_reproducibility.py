"""Reruns give the same numbers, a killed run resumes exactly, failures are recorded, checkpoints are safe."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from segsweep.export_scenes import export
from segsweep.runs.checkpoint import CheckpointError, load_checkpoint
from segsweep.runs.manifest import manifest as run_manifest

from .helpers.commands import REPO_ROOT, run_module
from .helpers.outputs import read_metrics

# Small but with enough batches per epoch that a kill lands inside an epoch.
SMALL = [
    "debug=fast",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "trainer.limit_test_batches=null",
    "data.train_size=96",
    "data.val_size=16",
    "data.test_size=16",
    "trainer.max_epochs=3",
    "callbacks.rich_progress_bar=null",
]


def state(run_dir: Path, name: str = "last.ckpt") -> dict:
    return torch.load(run_dir / "checkpoints" / name, weights_only=True, map_location="cpu")["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [key for key in a if not torch.equal(a[key], b[key])]
    assert not different, different[:5]


def numbers(run_dir: Path) -> dict:
    """metrics.json without wall times and provenance, which legitimately differ between runs."""
    metrics = read_metrics(run_dir)
    history = [{key: value for key, value in entry.items() if key != "time_s"} for entry in metrics["history"]]
    return {"best": metrics["best"], "test": metrics["test"], "history": history}


def test_same_seed_gives_bit_identical_weights_and_metrics_for_any_worker_count(tmp_path):
    runs = {}
    small = [*SMALL, "trainer.max_epochs=2", "data.train_size=48"]
    for name, extra in (("a", []), ("b", []), ("workers", ["data.num_workers=2"])):
        runs[name] = tmp_path / name
        run_module("segsweep.train", *small, *extra, f"hydra.run.dir={runs[name]}")
    assert read_metrics(runs["a"])["config"]["trainer"]["deterministic"] is True  # the CPU default
    for other in ("b", "workers"):
        assert_same_weights(state(runs["a"]), state(runs[other]))
        assert numbers(runs["a"]) == numbers(runs[other])
    other_seed = tmp_path / "seed"
    run_module("segsweep.train", *small, "seed=7", f"hydra.run.dir={other_seed}")
    assert numbers(other_seed) != numbers(runs["a"])


def test_rerun_from_a_run_dirs_saved_config_reproduces_it(fast_run, tmp_path):
    rerun = tmp_path / "rerun"
    run_module("segsweep.train", "--config-path", str(fast_run / ".hydra"), "--config-name", "config", f"hydra.run.dir={rerun}")
    assert numbers(rerun) == numbers(fast_run)


def test_every_run_records_its_manifest(fast_run):
    manifest = read_metrics(fast_run)["manifest"]
    assert manifest["seed"] == 42 and manifest["device"] == "cpu"
    assert manifest["command"][0] == "train.py" and "debug=fast" in manifest["command"]
    assert {"torch", "pytorch-lightning", "hydra-core", "torchmetrics"} <= {k for k, v in manifest["packages"].items() if v}
    assert manifest["start_time"] <= manifest["end_time"]
    assert len(manifest["git_commit"] or "0" * 40) == 40 and manifest["git_dirty"] in (True, False, None)


def test_the_manifest_records_the_torch_thread_counts():
    """CPU reductions depend on the thread count, so a rerun is bit-identical only at the recorded counts."""
    before = torch.get_num_threads()
    torch.set_num_threads(2 if before == 1 else 1)  # not the default, so the count is read when the manifest is made
    try:
        recorded, threads = run_manifest(seed=0, device="cpu"), torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
    assert recorded["torch_threads"] == threads
    assert recorded["torch_interop_threads"] == torch.get_num_interop_threads()


def last_epoch(run_dir: Path) -> int:
    path = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(path, weights_only=True, map_location="cpu")["epoch"] if path.is_file() else -1


# Rare pedestrians, so images repeat (1.98 times: stochastic rounding); half the images and epochs keep it quick.
REPEAT_FACTOR = [
    "data.sampler=repeat_factor",
    "data.repeat_threshold=0.9",
    "data.scene.pedestrian_prob=0.1",
    "data.train_size=48",
    "trainer.max_epochs=2",
]


# DataLoader workers draw their first indices as soon as Lightning creates the epoch's iterator, before set_epoch.
SCENE_WORKERS = ["data.num_workers=2"]
FOLDER_WORKERS = ["data=folder", "data.crop_size=32", "data.batch_size=4", "data.num_workers=2"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "sampler_overrides",
    [[], REPEAT_FACTOR, SCENE_WORKERS, FOLDER_WORKERS],
    ids=["uniform", "repeat_factor", "scenes_workers", "folder_workers"],
)
def test_a_run_killed_mid_epoch_resumes_to_identical_weights_and_metrics(tmp_path, sampler_overrides):
    small = [*SMALL, *sampler_overrides]
    if "data=folder" in sampler_overrides:
        small += [f"data.root={export(tmp_path / 'folder', {'train': 64, 'val': 8, 'test': 8}, 48, seed=0)}"]
    uninterrupted, killed = tmp_path / "uninterrupted", tmp_path / "killed"
    run_module("segsweep.train", *small, f"hydra.run.dir={uninterrupted}")

    command = [sys.executable, "-m", "segsweep.train", *small, f"hydra.run.dir={killed}"]
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while last_epoch(killed) < 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)  # epoch 0 is checkpointed: this lands in epoch 1
    assert process.wait() == -signal.SIGKILL
    assert last_epoch(killed) == 0 and not (killed / "metrics.json").exists()

    run_module("segsweep.train", *small, f"ckpt_path={killed}")  # continues in the killed run's own dir
    assert_same_weights(state(uninterrupted), state(killed))
    assert_same_weights(state(uninterrupted, "best.ckpt"), state(killed, "best.ckpt"))
    assert numbers(killed) == numbers(uninterrupted)
    (resume,) = read_metrics(killed)["manifest"]["resumes"]
    assert resume["from_epoch"] == 2 and resume["overrides"] == [] and f"ckpt_path={killed}" in resume["command"]


def test_resume_true_without_a_checkpoint_is_one_clear_line(tmp_path):
    result = run_module("segsweep.train", "debug=fast", "resume=true", f"hydra.run.dir={tmp_path / 'empty'}", check=False)
    assert result.returncode != 0
    assert f"resume=true: {tmp_path / 'empty'} has no checkpoints/last.ckpt to resume from" in result.stderr


def test_unknown_loss_lists_the_choices(tmp_path):
    result = run_module("segsweep.train", "loss=hinge", f"hydra.run.dir={tmp_path / 'x'}", check=False)
    assert result.returncode != 0
    assert "Could not find 'loss/hinge'" in result.stderr and "dice_ce" in result.stderr


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo should-never-run",))


def test_a_checkpoint_that_needs_unpickling_is_refused(tmp_path):
    path = tmp_path / "tampered.ckpt"
    torch.save({"state_dict": {}, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="refused, it needs arbitrary unpickling"):
        load_checkpoint(path)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(garbage)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")
