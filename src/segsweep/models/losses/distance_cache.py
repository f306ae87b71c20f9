"""Per-image maps of the truth (the boundary loss's signed distances, HD-DT's truth distances), computed once per mask.

A map is a function of one ground-truth mask alone, so it is computed the first time that mask is seen and kept,
keyed by a digest of the mask's bytes, for every later epoch: as the generated scenes themselves are made once per
run and held in memory, their maps are made once per run too (a horizontally flipped scene is a second mask, with a
second map). A mask never seen before (a random crop of a folder image) is computed as it comes, exactly as without
a cache. Keying by content, not by dataset index, keeps the batch format and every datamodule as they are, and can
never hand a map to the wrong mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

# maps of one image: (label [H,W] int64, the loss's settings) -> float32 [C,H,W]
MapFunction = Callable[..., np.ndarray]
MIB = 2**20


class MaskMapCache:
    """Maps of masks seen before, up to ``capacity_mb`` MiB; once full, new masks are computed but not kept.

    No eviction: epochs visit every image once, so a least-recently-used cache smaller than the dataset would evict
    each map just before its next use and never hit; keeping the first ones makes that share of the images hit.
    The cache belongs to the loss module of one process (not to its state_dict: maps are recomputed after a resume).
    """

    def __init__(self, compute: MapFunction, capacity_mb: float = 1536.0) -> None:
        if not capacity_mb >= 0:
            raise ValueError(f"loss.cache_mb must be a number of MiB >= 0, got {capacity_mb}")
        self.compute, self.capacity = compute, int(capacity_mb * MIB)
        self.maps: dict[bytes, np.ndarray] = {}
        self.bytes = self.hits = self.misses = 0

    def __call__(self, target: Tensor, **settings: Any) -> Tensor:
        """float32 [B,C,H,W] maps of a target [B,H,W] under ``settings`` (keywords of the map function), on the
        target's device."""
        labels = target.detach().cpu().numpy().astype(np.int64, copy=False)
        maps = [self._map(np.ascontiguousarray(label), settings) for label in labels]
        return torch.from_numpy(np.stack(maps)).to(target.device)

    def _map(self, label: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
        digest = hashlib.blake2b(label.tobytes(), digest_size=16)
        digest.update(repr((label.shape, sorted(settings.items()))).encode())
        key = digest.digest()
        found = self.maps.get(key)
        if found is not None:
            self.hits += 1
            return found
        self.misses += 1
        computed = self.compute(label, **settings)
        if self.bytes + computed.nbytes <= self.capacity:
            self.maps[key] = computed
            self.bytes += computed.nbytes
        return computed
