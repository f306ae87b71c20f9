"""What a run prints and logs: third-party noise filtered in one place, Lightning in the run log, numbers as shown."""

from __future__ import annotations

import logging
import math
import re
import shutil
import sys
import warnings
from typing import Any

from rich.console import Console

# Known-harmless warnings and messages, each with the reason it is dropped.
NOISE_WARNINGS = (
    # Lightning's own _pytree shim calls a torch API that torch deprecated; nothing for a user to do.
    r".*isinstance\(treespec, LeafSpec\).*",
    # The epoch-level val/test metrics are torchmetrics objects: torchmetrics already syncs them across ranks,
    # so Lightning's advice to add sync_dist=True does not apply.
    r".*It is recommended to use `self\.log\('(val|test)/.*sync_dist=True.*",
    # Lightning counts a DataLoader without workers as a bottleneck; our scenes are pre-generated tensors.
    r".*does not have many workers which may be a bottleneck.*",
    # conf/callbacks lists best.ckpt's ModelCheckpoint first on purpose: `test(ckpt_path="best")` is meant to use it.
    r".*is called with Trainer configured with multiple `ModelCheckpoint` callbacks.*",
    # conf/hydra/launcher/ray.yaml is checked against hydra-ray-launcher's schema of the same name on purpose; Hydra
    # 1.3 still does so and warns of a removal announced for 1.2
    r"\s*'hydra/launcher/ray' is validated against ConfigStore schema with the same name",
)
NOISE_MESSAGES = (
    # An advertisement for a cloud service, printed by every Trainer.
    re.compile(r".*litlogger.*"),
)
LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(pattern.match(message) for pattern in NOISE_MESSAGES)


def quiet_known_noise() -> None:
    """Filter the known-harmless third-party warnings and messages (the only place that does)."""
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    # on the handlers, not the loggers: a logger's filter never sees what its child loggers (pytorch_lightning.*) send
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, _DropNoise) for existing in handler.filters):
            handler.addFilter(_DropNoise())


def _is_console(handler: logging.Handler) -> bool:
    return type(handler) is logging.StreamHandler and handler.stream in (sys.stderr, sys.stdout)


def route_to_run_log(console: bool = True) -> None:
    """Send Lightning's messages and Python warnings through the root logger, whose handlers Hydra set up for this run
    (the console and the run dir's <task>.log), with the known noise filtered. Lightning gives its loggers their own
    stderr handler at import, before Hydra configures logging, so without this its messages never reach the log file.

    ``console=False`` (a multirun job): the console keeps only the job's own warnings and errors (a failed job, a
    skipped one); its progress and the library warnings every job repeats go to its log file. Hydra sets up the
    handlers afresh for every job, so the next job starts from Hydra's handlers again.
    """
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if _is_console(handler):
                logger.removeHandler(handler)
        logger.propagate = True
    logging.captureWarnings(True)
    if not console:
        for handler in logging.getLogger().handlers:
            if _is_console(handler):
                handler.setLevel(logging.WARNING)
                handler.addFilter(_OwnMessages())
    quiet_known_noise()


class _OwnMessages(logging.Filter):
    """Drops the Python warnings (logger ``py.warnings``) that every job of a sweep would repeat on the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "py.warnings"


def table_console() -> Console:
    """A rich console for result tables: ``COLUMNS`` or the terminal's width, 160 columns when the output is not a
    terminal (a pipe, CI), where rich would otherwise assume 80 and wrap the tables' rows."""
    return Console(width=shutil.get_terminal_size(fallback=(160, 24)).columns)


def significant(value: Any, digits: int = 4) -> str:
    """A number rounded to what it means: 4 significant digits (metrics), ``-`` for NaN or missing."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "-" if math.isnan(number) else f"{number:.{digits}g}"
