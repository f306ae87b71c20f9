"""Compose a config as an entry point's task function sees it, outside a Hydra run: for tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from segsweep.app.config import CONFIG_DIR
from segsweep.app.resolvers import register_resolvers


def compose_config(overrides: Sequence[str], output_dir: str | Path, config_name: str = "train") -> DictConfig:
    """The composed ``config_name`` config with ``overrides``, ``hydra:`` interpolations resolvable, outputs in ``output_dir``.

    Sets the global ``HydraConfig`` (as a run does), so callers clear ``GlobalHydra`` when done.
    """
    GlobalHydra.instance().clear()
    register_resolvers()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    return task_config(cfg, output_dir)


def task_config(cfg: DictConfig, output_dir: str | Path) -> DictConfig:
    """A composed config with its ``hydra`` node (``compose_config``'s, or a launcher's job config saved to a file) as
    the task function sees it, outputs in ``output_dir``: the global ``HydraConfig`` set from it, the node removed."""
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.job.override_dirname = ""  # the launcher sets these for real jobs
    HydraConfig.instance().set_config(cfg)
    # The task function sees the config without its hydra node, as Hydra's run_job does it.
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg
