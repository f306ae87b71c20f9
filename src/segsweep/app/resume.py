"""Continuing a run in its own directory: its saved config, plus only the overrides that cannot change its experiment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from segsweep.app.rundir import RECORDS, has_run_records
from segsweep.runs.allowlist import check_config, check_saved_config, renamed_targets
from segsweep.runs.checkpoint import checked_checkpoint, resolve_checkpoint
from segsweep.runs.record import existing_record, record_path

# What a resumed run accepts: how long it trains and how this machine runs and shows it, never what it learns.
# (A bit-identical continuation also needs the same thread count: CPU conv reductions depend on it.)
RESUME_OVERRIDES = (
    "trainer.max_epochs",
    "threads",
    "data.num_workers",
    "data.multiprocessing_context",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "callbacks.rich_progress_bar",
    # trackers record a run and do not change it: a run whose tracking server is gone continues with another logger
    "logger",
)
# Keys that choose the run to continue (or where things go), not what it is.
SELECTORS = ("ckpt_path", "resume")
IGNORED_PREFIXES = ("hydra.", "hydra/", "paths.")
_ABSENT = object()


class ResumeError(ValueError):
    """A later command that would change the run it continues; the message names the overrides."""


def resume_selected(cfg: DictConfig, run_dir: str | Path) -> bool:
    """Whether this command asks to continue the run in ``run_dir`` (``resume=true|auto`` or ``ckpt_path=<run dir>``)."""
    ckpt_path = cfg.get("ckpt_path")
    given_dir = bool(ckpt_path) and Path(ckpt_path).is_dir() and Path(ckpt_path).resolve() == Path(run_dir).resolve()
    return bool(cfg.get("resume")) or given_dir


def run_threads(cfg: DictConfig, run_dir: str | Path, continued: bool) -> Any:
    """The ``threads`` this command runs with: a continued run with ``threads: auto`` keeps the count its first command
    chose (its manifest's ``torch_threads``), so that it continues bit-identically; anything else as configured."""
    threads = cfg.get("threads")
    if threads != "auto" or not continued:
        return threads
    chosen = (existing_record(record_path(run_dir)).get("manifest") or {}).get("torch_threads")
    return chosen if isinstance(chosen, int) and not isinstance(chosen, bool) and chosen >= 1 else threads


def fit_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint ``fit`` resumes from: the run's own last.ckpt, a given file, or a given run dir's last.ckpt."""
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if cfg.get("resume") == "auto":  # e.g. a SLURM job requeued after its time ran out
        return str(last) if last.is_file() else None
    if cfg.get("resume"):
        return str(last)
    if cfg.get("ckpt_path"):
        return str(resolve_checkpoint(cfg.ckpt_path, "last.ckpt"))
    return None


def saved_config(run_dir: str | Path) -> tuple[DictConfig, list[str]] | None:
    """The run's own config and overrides: ``.hydra/`` of its first command, else the config in its last.ckpt."""
    run = Path(run_dir)
    records, last = run / RECORDS, run / "checkpoints" / "last.ckpt"
    if has_run_records(run):
        config = OmegaConf.create(renamed_targets(yaml.safe_load((records / "config.yaml").read_text()) or {}))
        # a composed config with its interpolations: checked resolved, like a --config-path from elsewhere
        check_config(config, str(records / "config.yaml"))
        overrides_file = records / "overrides.yaml"
        overrides = (yaml.safe_load(overrides_file.read_text()) if overrides_file.is_file() else None) or []
    elif last.is_file():
        saved = renamed_targets(checked_checkpoint(last)["hyper_parameters"]["config"])
        # instantiating a config read from a file runs whatever its _target_s name: the allowlist decides first
        check_saved_config(saved, str(last))
        config, overrides = OmegaConf.create(saved), []
    else:
        return None
    return config, [str(item) for item in overrides]


def _key(override: str) -> str:
    return override.lstrip("~+").partition("=")[0]


def continue_config(cfg: DictConfig, run_dir: str | Path, overrides: list[str]) -> tuple[DictConfig, list[str]] | None:
    """The run's saved config with this command's allowed overrides applied, and those overrides; None if nothing is saved.

    An override the run itself was started with, or that leaves the value as saved, is no change. Any other override
    outside ``RESUME_OVERRIDES`` raises ResumeError naming it: resuming must continue that run, not another experiment.
    """
    saved = saved_config(run_dir)
    if saved is None:
        return None
    config, original = saved
    applied, refused = [], []
    for override in overrides:
        key = _key(override)
        if key in SELECTORS or key.startswith(IGNORED_PREFIXES) or override in original:
            continue
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if key in RESUME_OVERRIDES and value is not _ABSENT:
            OmegaConf.update(config, key, _plain(value), merge=False, force_add=True)
            applied.append(override)
        elif value is _ABSENT or _plain(value) != _plain(OmegaConf.select(config, key, default=_ABSENT)):
            refused.append(override)
    if refused:
        raise ResumeError(
            f"{', '.join(refused)}: {run_dir} continues with its own config (.hydra/config.yaml); a resume accepts only "
            f"{', '.join(RESUME_OVERRIDES)} - start a new run (a new hydra.run.dir) to change anything else"
        )
    for key in SELECTORS:  # how this command continues the run (fit_checkpoint), not how the run began
        OmegaConf.update(config, key, cfg.get(key), merge=False, force_add=True)
    return config, applied


def _plain(value: Any) -> Any:
    """A config value as plain Python, interpolations resolved, so saved and composed values compare by content."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
