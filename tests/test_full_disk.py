"""A full disk (or quota, or file size limit) while a run writes: one line naming the file, and nothing written lost."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile

import pytest
import torch

from segsweep.runs import files
from segsweep.runs.files import NoRoomError, write_atomic, write_json_atomic

from .helpers.commands import REPO_ROOT


def test_a_checkpoint_written_to_a_full_device_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = write_json_atomic(tmp_path / "last.ckpt", {"old": True})
    real_mkstemp = tempfile.mkstemp

    def onto_dev_full(**kwargs):  # the temp file on /dev/full: every write fails with ENOSPC, from the kernel
        _, name = real_mkstemp(**kwargs)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(files.tempfile, "mkstemp", onto_dev_full)
    # torch.save reports the failed write as a RuntimeError without its errno: the file wrapper keeps it
    with pytest.raises(NoRoomError, match=f"^no space left on device while writing {target}$"):
        write_atomic(target, lambda file: torch.save({"weights": torch.zeros(4096)}, file))
    assert json.loads(target.read_text()) == {"old": True}
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_a_plain_write_that_finds_no_room_is_named_too(tmp_path):
    def full(file):
        raise OSError(28, "No space left on device")

    with pytest.raises(NoRoomError, match=r"^no space left on device while writing .*report\.md$"):
        write_atomic(tmp_path / "report.md", full)
    with pytest.raises(PermissionError):  # any other failure is left as it is
        write_atomic(tmp_path / "x", lambda file: (_ for _ in ()).throw(PermissionError("no")))


@pytest.mark.slow
def test_training_that_runs_out_of_room_is_one_line_and_keeps_its_records(tmp_path):
    run_dir = tmp_path / "run"
    limit = 200_000  # bytes a file may reach: the logs and records fit, the first checkpoint does not

    def small_files() -> None:  # Python ignores SIGXFSZ, so an oversized write fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = subprocess.run(
        [sys.executable, "-m", "segsweep.train", "debug=fast", f"hydra.run.dir={run_dir}"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, preexec_fn=small_files, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    last = output.strip().splitlines()[-1]
    assert f"train failed: file size limit exceeded while writing {run_dir}/checkpoints/" in last and last.endswith(".ckpt")
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and "file size limit exceeded while writing" in record["error"]
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))
