"""The results of a sweep, grouped: a Group per combination of swept values (seeds pooled), and the Report over them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from segsweep.sweep.adaptive import Design
from segsweep.sweep.intervals import Estimate
from segsweep.sweep.jobs import Job
from segsweep.sweep.verdicts import ALPHA


@dataclass
class Group:
    label: str
    params: dict[str, str]
    jobs: list[Job]
    # metric name -> (mean, std) over finished seeds: test/mIoU, test/iou/<class>, ..., converge_epoch, wall_time_s
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    # metric name -> how many finished seeds have a (non-NaN) value: a mean over fewer is marked in the tables
    counts: dict[str, int] = field(default_factory=dict)
    # 95% interval of the mean test mIoU (sweep/intervals.py), and the paired differences to the best group
    miou_ci: tuple[float, float] = (math.nan, math.nan)
    rare_ci: tuple[float, float] = (math.nan, math.nan)
    diff: Estimate | None = None
    rare_diff: Estimate | None = None
    # the Holm-adjusted p of the comparison with the best (sweep/verdicts.py), and the verdict it gives
    p_holm: float = math.nan
    verdict: str = ""
    # adaptive sweeps: the seeds after which the verdict was decided (None: not decided, or not adaptive)
    decided_after: int | None = None
    converge_epochs: list[int | None] = field(default_factory=list)

    @property
    def finished(self) -> list[Job]:
        return [job for job in self.jobs if job.finished]

    @property
    def never_converged(self) -> int:
        return sum(epoch is None for epoch in self.converge_epochs)

    def mean(self, name: str) -> float:
        return self.stats.get(name, (math.nan, math.nan))[0]


@dataclass
class Report:
    sweep_dir: Path
    swept: list[str]  # swept override keys, seed excluded
    class_names: list[str]
    rare_class: str | None
    # a swept key whose values are rarity levels (e.g. `rarity`): groups are compared within each level
    stratum_key: str | None
    threshold: float
    threshold_note: str
    groups: list[Group]  # best test mIoU first
    failed: list[Job]
    headline: str = ""
    paths: dict[str, Path] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # when the winner is not ahead beyond the uncertainty: seeds a rerun should use, and the command
    seeds_suggested: int | None = None
    rerun_command: str | None = None
    # the looks of an adaptive design (1: a fixed design): each look's tests are at alpha / looks
    looks: int = 1
    alpha: float = ALPHA  # the family-wise error of the verdicts (an adaptive design's own)
    adaptive: Design | None = None


def strata(report: Report) -> dict[str, list[Group]]:
    """Finished groups compared with each other: all of them, or those of one value of the sweep's rarity axis
    (comparing strategy A at one rarity with strategy B at another would say nothing); best first in each."""
    scored = [group for group in report.groups if not math.isnan(group.mean("test/mIoU"))]
    if report.stratum_key is None:
        return {"": scored} if scored else {}
    parts: dict[str, list[Group]] = {}
    for group in scored:
        parts.setdefault(group.params.get(report.stratum_key, ""), []).append(group)
    return parts
