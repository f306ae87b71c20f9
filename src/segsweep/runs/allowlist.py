"""Which ``_target_``s a config read from a file may name, and the recursive check that refuses all others.

The files are a checkpoint's saved config and a ``--config-path`` from elsewhere; the check comes before anything
is instantiated. Instantiating such a config is code execution: ``_target_`` may name ``torch.load`` (of an
embedded pickle), ``builtins.open``, ``shutil.copyfile``, ``pathlib.Path.write_text``, and Hydra's own blocklist
(1.3.8: ``os.system``, ``subprocess``, ``shutil.rmtree``, ...) stops none of those. So the allowlist is explicit:
exactly the classes that conf/ configures (tests/test_security.py checks that every ``_target_`` under conf/ is
here), plus the project's own datamodules, networks and losses, found by where they are defined and what they are
(a class of that kind defined in that module), not by their name alone.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from segsweep.runs.checkpoint import CheckpointError

# Third-party and project classes conf/ names, by the exact dotted path conf/ uses.
ALLOWED_TARGETS = frozenset(
    {
        "torch.optim.Adam",
        "torch.optim.AdamW",
        "torch.optim.SGD",
        "torch.optim.lr_scheduler.CosineAnnealingLR",
        "torch.optim.lr_scheduler.StepLR",
        "pytorch_lightning.Trainer",
        "pytorch_lightning.callbacks.LearningRateMonitor",
        "pytorch_lightning.callbacks.ModelCheckpoint",
        "pytorch_lightning.loggers.TensorBoardLogger",
        "segsweep.runs.callbacks.metrics_file.MetricsFile",
        "segsweep.runs.callbacks.prediction_images.PredictionImages",
        "segsweep.runs.callbacks.rng_state.RngState",
        "segsweep.runs.callbacks.tensorboard_hparams.TensorBoardHparams",
        "segsweep.runs.callbacks.epoch_lines.EpochLines",
        "segsweep.runs.callbacks.image_counts.ImageCountsFile",
        "segsweep.runs.callbacks.progress_bar.EpochProgressBar",
        "pytorch_lightning.loggers.CSVLogger",
        "pytorch_lightning.loggers.MLFlowLogger",
        "pytorch_lightning.loggers.WandbLogger",
        # Hydra callbacks, the Optuna samplers and pruners of conf/hydra and conf/hparams_search
        "segsweep.report.SweepReportCallback",
        "segsweep.app.hydra_callbacks.MakeSweepDir",
        "segsweep.app.hydra_callbacks.JobLine",
        "optuna.samplers.TPESampler",
        "optuna.samplers.CmaEsSampler",
        "optuna.samplers.GPSampler",
        "optuna.samplers.QMCSampler",
        "optuna.samplers.RandomSampler",
        "optuna.samplers.GridSampler",
        "optuna.pruners.MedianPruner",
        "hydra_plugins.segsweep_plugins.adaptive_sweeper.AdaptiveSeedSweeper",
        "hydra_plugins.segsweep_plugins.optuna_sweeper.OptunaSweeper",
        "hydra_plugins.segsweep_plugins.parallel_launcher.ParallelLauncher",
        "hydra_plugins.segsweep_plugins.ray_launcher.RayLauncher",
    }
)

# Project packages whose classes of the given kind are allowed wherever they are defined in the package
# (a new datamodule, network or loss module needs no allowlist edit); values name the base class.
ALLOWED_PACKAGES = {
    "segsweep.data": ("pytorch_lightning", "LightningDataModule"),
    "segsweep.models": ("torch.nn", "Module"),  # networks (models.nets) and losses (models.losses)
}

# Classes that moved, by the old path a config saved before the move names -> the path they have now. A saved config
# is read with the new paths (renamed_targets) and then checked like any other, so an old path can only ever mean
# its one new class (the old path itself is never imported): anything not listed here is checked exactly as written.
MOVED_TARGETS = {
    # models/losses.py and its four siblings became the models/losses/ package, one family a module
    "segsweep.models.losses.CrossEntropyLoss": "segsweep.models.losses.cross_entropy.CrossEntropyLoss",
    "segsweep.models.losses.FocalLoss": "segsweep.models.losses.focal.FocalLoss",
    "segsweep.models.losses.DiceLoss": "segsweep.models.losses.dice.DiceLoss",
    "segsweep.models.losses.DiceCELoss": "segsweep.models.losses.dice.DiceCELoss",
    "segsweep.models.generalized_dice.GeneralizedDiceLoss": "segsweep.models.losses.dice.GeneralizedDiceLoss",
    "segsweep.models.topk.TopKCrossEntropyLoss": "segsweep.models.losses.cross_entropy.TopKCrossEntropyLoss",
    "segsweep.models.tversky.TverskyLoss": "segsweep.models.losses.tversky.TverskyLoss",
    "segsweep.models.lovasz.LovaszSoftmaxLoss": "segsweep.models.losses.lovasz.LovaszSoftmaxLoss",
    # data/datamodule.py became data/scenes_datamodule.py; runs/callbacks.py the runs/callbacks/ package
    "segsweep.data.datamodule.SceneDataModule": "segsweep.data.scenes_datamodule.SceneDataModule",
    "segsweep.runs.callbacks.MetricsFile": "segsweep.runs.callbacks.metrics_file.MetricsFile",
    "segsweep.runs.callbacks.PredictionImages": "segsweep.runs.callbacks.prediction_images.PredictionImages",
    "segsweep.runs.callbacks.RngState": "segsweep.runs.callbacks.rng_state.RngState",
    "segsweep.runs.callbacks.TensorBoardHparams": "segsweep.runs.callbacks.tensorboard_hparams.TensorBoardHparams",
    "segsweep.runs.console.EpochLines": "segsweep.runs.callbacks.epoch_lines.EpochLines",
    "segsweep.runs.image_counts.ImageCountsFile": "segsweep.runs.callbacks.image_counts.ImageCountsFile",
    # Lightning's progress bar (epochs from 0) became ours (epochs from 1, as everything else a user reads)
    "pytorch_lightning.callbacks.RichProgressBar": "segsweep.runs.callbacks.progress_bar.EpochProgressBar",
}

# Hydra's instantiate keys besides _target_, with the values that only change how an allowed call is made.
_FLAGS = {"_partial_": (True, False), "_recursive_": (True, False), "_convert_": ("none", "partial", "object", "all")}
_SPECIAL = ("_target_", "_args_", *_FLAGS)

ALLOWED_SUMMARY = (
    "segsweep.data.* datamodules, segsweep.models.* networks and losses, "
    f"and {len(ALLOWED_TARGETS)} more classes conf/ names (optimizers, schedulers, callbacks, loggers); "
    "see segsweep/runs/allowlist.py"
)


class UnsafeConfigError(CheckpointError):
    """A config from a file that would call something outside the allowlist; one line naming the file and key."""


def is_allowed(target: str) -> bool:
    """Whether a config from a file may name ``target``: listed exactly, or a class of its kind defined in a project package."""
    if target in ALLOWED_TARGETS:
        return True
    module_name, _, name = target.rpartition(".")
    base = next((base for package, base in ALLOWED_PACKAGES.items() if f"{module_name}.".startswith(f"{package}.")), None)
    if base is None or not name.isidentifier():
        return False
    try:  # importing is safe here: only modules of our own packages get this far
        obj = getattr(importlib.import_module(module_name), name, None)
    except (ImportError, ValueError):
        return False
    expected = getattr(importlib.import_module(base[0]), base[1])
    # defined right there: "segsweep.models.losses.torch.load" resolves to torch.load, an import, not a loss
    return isinstance(obj, type) and obj.__module__ == module_name and issubclass(obj, expected)


def renamed_targets(node: Any) -> Any:
    """A copy of a plain nested dict/list config with every ``_target_`` of MOVED_TARGETS replaced by its new path."""
    if isinstance(node, Mapping):
        renamed = {key: renamed_targets(value) for key, value in node.items()}
        target = renamed.get("_target_")
        if isinstance(target, str) and target in MOVED_TARGETS:
            renamed["_target_"] = MOVED_TARGETS[target]
        return renamed
    if isinstance(node, (list, tuple)):
        return [renamed_targets(item) for item in node]
    return node


def config_targets(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every ``_target_`` value in a plain nested dict/list, with its key path (``optimizer._args_[0]._target_``)."""
    for key_path, mapping in _mappings(node, path):
        if "_target_" in mapping:
            yield _join(key_path, "_target_"), mapping["_target_"]


