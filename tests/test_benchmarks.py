"""Smoke tests of the benchmark scripts in scripts/: each runs at tiny sizes so that none of them can rot.

No timing is asserted (the cores are shared; timing bars are measured by ``make bench``): only that every
figure is there, positive and finite, that the line format holds and that the correctness checks inside the
benchmarks (equal losses of the two training loops) pass.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch

from segsweep.app.compose import compose_config


def _load_runner():
    """scripts/bench.py by its path; it loads the benchmarks the same way (no sys.path changes anywhere)."""
    spec = importlib.util.spec_from_file_location("bench", Path(__file__).resolve().parents[1] / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_runner()
benchlib = bench.load("benchlib")
bench_efficiency = bench.load("bench_efficiency")
bench_memory = bench.load("bench_memory")
bench_overhead = bench.load("bench_overhead")
bench_scenes = bench.load("bench_scenes")
bench_threads = bench.load("bench_threads")

pytestmark = pytest.mark.slow

LINE = re.compile(r"^\w+  \S+  \S+  ratio=\S+  target (none|[<>]=? [\d.]+)  (PASS|MISS|INFO)(  \[.*\])?$")


@pytest.fixture(autouse=True)
def restore_torch_globals():
    """The benchmarks set torch's thread count and deterministic mode as a run would; give them back."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)


def positive(*values: float) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values)


def check_lines(lines: list[str], count: int) -> None:
    assert len(lines) == count, lines
    for text in lines:
        assert LINE.match(text), text


def test_overhead_runs_both_loops_and_their_losses_agree():
    result = bench_overhead.run(quick=True, repeats=1, threads=1, check_steps=2)
    assert result["equal_losses"]
    assert result["loss_max_abs_diff"] <= 1e-6
    assert positive(result["ours_images_per_s"], result["plain_images_per_s"], result["ratio"])
    check_lines(bench_overhead.lines(result), 1)


@pytest.mark.slow
def test_overhead_of_a_zoo_network():
    result = bench_overhead.run(quick=True, smp=True, repeats=1, threads=1, check_steps=2)
    assert result["equal_losses"] and result["model"] == "Unet-tu-mobilenetv3_small_050"
    (text,) = bench_overhead.lines(result)
    assert text.startswith("framework_overhead_smp ") and "Unet-tu-mobilenetv3_small_050 32px" in text
    check_lines([text], 1)


def test_overhead_check_fails_when_the_loops_differ(tmp_path, monkeypatch):
    """The equal-loss check is a real check: a plain loop with another learning rate must fail it."""
    torch.set_num_threads(1)
    cfg = compose_config(benchlib.QUICK_OVERRIDES, tmp_path / "run")
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    original = bench_overhead.plain_fit

    def other_lr(cfg, *args, **kwargs):
        changed = cfg.copy()
        changed.optimizer = {**cfg.optimizer, "lr": 10 * cfg.optimizer.lr}
        return original(changed, *args, **kwargs)

    monkeypatch.setattr(bench_overhead, "plain_fit", other_lr)
    with pytest.raises(AssertionError, match="losses differ"):
        bench_overhead.check_equal_losses(cfg, datamodule, 3, str(tmp_path / "tb"))


def test_scenes_reference_generator_draws_scenes():
    image, mask = bench_scenes.notebook_style_scene(48)
    assert image.shape == (48, 48, 3)
    assert image.dtype.name == "uint8"
    assert mask.shape == (48, 48)
    assert set(mask.flatten().tolist()) >= {0, 1, 2}


def test_scenes_benchmark_figures():
    result = bench_scenes.run(quick=True, repeats=1, threads=1)
    assert positive(result["ours_images_per_s"], result["reference_images_per_s"], result["ratio"])
    assert positive(result["share"]["generate_s"], result["share"]["epoch_s"], result["share"]["share"])
    check_lines(bench_scenes.lines(result), 2)


def test_efficiency_figures():
    result = bench_efficiency.run(quick=True, repeats=1, threads=1, compile=False)
    efficiency = result["efficiency"]
    assert positive(efficiency["step_flops"], efficiency["achieved_flops_per_s"], efficiency["matmul_flops_per_s"])
    assert 0 < efficiency["fraction"] < 10
    assert {"channels_last", "bf16_autocast", "inference_mode"} <= set(result["flags"])
    for flag in result["flags"].values():
        assert positive(flag["flag_s"], flag["default_s"], flag["speedup"])
    check_lines(bench_efficiency.lines(result), 1 + len(result["flags"]))


