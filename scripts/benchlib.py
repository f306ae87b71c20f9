"""What the benchmarks in scripts/ share: the result line, side-by-side timing, threads, the plain training loop.

Every ``bench_*.py`` imports this module (``import benchlib``: a script's own directory is on its import path);
``bench.py`` runs them. Nothing here imports a benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from segsweep.app.build import class_weights
from segsweep.data.contract import SegmentationData

REPO_ROOT = Path(__file__).resolve().parent.parent
# torch's own default (one thread per core), read before any benchmark changes it
DEFAULT_THREADS = torch.get_num_threads()
# --quick: a few tiny batches of a tiny U-Net (debug=fast plus explicit sizes, whatever debug=fast holds)
QUICK_OVERRIDES = (
    "debug=fast",
    "data.image_size=32",
    "data.train_size=64",
    "data.batch_size=8",
    "model.base_channels=8",
    "model.depth=2",
    "trainer.limit_train_batches=null",
)
_OPS = {">=": lambda r, t: r >= t, "<=": lambda r, t: r <= t, "<": lambda r, t: r < t, ">": lambda r, t: r > t}


def verdict(ratio: float, op: str, target: float) -> str:
    return "PASS" if math.isfinite(ratio) and _OPS[op](ratio, target) else "MISS"


def line(bar: str, figure: str, reference: str, ratio: float, op: str | None, target: float | None) -> str:
    """One result line; ``op``/``target`` None means a reported figure without a bar (INFO)."""
    if op is None or target is None:
        return f"{bar}  {figure}  {reference}  ratio={ratio:.3g}  target none  INFO"
    return f"{bar}  {figure}  {reference}  ratio={ratio:.3g}  target {op} {target:g}  {verdict(ratio, op, target)}"


def alternate(contenders: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """Wall seconds of each contender per repetition, alternating who goes first (A B, B A, A B, ...)."""
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
    """Median over repetitions of numerator / denominator (paired by repetition)."""
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def quick_main(doc: str, run: Callable[..., dict[str, Any]], lines: Callable[[dict[str, Any]], list[str]]) -> int:
    """The command line of a benchmark that takes only ``--quick`` and ``--threads`` (default 1): its lines, its time."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes for a smoke test")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    start = time.perf_counter()
    print("\n".join(lines(run(quick=args.quick, threads=args.threads))))
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads if given; return the count in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def quiet_lightning() -> None:
    """Keep Lightning's per-fit banners (GPU available, tips, max_epochs reached) off the benchmark output."""
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", module="lightning_fabric")


