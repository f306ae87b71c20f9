"""What every command-line entry point shares: user errors, one-line messages, output dirs, device choice."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from segsweep import machine
from segsweep.runs.checkpoint import CheckpointError
from segsweep.runs.files import NoRoomError


class UsageError(OSError):
    """An output location that cannot be used; the message names it."""


# Errors that are the user's input (a path, a value): reported as one line, exit code 1.
USER_ERRORS = (
    CheckpointError,
    UsageError,
    InstantiationException,
    FileNotFoundError,
    NotADirectoryError,
    FileExistsError,
    PermissionError,
    ValueError,
    NoRoomError,
)


def one_line(error: BaseException) -> str:
    """The first line of an error; our ValueErrors already name the key or file, others get their type."""
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        error = error.__cause__  # the cause names the bad key or file
    text = str(error).strip()
    first = text.splitlines()[0] if text else type(error).__name__
    return first if isinstance(error, (ValueError, UsageError, NoRoomError)) else f"{type(error).__name__}: {first}"


def prepare_output_dir(path: Path) -> Path:
    """Create ``path`` and check a file can be written there; one line naming it otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".write-check."):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise UsageError(f"output_dir={path}: cannot write there ({reason})") from None
    return path


# What a mandatory key (``???`` in conf/) takes, as its one-line error says it
_REQUIRED = {
    "ckpt_path": "a checkpoint file or a run dir (ckpt_path=outputs/train/runs/<run>)",
    "input": "an image, a folder, a list [a.png,photos/] or generate (input=photo.png)",
    "data.root": "the dataset's folder (data.root=/path/to/dataset)",
}


def required_line(key: str) -> str:
    """The one-line error of a mandatory key the command did not give."""
    return f"{key} is required: {_REQUIRED.get(key, f'add {key}=<value> to the command')}"


def require(cfg: DictConfig, *keys: str) -> None:
    """Mandatory keys (``???`` in the config) as one clear line instead of OmegaConf's traceback."""
    for key in keys:
        if OmegaConf.is_missing(cfg, key):
            raise ValueError(required_line(key))


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda when available, else cpu) or a torch device name; one line if it is not usable here."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"device={name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name}: CUDA is not available here (use device=cpu or device=auto)")
    return device


def configure_torch(threads: Any, multirun: bool = False) -> dict[str, Any]:
    """A command's process-wide torch settings; returns the thread choice as the manifest records it. ``threads``:
    intra-op threads, ``auto`` (the cores the load leaves idle, ``machine.auto_threads``) or None (torch's default, one
    per core). A multirun's jobs keep their own counts (the launcher gives each its share): ``auto`` there is None.

    Deterministic algorithms (``trainer.deterministic``) also fill every fresh tensor with NaN by default, to expose
    kernels that read memory they did not write; that was 8% of the CPU time of a training step here (torch
    profiler) and changes no result (reruns are checked bit-identical), so it is off."""
    torch.utils.deterministic.fill_uninitialized_memory = False
    choice: dict[str, Any] = {"setting": threads}
    if threads == "auto" and multirun:
        threads = None
    if threads == "auto":
        load = machine.load_average()
        threads = machine.auto_threads(load=load)
        choice |= {"load": load, "cores": machine.available_cores()}
    if threads is not None:
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be an integer >= 1, auto or null (torch's default), got {threads!r}")
        torch.set_num_threads(threads)
    # OpenMP reads its wait policy when torch loads it: recorded as this process started with it
    wait = {key: os.environ[key] for key in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT") if key in os.environ}
    return choice | {"threads": torch.get_num_threads(), **({"wait_policy": wait} if wait else {})}


def json_safe(value: Any) -> Any:
    """NaN -> null, so the JSON files we write are strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value