def check_targets(node: Any, source: str, what: str = "a checkpoint") -> None:
    """Refuse (UnsafeConfigError) a plain nested dict/list config naming any call outside the allowlist, anywhere in it."""
    if OmegaConf.is_config(node):
        raise TypeError("check_targets takes plain containers; use check_config for a DictConfig")
    for key_path, mapping in _mappings(node, ""):
        problem = _problem(mapping, what)
        if problem is not None:
            key, reason = problem
            raise UnsafeConfigError(f"{source}: config key {_join(key_path, key)} {reason}")


def _problem(mapping: Mapping[str, Any], what: str) -> tuple[str, str] | None:
    """The first Hydra instantiate key of one dict that ``what`` may not use, and why; None if it may use them all."""
    if "_target_" not in mapping:
        special = [key for key in _SPECIAL if key in mapping]
        return (special[0], f"is a Hydra instantiate key without a _target_, which {what} may not use") if special else None
    target = mapping["_target_"]
    if not isinstance(target, str):
        return "_target_", f"is a {type(target).__name__}, not a class name"
    if not is_allowed(target):
        return "_target_", f"names {target}, which {what} may not call (allowed: {ALLOWED_SUMMARY})"
    if "_args_" in mapping and not isinstance(mapping["_args_"], (list, tuple)):
        return "_args_", "must be a list of positional arguments"
    for flag, values in _FLAGS.items():
        if flag in mapping and mapping[flag] not in values:
            return flag, f"is {mapping[flag]!r}; expected one of {', '.join(map(str, values))}"
    return None


