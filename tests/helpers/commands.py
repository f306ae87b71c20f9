"""The entry points run as a user runs them (``python -m``, in a subprocess), and what their output says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_module(
    module: str,
    *args: str,
    cwd: Path | None = None,
    check: bool = True,
    timeout: int = 600,
    unset: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``python -m module args`` in a subprocess, as a user would type it; ``unset``: environment variables it lacks,
    ``env``: its environment instead of this process's."""
    env = {key: value for key, value in (os.environ if env is None else env).items() if key not in unset}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="120")
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{module} {' '.join(args)} exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result


def error_lines(result: subprocess.CompletedProcess, *markers: str) -> list[str]:
    """The lines of a command's output (stdout, then stderr) holding any of ``markers`` (default: ``ERROR``, as logged)."""
    markers = markers or ("ERROR",)
    return [line for line in (result.stdout + result.stderr).splitlines() if any(marker in line for marker in markers)]
