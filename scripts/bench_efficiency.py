"""Training efficiency of the U-Net step on this CPU, and the cheap speed-ups behind existing flags.

Usage: python scripts/bench_efficiency.py [--quick] [--repeats 5] [--threads N] [--no-compile]

1. FLOPs of one training step (forward + backward) of the default model at the default batch, counted with
   ``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matmuls; elementwise ops are not counted).
   Achieved FLOP/s = those FLOPs / the median wall time of a full step (zero_grad, forward, loss, backward,
   Adam). The machine's FLOP/s: a large float32 matmul. Steps and matmuls alternate over the repetitions and
   the reported fraction is the median per-repetition ratio. There is no bar: the figure is reported (INFO).
2. Each flag against the default, side by side (alternating, median per-repetition ratio). ratio is a
   SPEEDUP: default time / flag time, so > 1 means the flag is faster on this CPU.
   - ``module.channels_last``: the default channels_last memory format against ``module.channels_last=false`` (NCHW);
   - ``module.compile=true``: ``torch.compile`` of the network (its one-off compile time is reported apart);
   - ``torch.inference_mode`` vs ``torch.no_grad`` for an evaluation forward (Lightning's
     ``Trainer(inference_mode=True)``, the default, uses the former for validation and test);
   - ``trainer.precision=bf16-mixed`` (bf16 autocast on the CPU);
   - one intra-op thread vs torch's default (one per core).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from benchlib import (
    DEFAULT_THREADS,
    QUICK_OVERRIDES,
    alternate,
    line,
    matmul_flops_per_s,
    median_ratio,
    set_threads,
    step_flops,
    training_step,
)
from segsweep.app.build import build_module
from segsweep.app.compose import compose_config
from segsweep.data.contract import SegmentationData
from segsweep.models.module import SegmentationModule


def _module(cfg: Any, datamodule: SegmentationData, **flags: Any) -> tuple[SegmentationModule, torch.optim.Optimizer]:
    torch.manual_seed(0)
    with_flags = copy.deepcopy(cfg)
    for key, value in flags.items():
        with_flags.module[key] = value
    module = build_module(with_flags, datamodule)
    module.configure_model()  # where the module wraps its net in torch.compile
    module.train()
    return module, module.optimizer_factory(params=module.parameters())


def _steps(
    module: SegmentationModule, optimizer: torch.optim.Optimizer, batches: list, autocast: bool = False
) -> Callable[[], None]:
    def run() -> None:
        for images, masks in batches:
            training_step(module, optimizer, images, masks, autocast)

    return run


def run(quick: bool = False, repeats: int | None = None, threads: int | None = None, compile: bool = True) -> dict[str, Any]:
    threads = set_threads(threads)
    repeats = repeats or (2 if quick else 5)
    steps = 2 if quick else 4
    results: dict[str, Any] = {"threads": threads, "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="bench_efficiency_") as tmp:
        cfg = compose_config(list(QUICK_OVERRIDES) if quick else [], Path(tmp) / "run")
        torch.use_deterministic_algorithms(bool(cfg.trainer.get("deterministic")))  # as a training run sets it
        datamodule = instantiate(cfg.data)
        datamodule.setup("fit")
        loader = datamodule.train_dataloader()
        batches = [batch for _, batch in zip(range(steps), loader)]
        images, masks = batches[0]
        results.update(batch_size=int(images.shape[0]), image_size=int(images.shape[-1]))

        # 1. Achieved FLOP/s of the default step vs the machine's matmul FLOP/s.
        module, optimizer = _module(cfg, datamodule)
        flops = step_flops(module, images, masks)
        default_steps = _steps(module, optimizer, batches)
        default_steps()  # warm-up
        matmul = matmul_flops_per_s(512 if quick else 2048)
        matmul()
        step_times, peaks = [], []
        for repeat in range(repeats):
            for side in ("step", "matmul") if repeat % 2 == 0 else ("matmul", "step"):
                if side == "step":
                    start = time.perf_counter()
                    default_steps()
                    step_times.append((time.perf_counter() - start) / steps)
                else:
                    peaks.append(matmul())
        achieved = [flops / t for t in step_times]
        results["efficiency"] = {
            "step_flops": flops,
            "step_s": statistics.median(step_times),
            "achieved_flops_per_s": statistics.median(achieved),
            "matmul_flops_per_s": statistics.median(peaks),
            "fraction": median_ratio(achieved, peaks),
        }

        # 2. Flags, each side by side with the default.
        flags: dict[str, dict[str, Any]] = {}

        # channels_last is the default: its line compares it with the NCHW format it replaced
        nchw_module, nchw_optimizer = _module(cfg, datamodule, channels_last=False)
        nchw_steps = _steps(nchw_module, nchw_optimizer, batches)
        nchw_steps()
        times = alternate({"default": nchw_steps, "flag": default_steps}, repeats)
        flags["channels_last"] = _flag(times, steps)

        if compile:
            compiled, compiled_optimizer = _module(cfg, datamodule, compile=True)
            compiled_steps = _steps(compiled, compiled_optimizer, batches)
            start = time.perf_counter()
            compiled_steps()  # compiles forward and backward
            compile_s = time.perf_counter() - start
            times = alternate({"default": default_steps, "flag": compiled_steps}, repeats)
            flags["compile"] = _flag(times, steps) | {"compile_s": compile_s}
            torch._dynamo.reset()

        times = alternate({"default": default_steps, "flag": _steps(module, optimizer, batches, autocast=True)}, repeats)
        flags["bf16_autocast"] = _flag(times, steps)

        eval_images = torch.cat([images for images, _ in batches])
        module.eval()

        def evaluate(context: Callable[[], Any]) -> Callable[[], None]:
            def run_eval() -> None:
                with context():
                    module(eval_images)

            return run_eval

        no_grad, inference = evaluate(torch.no_grad), evaluate(torch.inference_mode)
        no_grad(), inference()
        times = alternate({"default": no_grad, "flag": inference}, repeats)
        flags["inference_mode"] = _flag(times, 1, default_name="no_grad", flag_name="inference_mode")
        module.train()

        if DEFAULT_THREADS > 1:

            def with_threads(count: int) -> Callable[[], None]:
                def run_steps() -> None:
                    torch.set_num_threads(count)
                    try:
                        default_steps()
                    finally:
                        torch.set_num_threads(threads)

                return run_steps

            many, one = with_threads(DEFAULT_THREADS), with_threads(1)
            many(), one()
            times = alternate({"default": many, "flag": one}, repeats)
            flags["one_thread"] = _flag(times, steps, default_name=f"{DEFAULT_THREADS}_threads", flag_name="1_thread")
        results["flags"] = flags
        GlobalHydra.instance().clear()
    return results


def _flag(times: dict[str, list[float]], per: int, default_name: str = "off", flag_name: str = "on") -> dict[str, Any]:
    return {
        "flag_s": statistics.median(times["flag"]) / per,
        "default_s": statistics.median(times["default"]) / per,
        "speedup": median_ratio(times["default"], times["flag"]),
        "names": (flag_name, default_name),
    }


def lines(r: dict[str, Any]) -> list[str]:
    e = r["efficiency"]
    out = [
        line(
            "training_efficiency",
            f"achieved={e['achieved_flops_per_s'] / 1e9:.1f}GFLOP/s"
            f"({e['step_flops'] / 1e9:.2f}GFLOP/step,{e['step_s'] * 1e3:.0f}ms/step)",
            f"matmul={e['matmul_flops_per_s'] / 1e9:.1f}GFLOP/s",
            e["fraction"],
            None,
            None,
        )
        + f"  [U-Net step, batch {r['batch_size']} at {r['image_size']}px, fp32, threads={r['threads']}]"
    ]
    for name, f in r["flags"].items():
        on, off = f["names"]
        verdict = "faster" if f["speedup"] > 1.02 else "slower" if f["speedup"] < 0.98 else "same"
        extra = f", one-off compile {f['compile_s']:.1f}s" if "compile_s" in f else ""
        unit = "/step" if name != "inference_mode" else "/eval-forward"
        out.append(
            line(
                f"flag_{name}",
                f"{on}={f['flag_s'] * 1e3:.1f}ms{unit}",
                f"{off}={f['default_s'] * 1e3:.1f}ms{unit}",
                f["speedup"],
                None,
                None,
            )
            + f"  [ratio=speedup: {verdict} on this CPU{extra}]"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="debug=fast sizes: a smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's default)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile (about a minute)")
    args = parser.parse_args()
    for text in lines(run(args.quick, args.repeats, args.threads, args.compile)):
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
