"""Where the Hydra configs live (conf/); what the machine offers is segsweep.machine."""

from __future__ import annotations

from pathlib import Path


def _config_dir() -> Path:
    """``conf/`` of the source tree (editable install), or the copy shipped inside a wheel."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "conf", package.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"segsweep: no Hydra configs found beside {package} (looked for conf/train.yaml)")


CONFIG_DIR = str(_config_dir())