def plain_fit(
    cfg: DictConfig, datamodule: SegmentationData, epochs: int, steps: int | None = None
) -> tuple[list[float], list[float]]:
    """The training of ``cfg`` as a bare PyTorch loop over the datamodule's train loader: the framework's reference.

    Returns the wall time at the end of every epoch and, if ``steps`` limits the batches of an epoch, their losses.
    """
    torch.use_deterministic_algorithms(bool(cfg.trainer.get("deterministic")))  # as the Trainer sets it
    pl.seed_everything(cfg.seed, verbose=False)
    weights = class_weights(cfg, datamodule)
    loss_fn = instantiate(cfg.loss) if weights is None else instantiate(cfg.loss, class_weights=weights)
    net = instantiate(cfg.model)
    # The module's speed flags, applied the same way (so "same model" holds whatever the defaults become).
    channels_last = bool(cfg.get("module", {}).get("channels_last"))
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    if cfg.get("module", {}).get("compile"):
        net = torch.compile(net)
    scheduler = instantiate(cfg.scheduler)(optimizer=optimizer) if cfg.get("scheduler") else None
    loader = datamodule.train_dataloader()
    net.train()
    ends, losses = [], []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for step, (images, masks) in enumerate(loader):
            if steps is not None and step >= steps:
                break
            optimizer.zero_grad(set_to_none=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            loss = loss_fn(net(images), masks)
            loss.backward()
            optimizer.step()
            if steps is not None:
                losses.append(loss.item())
        if scheduler is not None:
            scheduler.step()
        ends.append(time.perf_counter())
    return ends, losses


def training_step(
    module: Any,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    masks: torch.Tensor,
    autocast: bool = False,
    device_type: str = "cpu",
) -> None:
    """What Lightning's automatic optimisation runs per batch (without the logging); ``autocast``: in bf16 on
    ``device_type``, as ``trainer.precision=bf16-mixed``."""
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        loss = module.loss(module(images), masks)
    loss.backward()
    optimizer.step()


def step_flops(module: Any, images: torch.Tensor, masks: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        module.loss(module(images), masks).backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_flops_per_s(size: int, repeats: int = 3) -> Callable[[], float]:
    a, b = torch.randn(size, size), torch.randn(size, size)

    def measure() -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            times.append(time.perf_counter() - start)
        return 2 * size**3 / min(times)

    return measure


def matmul_when_told(size: int, repeats: int) -> None:
    """One process of ``concurrent_matmul_flops_per_s``: says ready when warm, measures when told to go."""
    torch.set_num_threads(1)
    measure = matmul_flops_per_s(size, repeats)
    measure()
    print("ready", flush=True)
    sys.stdin.readline()
    print(measure(), flush=True)


# a separate interpreter, not multiprocessing: benchlib is imported by path, which spawned children cannot repeat
_WORKER = "import sys; sys.path.insert(0, sys.argv[1]); import benchlib; benchlib.matmul_when_told(*map(int, sys.argv[2:]))"


def concurrent_matmul_flops_per_s(processes: int, size: int = 2048, repeats: int = 5) -> float:
    """Summed matmul FLOP/s of ``processes`` one-thread processes multiplying at the same time: the machine's
    arithmetic as a sweep that runs one job per core can use it."""
    command = [sys.executable, "-c", _WORKER, str(Path(__file__).resolve().parent), str(size), str(repeats)]
    workers = [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    try:
        for worker in workers:  # every one warm before any starts
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a matmul process exited early (code {worker.wait()})")
        for worker in workers:
            worker.stdin.write("go\n")
            worker.stdin.flush()
        return sum(float(worker.stdout.readline()) for worker in workers)
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what the platform says."""
    try:
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# a job log line's time stamp, as Hydra's job logging writes it: [2026-12-07 14:04:38,342][...]
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def job_spans(sweep_dir: Path) -> dict[str, tuple[float, float]]:
    """Each job of a finished sweep dir: the epoch seconds of the first and the last line of its train.log (what the
    job itself ran: from after its config is composed and its stack imported to its end line)."""
    spans = {}
    for log in sorted(sweep_dir.glob("*/train.log")):
        stamps = [match.group(1) for text in log.read_text().splitlines() if (match := _LOG_TIME.match(text))]
        if stamps:
            first, last = (datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in (stamps[0], stamps[-1]))
            spans[log.parent.name] = (first, last)
    return spans


def job_results(sweep_dir: Path) -> dict[str, Any]:
    """Each job's numbers in its metrics.json: test metrics, best epoch and the per-epoch history less its wall times."""
    results = {}
    for path in sorted(sweep_dir.glob("*/metrics.json")):
        record = json.loads(path.read_text())
        history = [{key: value for key, value in entry.items() if key != "time_s"} for entry in record.get("history") or []]
        results[path.parent.name] = {"test": record.get("test"), "best": record.get("best"), "history": history}
    return results


def differing_jobs(this: Path, other: Path) -> tuple[int, list[str]]:
    """How many jobs two sweep dirs share, and those whose numbers (``job_results``) are not bit-identical."""
    ours, theirs = job_results(this), job_results(other)
    shared = sorted(set(ours) & set(theirs))
    missing = sorted(set(ours) ^ set(theirs))
    return len(shared), [name for name in shared if ours[name] != theirs[name]] + [f"{name} (in one only)" for name in missing]


def timed_sweep(overrides: list[str], sweep_dir: Path, threads: int | None, checkout: Path = REPO_ROOT) -> dict[str, float]:
    """A multirun's wall time, its start-up and report, and the seconds its jobs ran, summed (``busy_s``: the
    core-seconds no job ran are wall x processes less these, bench_sweep.py's docstring), from its jobs' logs;
    ``checkout``: another clone of segsweep whose code and conf/ run it (``--baseline``)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    if checkout != REPO_ROOT:  # its src/ before the installed (editable) package
        env["PYTHONPATH"] = os.pathsep.join([str(checkout / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, "-m", "segsweep.train", "-m", *overrides, f"hydra.sweep.dir={sweep_dir}"]
    start, clock = time.time(), time.perf_counter()
    subprocess.run(command, cwd=checkout, env=env, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - clock
    spans = job_spans(sweep_dir).values()
    busy = sum(last - first for first, last in spans)
    return {
        "wall_s": wall,
        "startup_s": min(first for first, _ in spans) - start,
        "report_s": start + wall - max(last for _, last in spans),
        "busy_s": busy,
    }