def check_saved_config(config: Mapping[str, Any], source: str) -> None:
    """A checkpoint's saved config: resolved when saved, so any interpolation means an edited file; then the targets."""
    if OmegaConf.is_config(config):
        config = OmegaConf.to_container(config, resolve=False)
    for key_path, value in _leaves(config, ""):
        # an interpolation could run a resolver or build a _target_ node (oc.create) only after this check
        if isinstance(value, str) and "${" in value:
            reason = "holds an interpolation (${...}); a saved config is resolved, so this file was edited"
            raise UnsafeConfigError(f"{source}: config key {key_path} {reason}")
    check_targets(config, source)


def check_config(cfg: DictConfig, source: str) -> None:
    """A whole composed config from a file (``--config-path`` from elsewhere), checked with its interpolations resolved.

    Its ``hydra`` node, if present, is left out: Hydra has instantiated it (callbacks, launcher, sweeper) before a
    task function runs, so no check there can come first.
    """
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        if isinstance(resolved, dict):
            resolved.pop("hydra", None)
    except Exception as error:  # an interpolation that does not resolve cannot be checked, so it is refused too
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise UnsafeConfigError(f"{source}: config does not resolve, so it cannot be checked ({first})") from None
    check_targets(resolved, source, what="a config from a file")


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _children(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    # callers pass plain containers: iterating a DictConfig would resolve its interpolations behind the check's back
    if isinstance(node, Mapping):
        yield from ((_join(path, key), value) for key, value in node.items())
    elif isinstance(node, (list, tuple)):
        yield from ((f"{path}[{index}]", value) for index, value in enumerate(node))


def _mappings(node: Any, path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """Every dict in a nested dict/list (the root first), with its key path; dicts inside lists and _args_ included."""
    if isinstance(node, Mapping):
        yield path, node
    for child_path, child in _children(node, path):
        yield from _mappings(child, child_path)


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every value of a nested dict/list that is not itself a dict or list, with its key path."""
    if not isinstance(node, (Mapping, list, tuple)):
        yield path, node
    for child_path, child in _children(node, path):
        yield from _leaves(child, child_path)
