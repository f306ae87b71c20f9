"""The RNG-state callback: Python, NumPy and torch random states saved in checkpoints and restored on resume."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch


class RngState(pl.Callback):
    """Saves the Python, NumPy and torch RNG states in checkpoints and restores them on resume.

    Lightning checkpoints no RNG state; without it a resumed run draws different random numbers
    (dropout, random augmentations a user adds) than the uninterrupted run would have.
    """

    def state_dict(self) -> dict[str, Any]:
        numpy_state = np.random.get_state()
        state = {
            "python": random.getstate(),
            # as plain lists: checkpoints must load with weights_only=True
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        version, internal, gauss_next = state_dict["python"]
        random.setstate((version, tuple(internal), gauss_next))
        name, keys, *rest = state_dict["numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])
