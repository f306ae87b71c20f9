"""Training samplers: the epoch order (and, for repeat-factor sampling, which images repeat) as a function of (seed, epoch).

Every sampler yields ``(index, epoch)``, so the dataset derives augmentation from the epoch it receives with each
index (also inside worker processes), and a run resumed at epoch k replays what an uninterrupted run would have used.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DistributedSampler

from segsweep.data.scenes import image_keys

# Independent random streams of one epoch, xor-ed into its key.
STREAM_ORDER, STREAM_FLIP, STREAM_REPEAT, STREAM_CROP = 11, 12, 13, 14
SAMPLERS = ("uniform", "repeat_factor")


def epoch_key(seed: int, epoch: int) -> int:
    """A 32-bit key for everything random in one epoch of training (order, flips, repeats, crops)."""
    return int(image_keys(seed, "train", torch.tensor([epoch]))[0])


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(epoch_key(seed, epoch) ^ stream)


class EpochSeededSampler(DistributedSampler):
    """Yields ``(index, epoch)`` for each of ``size`` images once per epoch, in an order that is a function of (seed, epoch).

    Lightning calls ``set_epoch`` before each epoch. Under DDP each rank takes every ``num_replicas``-th index of the
    same order; being a DistributedSampler, Lightning uses it as it is instead of wrapping it.
    """

    def __init__(self, size: int, seed: int, shuffle: bool = True, num_replicas: int = 1, rank: int = 0) -> None:
        # DistributedSampler.__init__ is skipped on purpose: it needs a dataset and torch.distributed.
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0
        self.num_replicas, self.rank = num_replicas, rank
        self.num_samples = math.ceil(self.epoch_length / num_replicas)

    @property
    def epoch_length(self) -> int:
        """Images one epoch draws (over all ranks)."""
        return self.size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def epoch_indices(self) -> list[int]:
        """This epoch's image indices, in order, before they are dealt to the ranks."""
        if not self.shuffle:
            return list(range(self.size))
        return torch.randperm(self.size, generator=epoch_generator(self.seed, self.epoch, STREAM_ORDER)).tolist()

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self.epoch_indices()
        order += order[: self.num_samples * self.num_replicas - len(order)]  # equal shares for all ranks
        return ((index, self.epoch) for index in order[self.rank :: self.num_replicas])


def repeat_factors(class_presence: Tensor, threshold: float) -> Tensor:
    """Image repeat factors of LVIS repeat-factor sampling (Gupta et al., CVPR 2019).

    ``class_presence``: bool [images, classes], whether class c occurs in image i. With f_c the fraction of the
    images that contain c, r_c = max(1, sqrt(threshold / f_c)), and image i repeats r_i = max over its classes of r_c
    (1 for an image with no class).
    """
    if threshold <= 0:
        raise ValueError(f"data.repeat_threshold must be > 0, got {threshold}")
    presence = class_presence.bool()
    fraction = presence.double().mean(dim=0)
    # a class no image contains is never looked up (presence is False everywhere), the clamp only avoids 1/0
    class_factor = (threshold / fraction.clamp(min=1e-12)).sqrt().clamp(min=1.0)
    return torch.where(presence, class_factor, torch.ones_like(class_factor)).amax(dim=1).clamp(min=1.0)


class RepeatFactorSampler(EpochSeededSampler):
    """Oversamples images with rare classes: image i appears floor(r_i) times, plus once more with probability
    frac(r_i) (stochastic rounding, drawn from (seed, epoch)), shuffled.

    Lightning counts an epoch's batches once, so every epoch has the same length: the expected count round(sum r_i).
    An epoch whose draw came out longer is cut, a shorter one continues its own order from the start.

    That fixed length compresses the factors slightly towards 1 when there are few images: a draw of N copies, c_i
    of image i, cut or cycled to the length L leaves image i c_i L / N copies in expectation, and an image's own extra
    copy lengthens N, so it repeats E[c_i L / N] times, a little under r_i L / sum r. Exactly, for images of factor
    1.5 beside images of factor 1 (a quarter of them at 1.5), per factor-1 image: 1.472 with 8 images, 1.486 with 16,
    1.4965 with 64, 1.4998 with 1000; the imbalance study's 1.22 at 192 images comes out 1.2192. It falls like 1/N,
    and is left so: an exact scheme would draw other epochs from the same (seed, epoch), and earlier runs would no
    longer reproduce.
    """

    def __init__(self, factors: Tensor, seed: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.factors = factors.double()
        super().__init__(len(factors), seed, shuffle=True, num_replicas=num_replicas, rank=rank)

    @property
    def epoch_length(self) -> int:
        return max(1, round(float(self.factors.sum())))

    def epoch_indices(self) -> list[int]:
        generator = epoch_generator(self.seed, self.epoch, STREAM_REPEAT)
        whole = self.factors.floor()
        extra = torch.rand(len(self.factors), generator=generator, dtype=torch.float64) < self.factors - whole
        drawn = torch.repeat_interleave(torch.arange(len(self.factors)), (whole + extra).long())
        order = drawn[torch.randperm(len(drawn), generator=generator)].tolist()
        cycles = math.ceil(self.epoch_length / max(1, len(order)))
        return (order * cycles)[: self.epoch_length]


def fit_epoch(trainer: Any) -> int:
    """The epoch a trainer's fit starts (or resumes) at: the one Lightning passes to ``set_epoch`` before it."""
    return 0 if trainer is None else trainer.fit_loop.epoch_progress.current.processed


def train_sampler(
    sampler: str,
    size: int,
    seed: int,
    class_presence: Callable[[], Tensor],
    repeat_threshold: float,
    trainer: Any = None,
) -> EpochSeededSampler:
    """The training sampler ``data.sampler`` names, dealing to the trainer's ranks and set to the epoch its fit starts
    at; ``class_presence`` (bool [images, classes]) is read only if needed."""
    replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    if sampler == "uniform":
        chosen = EpochSeededSampler(size, seed, num_replicas=replicas, rank=rank)
    elif sampler == "repeat_factor":
        chosen = RepeatFactorSampler(repeat_factors(class_presence(), repeat_threshold), seed, num_replicas=replicas, rank=rank)
    else:
        raise ValueError(f"data.sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    # Lightning creates the epoch's iterator before its set_epoch, and DataLoader workers draw their first indices
    # from it at once: a resumed fit would start on epoch 0's order unless the sampler is already at its epoch.
    chosen.set_epoch(fit_epoch(trainer))
    return chosen
