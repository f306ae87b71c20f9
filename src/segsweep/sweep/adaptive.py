"""Adaptive seeds: the design's record in the sweep dir, and which groups the next stage's seeds go to.

A design with stages [3, 5, 8, 12] first runs seeds 1-3 of every group, then looks: a group whose verdict is decided
(`worse` than the best) gets no more seeds; the best group and the undecided ones get seeds 4-5, and so on until
every verdict is decided or the last stage ran. Each look tests at ``alpha / looks`` (sweep/verdicts.py), so the
family-wise error over all looks stays at most ``alpha`` however early the design stops.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segsweep.runs.files import write_text_atomic

DESIGN_FILE = "adaptive.json"
log = logging.getLogger(__name__)


@dataclass
class Design:
    """The stages (seed counts), alpha, the looks taken so far, and per group the seeds after which it was decided."""

    stages: list[int]
    alpha: float
    looks_done: int = 0
    decided: dict[str, int] = field(default_factory=dict)
    seeds: dict[str, int] = field(default_factory=dict)  # seeds each group has run so far

    @property
    def looks(self) -> int:
        return len(self.stages)

    def runs(self) -> int:
        return sum(self.seeds.values())

    def runs_saved(self) -> int:
        """Runs the design saved against running every group to the largest stage."""
        return len(self.seeds) * max(self.stages) - self.runs()


def check_stages(stages: Sequence[Any]) -> list[int]:
    """``stages`` as increasing seed counts of at least 2 (a t-interval needs two seeds), or a one-line error."""
    try:
        counts = [int(stage) for stage in stages]
    except (TypeError, ValueError):
        raise ValueError(f"hydra.sweeper.stages must be a list of seed counts, e.g. [3,5,8,12]; got {stages!r}") from None
    if not counts or counts[0] < 2 or any(later <= earlier for earlier, later in zip(counts, counts[1:])):
        raise ValueError(f"hydra.sweeper.stages must increase and start at 2 or more seeds, e.g. [3,5,8,12]; got {counts}")
    return counts


def read_design(sweep_dir: str | Path) -> Design | None:
    """The sweep's adaptive design, or None for a fixed design (no record, or one that cannot be read)."""
    path = Path(sweep_dir) / DESIGN_FILE
    try:
        data = json.loads(path.read_text())
        return Design(
            stages=check_stages(data["stages"]),
            alpha=float(data["alpha"]),
            looks_done=int(data.get("looks_done", 0)),
            decided={str(key): int(value) for key, value in data.get("decided", {}).items()},
            seeds={str(key): int(value) for key, value in data.get("seeds", {}).items()},
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def write_design(sweep_dir: str | Path, design: Design) -> Path:
    return write_text_atomic(Path(sweep_dir) / DESIGN_FILE, json.dumps(asdict(design), indent=2) + "\n")


def next_groups(verdicts: dict[str, str], design: Design) -> list[str]:
    """The groups that get the next stage's seeds: the best one and every undecided one; none once all are decided."""
    undecided = [label for label, verdict in verdicts.items() if verdict == "indistinguishable"]
    if not undecided:
        return []
    return [label for label, verdict in verdicts.items() if verdict == "best"] + undecided


def run_design(
    sweep_dir: Path,
    groups: Sequence[Sequence[str]],
    design: Design,
    launch: Callable[[list[list[str]], int], Any],
    verdicts: Callable[[], dict[str, tuple[dict[str, str], str]]],
    seed_key: str = "seed",
) -> list[Any]:
    """Run the design: ``groups`` are each group's overrides (without the seed), ``launch(batch, first_job_index)``
    runs jobs, ``verdicts()`` reads the sweep dir's report: label -> (swept values, verdict). Returns what each
    launch returned; the design's record is rewritten after every look."""
    write_design(sweep_dir, design)  # the report reads the number of looks from it, from the first look on
    active, done, job_index, returns = list(range(len(groups))), 0, 0, []
    for look, stage in enumerate(design.stages, start=1):
        batch = [[*groups[index], f"{seed_key}={seed}"] for index in active for seed in range(done + 1, stage + 1)]
        log.info("Adaptive seeds, look %d/%d: seeds %d-%d for %d group(s)", look, design.looks, done + 1, stage, len(active))
        returns.append(launch(batch, job_index))
        job_index, done = job_index + len(batch), stage
        report = verdicts()
        labels = {index: _label(groups[index], report) for index in active}
        for index in active:
            design.seeds[labels[index] or ",".join(groups[index])] = stage
            if report.get(labels[index], ({}, ""))[1] == "worse":
                design.decided.setdefault(labels[index], stage)
        design.looks_done = look
        still = set(next_groups({label: verdict for label, (_, verdict) in report.items()}, design))
        for index in active:
            if labels[index] is None:  # the report has no group of these overrides: never drop it unseen
                log.warning("Adaptive seeds: no group of the report matches %s; it stays undecided", groups[index])
        active = [index for index in active if labels[index] is None or labels[index] in still]
        write_design(sweep_dir, design)
        if not active:
            break
    if active:
        log.info("Adaptive seeds: %d group(s) still undecided after %d seeds", len(active) - 1, done)
    log.info(
        "Adaptive seeds: %d runs, %d fewer than %d seeds for every group", design.runs(), design.runs_saved(), max(design.stages)
    )
    return returns


def _label(overrides: Sequence[str], report: dict[str, tuple[dict[str, str], str]]) -> str | None:
    """The report's label of the group that ``overrides`` define: the one whose swept values they all have."""
    values = dict(override.split("=", 1) for override in overrides if "=" in override)
    for label, (params, _) in report.items():
        if all(values.get(key) == value for key, value in params.items()):
            return label
    return None