def test_memory_of_a_fast_training_run():
    result = bench_memory.run(quick=True, threads=1)
    assert positive(result["train"]["peak_rss_bytes"], result["train"]["wall_s"], result["rss_ratio"])
    lines = bench_memory.lines(result)
    check_lines(lines[:1], 1)
    assert "time make sweep" in lines[1]


def test_bench_prints_one_line_per_bar_and_exits_0(capsys):
    assert bench.main(["--quick", "--only", "sliding_window"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    check_lines(lines, 2)  # the bar (time and output vs MONAI), then predict's memory (INFO)
    assert lines[0].startswith("sliding_window  ours=")
    assert lines[1].startswith("sliding_window_memory  bounded=")


def test_folder_loader_times_both_loaders_on_the_same_folder():
    bench_folder_loader = bench.load("bench_folder_loader")
    result = bench_folder_loader.run(quick=True, workers=0)
    assert result["images"]["segsweep"] == result["images"]["plain"] - 1  # one of the 8 validates
    assert positive(result["per_worker"]["segsweep"], result["per_worker"]["plain"], result["decode_ratio"])
    assert result["rss_workers"] == 2 and positive(*result["peak_rss_bytes"].values())
    lines = bench_folder_loader.lines(result)
    check_lines(lines, 3)
    assert lines[0].startswith("folder_loader  segsweep=") and lines[1].startswith("png_decode  decode_png")
    assert lines[2].startswith("folder_loader_rss  segsweep=")


@pytest.mark.slow
def test_folder_memory_compares_a_folder_run_with_the_scenes():
    bench_folder_memory = bench.load("bench_folder_memory")
    result = bench_folder_memory.run(quick=True, threads=1)
    assert positive(result["cold"]["peak_rss_bytes"], result["scenes"]["peak_rss_bytes"], result["ratio"])
    lines = bench_folder_memory.lines(result)
    check_lines(lines, 2)
    assert lines[0].startswith("folder_memory  folder=")
    assert lines[1].startswith("folder_startup  cold=")


@pytest.mark.slow
def test_sweep_flop_fraction_counts_times_and_reports():
    bench_sweep = bench.load("bench_sweep")
    result = bench_sweep.run(quick=True, threads=1, repeats=2)
    assert result["jobs"] == 2
    assert positive(result["sweep_flops"], result["matmul_flops_per_s"], result["sweep_wall_s"], result["fraction"])
    assert result["sweep_flops"] == pytest.approx(2 * result["job_flops"])
    assert (result["processes"], result["threads"]) == (1, 1)  # --threads 1: one core, so one job at a time
    lines = bench_sweep.lines(result)
    check_lines(lines, 4)
    names = ["sweep_flop_fraction", "sweep_train_step", "sweep_overhead_share", "sweep_outside_steps_share"]
    assert [text.split()[0] for text in lines] == names
    # the fixed costs, from the jobs' logs: 2 jobs on 1 process, one after the other
    sweep = result["sweep"]
    assert 0 < sweep["fixed_share"] < 1 and sweep["startup_s"] > 0 and sweep["report_s"] > 0
    # --baseline: the same sweep timed in another checkout, as a before/after line, and its jobs' numbers compared
    compared = bench_sweep.lines(
        {**result, "baseline": Path("/old"), "baseline_wall_s": 2 * result["sweep_wall_s"], "baseline_sweep": sweep}
        | {"compared": (2, ["loss=dice,seed=1"])}
    )
    assert compared[-2].startswith("sweep_speedup") and "ratio=2" in compared[-2] and "/old" in compared[-2]
    assert compared[-1].startswith("sweep_identical  identical=1  jobs=2") and "MISS" in compared[-1]


def test_two_sweep_dirs_are_compared_job_by_job_and_spanned_by_their_logs(tmp_path):
    benchlib = bench.load("benchlib")
    for name, test, start in (("a", 0.5, "10:00:01,250"), ("b", 0.7, "10:00:02,000")):
        job = tmp_path / "this" / name
        job.mkdir(parents=True)
        entry = {"epoch": 1, "val/mIoU": 0.4, "time_s": 3.0}
        record = {"test": {"test/mIoU": test}, "best": {"epoch": 1}, "history": [entry]}
        (job / "metrics.json").write_text(json.dumps(record))
        lines = [f"[2026-12-07 {start}][x][INFO] - first", "  no stamp", "[2026-12-07 10:00:09,000][x][INFO] - end"]
        (job / "train.log").write_text("\n".join(lines) + "\n")
    shutil.copytree(tmp_path / "this", tmp_path / "other")
    spans = benchlib.job_spans(tmp_path / "this")
    assert [round(last - first, 3) for first, last in spans.values()] == [7.75, 7.0]
    assert benchlib.differing_jobs(tmp_path / "this", tmp_path / "other") == (2, [])
    history = tmp_path / "other" / "b" / "metrics.json"
    history.write_text(history.read_text().replace('"time_s": 3.0', '"time_s": 4.5'))  # wall times may differ
    assert benchlib.differing_jobs(tmp_path / "this", tmp_path / "other") == (2, [])
    history.write_text(history.read_text().replace("0.4", "0.40000001"))
    shutil.rmtree(tmp_path / "other" / "a")
    assert benchlib.differing_jobs(tmp_path / "this", tmp_path / "other") == (1, ["b", "a (in one only)"])


def test_the_machine_matmul_counts_every_core_at_once():
    benchlib = bench.load("benchlib")
    assert benchlib.concurrent_matmul_flops_per_s(2, size=256, repeats=2) > 0


def test_surface_metrics_times_ours_and_monai_at_each_size():
    result = bench.load("bench_surface_metrics").run(quick=True, threads=1)
    lines = bench.load("bench_surface_metrics").lines(result)
    check_lines(lines, 1)
    assert positive(result["sizes"][32]["ours_ms"], result["sizes"][32]["monai_ms"])


def test_distance_maps_time_each_loss_warm_and_cold():
    module = bench.load("bench_distance_maps")
    result = module.run(quick=True, threads=1)
    check_lines(module.lines(result), 2)
    assert all(positive(ms["warm"], ms["cold"]) for ms in result["losses"].values())


@pytest.mark.slow
def test_pruning_runs_the_same_search_pruned_and_unpruned():
    result = bench.load("bench_pruning").run(quick=True, threads=1)
    check_lines(bench.load("bench_pruning").lines(result), 2)
    pruned, unpruned = result["pruned"], result["unpruned"]
    assert unpruned["completed"] == 4 and unpruned["pruned"] == 0
    assert pruned["completed"] + pruned["pruned"] == 4  # that the pruner prunes: tests/test_pruning.py
    assert positive(pruned["wall_s"], unpruned["wall_s"])


def test_threads_variants_run_in_fresh_processes_with_their_environment():
    passive, one = (bench_threads._measure(name, steps=1, quick=True) for name in ("passive", "one"))
    assert passive["wait"] == "PASSIVE" and passive["threads"] >= 1 and positive(passive["step_s"])  # torch's default count
    assert one["wait"] is None and one["threads"] == 1
    runs = {name: [one] for name in bench_threads.VARIANTS}
    cpu = bench.load("benchlib").cpu_name()
    lines = bench_threads.lines({"cpu": cpu, "cores": 2, "conditions": {"quiet": runs, "busy": runs}})
    check_lines(lines[1:-1], 2 * len(bench_threads.VARIANTS))
    assert lines[0].startswith("threads_cpu  ") and lines[-1].startswith("threads_winner  ")


def test_gpu_time_on_paper_counts_each_public_study_and_scales_by_pixels():
    gpu_time = bench.load("gpu_time_on_paper")
    row = gpu_time.estimate("camvid", 0.4, 32)
    assert row["jobs"] == 15 and row["crop"] == 352 and row["steps"] == 100 * math.ceil(367 / 8)
    assert positive(row["step_tflop"], row["job_pflop"], row["hours"], row["images_per_s"])
    assert gpu_time.estimate("camvid", 0.4, 64)["step_tflop"] == pytest.approx(row["step_tflop"], rel=1e-6)
    assert gpu_time.table([row], 0.4, 32).splitlines()[3].startswith("| loss_comparison_camvid | 352x352 x 8 | 100 (4600) |")
