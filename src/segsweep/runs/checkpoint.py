"""Checkpoint files: written atomically, read with ``weights_only=True`` only."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from segsweep.runs.files import write_atomic


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or unsafe to load."""


def resolve_checkpoint(path: str | Path, name: str = "best.ckpt") -> Path:
    """A checkpoint file, or a run directory meaning its ``checkpoints/<name>``."""
    path = Path(path)
    if path.is_dir():
        candidate = path / "checkpoints" / name
        if not candidate.is_file():
            raise CheckpointError(f"{path}: run directory has no checkpoints/{name}")
        return candidate
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint does not exist")
    return path


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict; never unpickles arbitrary objects (``weights_only=True``)."""
    path = resolve_checkpoint(path)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        # torch names the forbidden object ("unsupported GLOBAL posix.system ..."); anything else is corruption
        unsafe = re.search(r"(?:unsupported )?GLOBAL [\w.]+", str(error), flags=re.IGNORECASE)
        if unsafe:
            raise CheckpointError(f"{path}: refused, it needs arbitrary unpickling to load ({unsafe.group(0)})") from error
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt pickle data)") from error
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, KeyError, IndexError) as error:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__})") from error
    return checkpoint


# what Lightning's fit restores (its checkpoint connector), with their types: a file without them cannot be continued
FIT_KEYS = {"epoch": int, "global_step": int, "loops": dict, "optimizer_states": list, "pytorch-lightning_version": str}


def checked_checkpoint(path: str | Path, for_fit: bool = False) -> dict[str, Any]:
    """The checkpoint of ``path`` (a file or run dir), its outline checked: a state_dict, the saved config and, for
    ``fit`` to continue from it, Lightning's own keys; anything else is one line naming the file."""
    path = resolve_checkpoint(path, "last.ckpt" if for_fit else "best.ckpt")
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise CheckpointError(f"{path}: not a segsweep checkpoint (no state_dict)")
    saved = checkpoint.get("hyper_parameters")
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict) or not saved["config"]:
        raise CheckpointError(f"{path}: checkpoint has no saved config (hyper_parameters.config)")
    for key, kind in FIT_KEYS.items() if for_fit else ():
        if not isinstance(checkpoint.get(key), kind):
            raise CheckpointError(f"{path}: cannot continue training from it ({key} is not a {kind.__name__})")
    return checkpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O: temp file + rename on save, ``weights_only=True`` on load."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        write_atomic(path, lambda file: torch.save(checkpoint, file))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location)
