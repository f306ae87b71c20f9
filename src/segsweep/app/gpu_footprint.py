"""A job's GPU memory footprint, measured: its config trains one batch (and validates one) on GPU 0 in a subprocess.

The parallel launcher (hydra.launcher.jobs_per_gpu: auto) packs as many jobs on a GPU as their footprint lets
(app/parallel.py). The footprint is what the job's process holds on the GPU at its peak: the caching allocator's
peak (``torch.cuda.max_memory_reserved``) plus what the process holds outside it (its CUDA context, loaded kernels,
library handles), read with ``torch.cuda.mem_get_info`` before the subprocess starts and after its step. A
subprocess, so that the launcher keeps none of it; the step runs the job's own trainer settings (precision, batch
size, channels_last, compile), datamodule and network, as the job will.

    python -m segsweep.app.gpu_footprint JOB_CONFIG.pickle FREE_BYTES   (what ``measure`` runs)
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig

# the line of the subprocess's stdout that holds its measurement
PREFIX = "segsweep-footprint: "
# the trainer settings of the probe: one training batch, one validation batch, nothing written
ONE_STEP = {
    "devices": [0],
    "max_steps": 1,
    "limit_train_batches": 1,
    "limit_val_batches": 1,
    "val_check_interval": 1.0,
    "check_val_every_n_epoch": 1,
    "num_sanity_val_steps": 0,
    "logger": False,
    "callbacks": [],
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
}


class FootprintError(RuntimeError):
    """The probe did not measure (it failed, or ran past its time): its last line says why."""


@dataclass(frozen=True)
class Footprint:
    """What one job holds on a GPU, in bytes: the allocator's peak and the rest of the process (``context``)."""

    peak_reserved: int
    context: int
    total_memory: int
    seconds: float

    @property
    def bytes(self) -> int:
        return self.peak_reserved + self.context


def measure(job_config: DictConfig, timeout_s: float = 300.0) -> Footprint:
    """The footprint of ``job_config`` (a job's composed config, ``hydra`` node included) on GPU 0; FootprintError
    when the probe fails or takes longer than ``timeout_s`` seconds."""
    import torch

    free_before = int(torch.cuda.mem_get_info(0)[0])  # this process's own CUDA context is open already
    with tempfile.TemporaryDirectory(prefix="segsweep-footprint-") as scratch:
        path = Path(scratch) / "job.pickle"
        write_job_config(job_config, path)
        command = [sys.executable, "-m", __name__, str(path), str(free_before)]
        try:
            # in the launcher's directory, as the jobs run: relative paths (data.root) mean what they mean there
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout_s, env=_env(), stdin=subprocess.DEVNULL
            )
        except subprocess.TimeoutExpired:
            raise FootprintError(f"the probe ran past {timeout_s:g} s (hydra.launcher.footprint_timeout_s)") from None
    lines = [line for line in result.stdout.splitlines() if line.startswith(PREFIX)]
    if result.returncode != 0 or not lines:
        last = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        raise FootprintError(f"the probe failed: {last}")
    return Footprint(**json.loads(lines[-1][len(PREFIX) :]))


def _env() -> dict[str, str]:
    """The launcher's environment, with its ``src`` (the package this module is part of) first on the path."""
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": package_root + (os.pathsep + path if path else "")}


def write_job_config(job_config: DictConfig, path: Path) -> None:
    """A job's config for the probe, pickled as Hydra's joblib launcher hands it to its workers: the ``hydra`` node keeps
    its structured type (``HydraConfig`` takes no other), the interpolations stay unresolved."""
    path.write_bytes(pickle.dumps(job_config))


def read_task_config(path: Path, run_dir: str) -> DictConfig:
    """The job's config ``write_job_config`` wrote, as its task function sees it, its outputs in ``run_dir``."""
    from hydra.core.utils import setup_globals

    from segsweep.app.compose import task_config
    from segsweep.app.resolvers import register_resolvers

    setup_globals()  # Hydra's own resolvers (hydra:, now:), as a Hydra app has them
    register_resolvers()
    # the launcher's own file, written for this process just before (write_job_config)
    return task_config(pickle.loads(path.read_bytes()), run_dir)


def one_step(cfg: DictConfig, **trainer: object) -> None:
    """Train one batch and validate one batch of the task config ``cfg`` with its own trainer settings, ``trainer``
    overriding them (the probe: ``ONE_STEP``)."""
    from hydra.utils import instantiate

    from segsweep.app.build import build_datamodule, build_module, class_weights

    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule, class_weights(cfg, datamodule))
    instantiate(cfg.trainer, **trainer).fit(module, datamodule=datamodule)


def _probe(config_file: str, free_before: int) -> Footprint:
    import time

    import torch

    started = time.perf_counter()
    free_context, total = torch.cuda.mem_get_info(0)  # opens this process's CUDA context
    with tempfile.TemporaryDirectory(prefix="segsweep-footprint-run-") as run_dir:
        one_step(read_task_config(Path(config_file), run_dir), **ONE_STEP)
    torch.cuda.synchronize(0)
    free_after = int(torch.cuda.mem_get_info(0)[0])
    # all the process holds now, less what the allocator holds: context, kernels, library handles (at least the
    # context as it was when opened)
    outside = max(free_before - int(free_context), free_before - free_after - torch.cuda.memory_reserved(0))
    return Footprint(torch.cuda.max_memory_reserved(0), outside, int(total), round(time.perf_counter() - started, 2))


if __name__ == "__main__":
    print(PREFIX + json.dumps(asdict(_probe(sys.argv[1], int(sys.argv[2])))), flush=True)
