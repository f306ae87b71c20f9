"""A folder dataset's three splits: validation from a seeded fraction or a k-fold of train, test on val if unlabelled.

Folds (``data.folds=K data.fold=i``) are a seeded permutation of the training cases (``data.split_seed``: the same
folds for every training seed) dealt round-robin into K folds; fold i validates, the others train. A dataset's own
val split then tests (or its test split where it has one), so every fold is tested on the same images.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from segsweep.data.folder_classes import FolderDataError
from segsweep.data.folder_files import Pair

log = logging.getLogger(__name__)


def check_folds(folds: int | None, fold: int) -> None:
    """``data.folds`` / ``data.fold`` on their own (the number of cases is checked when they are listed)."""
    if folds is None:
        if fold != 0:
            raise ValueError(f"data.fold={fold} needs data.folds=K (the number of folds of the training cases)")
        return
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ValueError(f"data.folds must be an integer >= 2 (or null: no folds), got {folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise ValueError(f"data.fold={fold} is out of range: data.folds={folds} has folds 0..{folds - 1}")


def _order(count: int, seed: int) -> list[int]:
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()


def fold_of(pairs: list[Pair], folds: int, fold: int, seed: int, root: Path) -> tuple[list[Pair], list[Pair]]:
    """(train, val): fold ``fold`` of ``folds`` of ``pairs`` validates; both in the listed order."""
    if len(pairs) < folds:
        raise FolderDataError(f"{root}: data.folds={folds} needs at least {folds} training cases, found {len(pairs)}")
    chosen = set(_order(len(pairs), seed)[fold::folds])
    return [pair for i, pair in enumerate(pairs) if i not in chosen], [pair for i, pair in enumerate(pairs) if i in chosen]


def assign(
    listed: dict[str, list[Pair]],
    root: Path,
    val_fraction: float,
    split_seed: int,
    folds: int | None = None,
    fold: int = 0,
) -> tuple[dict[str, list[Pair]], bool]:
    """train/val/test pairs from the listed splits (``train`` always), and whether the test stage uses val."""
    train, val, test = listed["train"], listed.get("val"), listed.get("test")
    if folds is not None:
        test = test if test is not None else val
        train, val = fold_of(train, folds, fold, split_seed, root)
        log.info("%s: fold %d of %d validates (%d of the training cases)", root, fold, folds, len(val))
        if test is None:
            log.info("%s: no labelled test split: the test stage uses the fold's validation cases", root)
            return {"train": train, "val": val, "test": val}, True
        return {"train": train, "val": val, "test": test}, False
    if val is None:
        count = round(len(train) * val_fraction)
        if val_fraction <= 0 or len(train) < 2:
            raise FolderDataError(
                f"{root / 'val'}: missing, and data.val_fraction={val_fraction} of {len(train)} train "
                "images leaves no validation split (add val/ or raise data.val_fraction)"
            )
        count = min(max(count, 1), len(train) - 1)
        chosen = set(_order(len(train), split_seed)[:count])
        val = [pair for i, pair in enumerate(train) if i in chosen]
        train = [pair for i, pair in enumerate(train) if i not in chosen]
        log.info("%s: no val/ split, validating on %d of the train images (data.val_fraction=%s)", root, count, val_fraction)
    if test is None:
        return {"train": train, "val": val, "test": val}, True
    return {"train": train, "val": val, "test": test}, False
