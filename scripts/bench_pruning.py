"""A pruned Optuna search against the same search unpruned: trials completed, pruned, best value and wall time.

Usage: python scripts/bench_pruning.py [--quick] [--threads N]

Both searches are ``python -m segsweep.train hparams_search=...`` with the same sampler seed, trial count and sizes,
run one after the other in this one run: ``optuna`` (every trial trains to the end) and ``optuna_pruned`` (the
median pruner stops a trial whose val/mIoU_best is below the median of the earlier trials at the same epoch).
The first trials draw the same parameters; once a trial is pruned, TPE's later draws can differ.

Lines (INFO, no bar: what pruning buys depends on the search space):
- ``pruned_search_wall``: the pruned search's wall time over the unpruned one's;
- ``pruned_search_best``: the pruned search's best val/mIoU_best over the unpruned one's.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import REPO_ROOT, line

SIZES = ("data.image_size=64", "data.train_size=96", "data.val_size=32", "data.test_size=32", "model.base_channels=8")
QUICK_SIZES = ("data.image_size=48", "data.train_size=64", "data.val_size=16", "data.test_size=16", "data.batch_size=8")


def search(name: str, sweep_dir: Path, trials: int, epochs: int, overrides: tuple[str, ...], threads: int) -> dict[str, Any]:
    """Run the search ``hparams_search=<name>`` into ``sweep_dir``; its wall time and its trials' states."""
    import optuna

    command = [
        sys.executable, "-m", "segsweep.train", f"hparams_search={name}", f"hydra.sweeper.n_trials={trials}",
        f"trainer.max_epochs={epochs}", f"threads={threads}", *overrides, f"hydra.sweep.dir={sweep_dir}",
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    states = [trial.state.name for trial in study.trials]
    return {
        "wall_s": wall,
        "completed": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "best": max((trial.value for trial in study.trials if trial.state.name == "COMPLETE"), default=float("nan")),
    }


def run(quick: bool = False, threads: int | None = None) -> dict[str, Any]:
    trials, epochs = (4, 3) if quick else (12, 8)
    overrides = QUICK_SIZES if quick else SIZES
    # quick: the median pruner from the second trial's second epoch, so a smoke run can prune
    pruner = ("hydra.sweeper.pruner.n_startup_trials=1", "hydra.sweeper.pruner.n_warmup_steps=1") if quick else ()
    with tempfile.TemporaryDirectory(prefix="bench_pruning_") as tmp:
        result = {
            "unpruned": search("optuna", Path(tmp) / "unpruned", trials, epochs, overrides, threads or 1),
            "pruned": search("optuna_pruned", Path(tmp) / "pruned", trials, epochs, (*overrides, *pruner), threads or 1),
        }
    return result | {"trials": trials, "epochs": epochs, "threads": threads or 1}


def lines(r: dict[str, Any]) -> list[str]:
    pruned, unpruned = r["pruned"], r["unpruned"]
    counts = f"{r['trials']} trials x {r['epochs']} epochs, {r['threads']} thread(s)"
    trials = f"pruned: {pruned['completed']} completed, {pruned['pruned']} pruned; unpruned: {unpruned['completed']} completed"
    rows = {  # bar name: (result key, format, note)
        "pruned_search_wall": ("wall_s", "{:.0f}s", f"{trials}; {counts}"),
        "pruned_search_best": ("best", "{:.4f}", "best val/mIoU_best of the completed trials"),
    }
    return [
        line(
            bar,
            f"pruned={form.format(pruned[key])}",
            f"unpruned={form.format(unpruned[key])}",
            pruned[key] / unpruned[key],
            None,
            None,
        )
        + f"  [{note}]"
        for bar, (key, form, note) in rows.items()
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny searches for a smoke test")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print("\n".join(lines(run(quick=args.quick, threads=args.threads))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
