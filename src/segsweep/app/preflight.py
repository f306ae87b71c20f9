"""A command line's overrides composed before Hydra runs it: a composition error is one line naming the key.

Hydra reports an unknown key, an unknown group option or a malformed override in several lines (and the search
path); every other bad input of ours is one line (app.lifecycle). The same composition, done first, says it in
one line and exits 1 before Hydra has created a run dir. (Which check does what: ``app/validation.py``.)
"""

from __future__ import annotations

import atexit
import functools
import gc
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, Override, RangeSweep
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf.errors import OmegaConfBaseException

from segsweep.app.config import CONFIG_DIR
from segsweep.app.hydra_callbacks import unfinished_jobs
from segsweep.app.launch import missing_launcher_package
from segsweep.app.override_hints import missing_keys, quoted_form, unknown_key_line
from segsweep.app.parallel import check_launcher

# Lines of Hydra's messages that locate an error for a debugger, not for the user.
_DETAIL_PREFIXES = ("full_key:", "object_type=", "reference_type=", "See https://hydra.cc")


def error_line(error: BaseException) -> str:
    """Hydra's multi-line message in one line: a list after ``...:`` comma separated, the search path left out, the
    cause's own message (``Key 'fooo' is not in struct``) added."""
    line, listing = "", False
    cause = f"\n{error.__cause__}" if error.__cause__ is not None and str(error.__cause__) not in str(error) else ""
    for raw in (str(error) + cause).splitlines():
        text = raw.strip()
        if text.startswith("Config search path"):
            break
        if not text or text.startswith(_DETAIL_PREFIXES):
            continue
        if not line:
            line = text
        elif listing and raw[:1].isspace():
            line += (" " if line.endswith(":") else ", ") + text
        else:
            line += (" " if line.endswith((".", ":")) else ". ") + text
        listing = text.endswith(":") or (listing and raw[:1].isspace())
    return line or type(error).__name__


def composition_error(config_name: str, argv: Sequence[str]) -> str | None:
    """The one-line error of composing ``config_name`` with this command line's overrides; None if it composes.

    Sweep overrides (``loss=ce,dice``) are left to the sweep, and a command with its own ``--config-path`` or
    ``--config-dir``, or asking Hydra for help or info, to Hydra.
    """
    args = get_args_parser().parse_args(list(argv))
    if args.help or args.hydra_help or args.info or args.cfg or args.shell_completion or args.experimental_rerun:
        return None
    if args.config_path or args.config_dir:
        return None
    quoted = [form for form in map(quoted_form, args.overrides) if form is not None]
    if quoted:
        return f"a value holding '=' must be quoted: {' '.join(quoted)} (unquoted, Hydra reads it as a new override)"
    name = args.config_name or config_name
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            try:
                for overrides in _variants(OverridesParser.create().parse_overrides(args.overrides)):
                    composed = compose(config_name=name, overrides=overrides, return_hydra_config=True)
                    missing = missing_keys(composed)
                    if missing:  # Hydra would fail resolving hydra.run.dir (ckpt_path), in a traceback
                        from segsweep.runs.cli import required_line  # imports torch: only on this error

                        return required_line(missing[0])
                    # a multirun's launcher without its package (hydra/launcher=ray): which extra to install
                    launcher = missing_launcher_package(str(composed.hydra.launcher.get("_target_", "")))
                    if launcher is None or not (args.multirun or composed.hydra.get("mode") == RunMode.MULTIRUN):
                        launcher = _launcher_error(composed.hydra.launcher)
                    if launcher is not None:  # the launcher would raise it in a traceback
                        return launcher
            except (HydraException, OmegaConfBaseException) as error:
                return unknown_key_line(error, name, args.overrides) or error_line(error)
    finally:
        GlobalHydra.instance().clear()
    return None


def _launcher_error(launcher: Any) -> str | None:
    """The parallel launcher's keys checked (``app.parallel.check_launcher``); None where they hold or it is another."""
    if not str(launcher.get("_target_", "")).endswith(".ParallelLauncher"):
        return None
    keys = ("processes", "jobs_per_gpu", "max_jobs_per_gpu", "gpu_memory_fraction")
    try:
        check_launcher(**{key: launcher[key] for key in keys if key in launcher})
    except ValueError as error:
        return str(error)
    return None


def _variants(parsed: Sequence[Override]) -> list[list[str]]:
    """Override lists to compose: the single overrides, then the same with each value of each listed sweep
    (``loss=ce,hinge``: an unknown option is found before the sweep starts). Ranges and intervals are numbers: their
    key is checked with its first value where it has one."""
    single = [override.input_line for override in parsed if not override.is_sweep_override()]
    variants = [single]
    for override in parsed:
        if not override.is_sweep_override():
            continue
        key = override.input_line.partition("=")[0]
        if isinstance(override.value(), ChoiceSweep):
            values = list(override.sweep_string_iterator())
        elif isinstance(override.value(), RangeSweep):
            values = [str(next(iter(override.sweep_iterator())))]
        else:
            values = []
        variants += [[*single, f"{key}={value}"] for value in values]
    return variants


def checked_command(task: str, config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wraps a ``@hydra.main`` function: run from the command line, its overrides are composed first (one line, exit
    1, on error), and a multirun whose report found jobs unfinished exits 1. Called with a config (a launcher's worker
    process), it passes straight through, as Hydra's does."""

    def decorate(hydra_main: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(hydra_main)
        def command(cfg_passthrough: Any = None) -> Any:
            if cfg_passthrough is None:
                # the last of the exit hooks (they run in reverse): the interpreter's final garbage collection then
                # skips what is still alive, which with torch, Lightning and matplotlib imported took 1.7-2 s after
                # everything was written (BENCHMARKS.md, the default sweep); files, threads and child processes are
                # closed by their own hooks and by reference counting as before
                atexit.register(gc.freeze)
                error = composition_error(config_name, sys.argv[1:])
                if error is not None:
                    print(f"{task} failed: {error}", file=sys.stderr)
                    sys.exit(1)
            result = hydra_main(cfg_passthrough)
            if cfg_passthrough is None and unfinished_jobs():  # the report is written and its last line says so
                sys.exit(1)
            return result

        return command

    return decorate
