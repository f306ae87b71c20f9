"""Names of runs and sweep jobs (directories and TensorBoard runs): what tells them apart, short and rounded."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from segsweep.runs.overrides import shown_value

# Longer names are cut, keeping the job number, so directories and TensorBoard runs stay readable.
MAX_NAME = 80
# Keys that never name a run: where things go, and what a command reads.
UNNAMED_KEYS = ("hydra.", "hydra/", "paths.", "ckpt_path", "input", "output_dir", "data.root", "resume")


def name_of(overrides: Iterable[str], keys: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> str:
    """``key=value`` pairs sorted by key, comma separated: those of ``keys`` (all when None), floats rounded."""
    wanted = None if keys is None else set(keys)
    excluded = tuple(exclude)
    pairs = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if (wanted is not None and key not in wanted) or key in excluded or key.startswith(UNNAMED_KEYS):
            continue
        pairs.append((key, shown_value(value)))
    # '/' (a config group path such as hydra/launcher) cannot be part of one directory name
    return ",".join(f"{key}={value}" for key, value in sorted(pairs)).replace("/", "_")


def shorten(name: str, number: int | str) -> str:
    """``name`` if short enough, else its start and the job number (``<start>...#7``), which keeps it unique."""
    if len(name) <= MAX_NAME:
        return name
    suffix = f"...#{number}"
    return name[: MAX_NAME - len(suffix)] + suffix


def _sweep_overrides(sweep_dir: Path) -> list[str]:
    """The sweep's own command-line overrides (``loss=ce,dice``), as the basic sweeper recorded them in multirun.yaml."""
    try:
        recorded = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())
        return [str(item) for item in recorded["hydra"]["overrides"]["task"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return []


def swept_keys(hydra: DictConfig) -> set[str]:
    """Keys that take more than one value in this sweep: the sweeper's ``params``, the command line's sweeps, and the
    seed of an adaptive-seeds sweep."""
    params = OmegaConf.select(hydra, "sweeper.params") or {}
    keys = {str(key) for key in params}
    if OmegaConf.select(hydra, "sweeper.stages") is not None:  # the adaptive sweeper adds seeds stage by stage
        keys.add("seed")
    parser = OverridesParser.create()
    for override in parser.parse_overrides(_sweep_overrides(Path(str(hydra.sweep.dir)))):
        if override.is_sweep_override():
            keys.add(override.get_key_element())
    return keys


def _hydra(root: DictConfig) -> DictConfig:
    """The ``hydra`` node: the root's in a Hydra job, ``HydraConfig`` when the key is read from that node alone."""
    return root.hydra if "hydra" in root else HydraConfig.get()


def job_dirname(override_dirname: str, job_num: Any, *, _root_: DictConfig) -> str:
    """A multirun job's directory (and TensorBoard run): its swept overrides only (``loss=dice,seed=2``), floats
    rounded, long names cut with the job number kept; the job number when nothing was swept."""
    hydra = _hydra(_root_)
    name = name_of(hydra.overrides.task, swept_keys(hydra), hydra.job.config.override_dirname.exclude_keys)
    return shorten(name, job_num) if name else str(job_num)


def run_suffix(*, _root_: DictConfig) -> str:
    """``_<overrides>`` (or ``_<experiment>``) for a single run's directory after its time, so runs can be told apart."""
    hydra = _hydra(_root_)
    name = name_of(hydra.overrides.task, exclude=("experiment",))
    experiment = OmegaConf.select(hydra, "runtime.choices.experiment")
    if experiment:
        name = f"{experiment},{name}" if name else str(experiment)
    return f"_{shorten(name, 0)}" if name else ""


def dir_name(path: str) -> str:
    """A run directory's own name (its overrides): how conf/logger names a run in MLflow and W&B."""
    return Path(path).name
