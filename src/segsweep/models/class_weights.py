"""Per-class loss weights computed from train-split pixel counts."""

from __future__ import annotations

from collections.abc import Sequence

import torch

STRATEGIES = ("inverse", "inverse_sqrt", "median", "enet", "effective")


def compute_class_weights(
    strategy: str | Sequence[float],
    pixel_counts: torch.Tensor,
    *,
    image_pixel_counts: torch.Tensor | None = None,
    beta: float | None = None,
    key: str = "loss.class_weights",
) -> torch.Tensor:
    """Return float32 weights of length C (C = len(pixel_counts)), normalised to mean 1.

    Strategies, with N = total pixels, n_c = pixels of class c and f_c = n_c / N:

    - ``inverse``: N / (C * n_c).
    - ``inverse_sqrt``: 1 / sqrt(f_c).
    - ``median``: median(f) / f_c (Eigen & Fergus 2015), with f_c = n_c / (pixels of the
      images containing class c) when ``image_pixel_counts`` gives those totals. Without
      them f_c is global, and after the mean-1 normalisation this equals ``inverse``.
    - ``enet``: 1 / ln(1.02 + f_c) (Paszke et al. 2016).
    - ``effective``: (1 - beta) / (1 - beta^n_c) (Cui et al. 2019). ``beta`` defaults
      to (N - 1) / N: the effective number is then N * (1 - (1 - 1/N)^n_c) ~ N * (1 - e^-f_c),
      i.e. inverse frequency for rare classes, softened for dominant ones.
    - a sequence of C non-negative numbers, used as given.

    Classes with no pixels get the largest weight of the present classes. ``key`` is the
    config key named in error messages.
    """
    counts = _check_counts(pixel_counts, key)
    num_classes = counts.numel()
    if beta is not None and strategy != "effective":
        raise ValueError(f"{key}: beta only applies to the 'effective' strategy, got strategy {strategy!r}")
    if isinstance(strategy, str):
        if strategy not in STRATEGIES:
            raise ValueError(
                f"{key}: unknown strategy {strategy!r} (choose from {', '.join(STRATEGIES)}, or a list of {num_classes} numbers)"
            )
        weights = _fill_absent(_strategy_weights(strategy, counts, image_pixel_counts, beta, key), counts > 0)
    else:
        weights = _explicit_weights(strategy, num_classes, key)
    if weights.sum() == 0:
        raise ValueError(f"{key}: weights are all zero")
    return (weights / weights.mean()).float()


def _check_counts(pixel_counts: torch.Tensor, key: str) -> torch.Tensor:
    # float64 because pixel totals of a dataset exceed float32's exact integer range.
    counts = torch.as_tensor(pixel_counts).double()
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(f"{key}: pixel_counts must be a non-empty 1-D tensor, got shape {tuple(counts.shape)}")
    if not torch.isfinite(counts).all() or (counts < 0).any():
        raise ValueError(f"{key}: pixel_counts must be finite and non-negative, got {counts.tolist()}")
    if counts.sum() == 0:
        raise ValueError(f"{key}: pixel_counts are all zero, so no frequency-based weights exist")
    return counts


def _strategy_weights(
    strategy: str, counts: torch.Tensor, image_pixel_counts: torch.Tensor | None, beta: float | None, key: str
) -> torch.Tensor:
    total = counts.sum()
    freq = counts / total
    if strategy == "inverse":
        return total / (counts.numel() * counts)
    if strategy == "inverse_sqrt":
        return freq.rsqrt()
    if strategy == "median":
        if image_pixel_counts is not None:
            # an absent class has no images: any non-zero denominator keeps its frequency 0 (filled later)
            freq = counts / torch.as_tensor(image_pixel_counts).double().clamp(min=1)
        # Median over the classes present (Eigen & Fergus): absent classes' zeros must not pull it to 0.
        return freq[counts > 0].median() / freq
    if strategy == "enet":
        return 1.0 / torch.log(1.02 + freq)
    one_minus_beta = 1.0 / float(total) if beta is None else 1.0 - beta
    if not 0.0 < one_minus_beta <= 1.0:
        raise ValueError(f"{key}: beta must be in [0, 1), got {beta}")
    # 1 - beta^n via expm1/log1p: pow() loses most digits when beta is within ~1/N of 1.
    return one_minus_beta / -torch.expm1(counts * counts.new_tensor(-one_minus_beta).log1p())


def _fill_absent(weights: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    # A class missing from the train split would get an infinite (or arbitrary) weight, which
    # would swamp the weighted-mean normalisation of CE and Dice; treat it like the rarest seen class.
    return torch.where(present, weights, weights[present].max())


def _explicit_weights(values: Sequence[float], num_classes: int, key: str) -> torch.Tensor:
    try:
        weights = torch.tensor([float(v) for v in values], dtype=torch.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{key}: expected a strategy name or a list of numbers, got {values!r}") from err
    if weights.numel() != num_classes:
        raise ValueError(f"{key}: got {weights.numel()} weights but the dataset has {num_classes} classes")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{key}: weights must be finite and non-negative, got {weights.tolist()}")
    return weights
