"""Config-group choices (``loss: weighted_ce``): this command's, and those a run's first command recorded (``.hydra/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig


def named_choices(choices: Any) -> dict[str, str]:
    """Config-group choices (``loss: weighted_ce``) as plain strings; Hydra's own groups and empty optional ones left out."""
    return {
        str(group): str(choice) for group, choice in choices.items() if choice is not None and not str(group).startswith("hydra/")
    }


def recorded_choices(run_dir: str | None) -> dict[str, str]:
    """The config-group choices of the run's first command, from its ``.hydra/hydra.yaml`` (a resume keeps them)."""
    path = Path(run_dir or ".") / ".hydra" / "hydra.yaml"
    try:
        choices = yaml.safe_load(path.read_text())["hydra"]["runtime"]["choices"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return {}
    return named_choices(choices)


def group_choices() -> dict[str, str]:
    """The config-group choices of this command (``loss: weighted_ce``, ``model: unet``); Hydra's own groups left out."""
    if not HydraConfig.initialized():
        return {}
    return named_choices(HydraConfig.get().runtime.choices)
