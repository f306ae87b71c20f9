"""One command for a lent GPU machine: install the carried wheels, run the `gpu` tests, print the GPU benchmarks.

Here, with network:   python scripts/gpu_check.py --download-wheels wheels
  downloads the wheels of every package segsweep, its `gpu` tests and the benchmarks need beyond what the GPU
  machine has (Python 3.12 with torch, pytorch-lightning, torchmetrics, tensorboard and timm), for Python 3.12 on
  manylinux x86_64, at the versions of constraints.txt, into wheels/ (git-ignored); copy the repo with it.
There, without network:   python3 scripts/gpu_check.py
  1. installs the wheels its Python lacks (`pip install --no-index --find-links wheels --no-deps --target
     wheels/site`; unpacked directly if it has no pip) and imports segsweep.train with them;
  2. without a CUDA device says so in one line and exits 1;
  3. runs `pytest -m gpu`;
  4. prints benchmark lines (benchlib's format), each from `scripts/bench_sweep.py --device cuda` in a process of
     its own: the training step against the device's bf16 matmul, a short loss_comparison_gpu sweep (one seed,
     3 epochs) with hydra.launcher.jobs_per_gpu=1 and =auto side by side (its FLOP fraction), and the training
     step compiled in each module.compile_mode against eager.
All within --budget seconds (480): a step that would pass it is stopped and its line says so. Exit 0 when the tests
passed, else 1.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 480
TARGET_PYTHON = "3.12"
# glibc 2.28 or later (torch's own wheels need it); pip takes only the platform tags it is given, not older ones
TARGET_PLATFORMS = (*(f"manylinux_2_{minor}_x86_64" for minor in range(28, 16, -1)), "manylinux2014_x86_64")
# on the GPU machine already, with all they require (numpy, pillow, PyYAML, packaging, typing-extensions, ...)
PROVIDED = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "tensorboard", "timm")
# beside segsweep's core dependencies: what the gpu tests (and MONAI's reference tests) run with
TEST_TOOLS = ("pytest", "pytest-timeout", "monai")
# Every distribution the core dependencies and TEST_TOOLS require that PROVIDED does not bring, by name; versions
# come from constraints.txt. tests/test_gpu_check.py fails when a dependency added to pyproject.toml is missing here.
WHEELS = (
    "alembic", "antlr4-python3-runtime", "cloudpickle", "cmaes", "colorlog", "contourpy", "cycler", "fonttools",
    "hydra-core", "hydra-joblib-launcher", "hydra-submitit-launcher", "iniconfig", "joblib", "kiwisolver", "mako",
    "markdown-it-py", "matplotlib", "mdurl", "monai", "omegaconf", "optuna", "pluggy", "pygments", "pyparsing",
    "pytest", "pytest-timeout", "python-dateutil", "rich", "scipy", "six", "sqlalchemy", "submitit",
)  # fmt: skip
# published as a source archive only: pure Python, built into a wheel here
FROM_SOURCE = ("antlr4-python3-runtime",)
# the environment markers of the GPU machine's Python, for reading requirements
TARGET_MARKERS = {
    "python_version": TARGET_PYTHON, "python_full_version": f"{TARGET_PYTHON}.0", "sys_platform": "linux",
    "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "extra": "",
}  # fmt: skip
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
SWEEP = ("hydra.sweeper.params.seed=1", "trainer.max_epochs=3")  # 5 jobs: every loss, one seed


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(constraints: Path = REPO_ROOT / "constraints.txt") -> dict[str, str]:
    """``name -> version`` of constraints.txt (canonical names)."""
    rows = (line.split("#")[0].strip() for line in constraints.read_text().splitlines())
    return {canonical(name): version for name, _, version in (row.partition("==") for row in rows if "==" in row)}


def download_commands(directory: Path, versions: dict[str, str]) -> list[list[str]]:
    """pip commands fetching WHEELS for the GPU machine's Python and platform, each alone (``--no-deps``: torch and
    the rest of PROVIDED must not come along); FROM_SOURCE built into wheels."""
    missing = [name for name in WHEELS if name not in versions]
    if missing:
        raise SystemExit(f"constraints.txt pins no version of {', '.join(missing)} (scripts/gpu_check.py WHEELS)")
    pip = [sys.executable, "-m", "pip"]
    binary = [f"{name}=={versions[name]}" for name in WHEELS if name not in FROM_SOURCE]
    source = [f"{name}=={versions[name]}" for name in FROM_SOURCE]
    platforms = [option for platform in TARGET_PLATFORMS for option in ("--platform", platform)]
    target = ["--python-version", TARGET_PYTHON, "--implementation", "cp", *platforms]
    return [
        [*pip, "download", "--only-binary=:all:", "--no-deps", *target, "--dest", str(directory), *binary],
        [*pip, "wheel", "--no-deps", "--wheel-dir", str(directory), *source],
    ]


def wheel_files(directory: Path) -> dict[str, Path]:
    """The wheels in ``directory`` by canonical distribution name."""
    return {canonical(path.name.split("-")[0]): path for path in sorted(directory.glob("*.whl"))}


def installed(search_path: Iterable[str]) -> set[str]:
    """Canonical names of the distributions found on ``search_path``."""
    return {canonical(dist.metadata["Name"]) for dist in importlib.metadata.distributions(path=list(search_path))}


def to_install(present: set[str]) -> list[str]:
    """The WHEELS the interpreter lacks."""
    return [name for name in WHEELS if name not in present]


def install_command(python: str, wheels: Path, site: Path, names: list[str]) -> list[str]:
    """pip installing ``names`` from the wheels alone (no index, no dependencies) into ``site``."""
    return [python, "-m", "pip", "install", "--no-index", "--find-links", str(wheels), "--no-deps", "--target",
            str(site), "--no-warn-script-location", "--disable-pip-version-check", "--quiet", *names]  # fmt: skip


def install(wheels: Path, site: Path) -> list[str]:
    """The WHEELS this Python lacks installed into ``site`` (afresh unless it holds exactly them); returns them."""
    names = to_install(installed(sys.path))
    record = site / "gpu_check_installed.json"
    if record.is_file() and json.loads(record.read_text()) == names:
        return names
    found = wheel_files(wheels)
    absent = [name for name in names if name not in found]
    if absent:
        raise SystemExit(
            f"{wheels}: no wheel of {', '.join(absent)}; run `python scripts/gpu_check.py --download-wheels {wheels}`"
        )
    shutil.rmtree(site, ignore_errors=True)
    site.mkdir(parents=True)
    if names and subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0:
        subprocess.run(install_command(sys.executable, wheels, site, names), check=True)
    else:  # no pip: a wheel is a zip of what goes into site-packages
        for name in names:
            zipfile.ZipFile(found[name]).extractall(site)
    record.write_text(json.dumps(names))
    return names


def requirements(name: str, markers: dict[str, str] = TARGET_MARKERS) -> list[str] | None:
    """What distribution ``name`` (as installed here) requires on the GPU machine; None if it is not installed."""
    from packaging.requirements import Requirement

    try:
        listed = importlib.metadata.distribution(name).requires or []
    except importlib.metadata.PackageNotFoundError:
        return None
    parsed = [Requirement(text) for text in listed]
    return [canonical(req.name) for req in parsed if req.marker is None or req.marker.evaluate(markers)]


def closure(names: Iterable[str], requires: Callable[[str], list[str] | None] = requirements) -> set[str]:
    """``names`` and everything they require, transitively (as far as the metadata here knows them)."""
    seen: set[str] = set()
    todo = [canonical(name) for name in names]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += requires(name) or []
    return seen


def core_dependencies(pyproject: Path = REPO_ROOT / "pyproject.toml") -> list[str]:
    from packaging.requirements import Requirement

    return [canonical(Requirement(text).name) for text in tomllib.loads(pyproject.read_text())["project"]["dependencies"]]


def uncovered() -> list[str]:
    """Distributions the GPU machine would lack: required by the core dependencies or TEST_TOOLS, neither PROVIDED
    (with what it requires) nor in WHEELS. Empty when the wheel list is complete."""
    needed = closure([*core_dependencies(), *TEST_TOOLS]) - closure(PROVIDED)
    return sorted(needed - set(WHEELS))


def run_limited(command: list[str], deadline: float, env: dict[str, str] | None = None) -> int | None:
    """Run ``command`` (output passed through) until ``deadline``; its process group is stopped there: None."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, start_new_session=True)
    try:
        return process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(process.pid, sig)
                process.wait(timeout=10)
                break
            except (ProcessLookupError, subprocess.TimeoutExpired):
                continue
        return None


def bench(name: str, options: list[str], deadline: float, out: Path, least_s: float = 30.0) -> dict | None:
    """``bench_sweep.py --device cuda OPTIONS``'s figures, or None (and a line saying why) past the budget."""
    left = deadline - time.monotonic()
    if left < least_s:
        print(f"{name}  skipped: {max(left, 0):.0f}s of gpu_check's budget left, under the {least_s:.0f}s it needs", flush=True)
        return None
    result = out / f"{name}.json"
    command = [sys.executable, str(REPO_ROOT / "scripts" / "bench_sweep.py"), "--device", "cuda", "--json", str(result)]
    code = run_limited([*command, *options], deadline)
    if code is None:
        print(f"{name}  skipped: stopped at the end of gpu_check's budget ({left:.0f}s were left for it)", flush=True)
        return None
    if code != 0 or not result.is_file():
        print(f"{name}  failed: bench_sweep.py exited {code}", flush=True)
        return None
    return json.loads(result.read_text())


def has_jobs_per_gpu() -> bool:
    """Whether this checkout's launcher takes ``hydra.launcher.jobs_per_gpu``."""
    from hydra import compose, initialize_config_dir

    from segsweep.app.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=loss_comparison_gpu"], return_hydra_config=True)
    return "jobs_per_gpu" in cfg.hydra.launcher


def print_line(text: str, note: str) -> None:
    print(f"{text}  [{note}]", flush=True)


def benchmarks(deadline: float) -> None:
    """The benchmark lines (run in a child that imports what the wheels installed)."""
    from benchlib import line

    out = Path(tempfile.mkdtemp(prefix="gpu_check."))
    eager = bench("sweep_train_step_gpu", ["--step-only"], deadline, out)
    sweep = [f"--override={override}" for override in SWEEP]
    variants = ("1", "auto") if has_jobs_per_gpu() else ()
    if not variants:
        print("sweep_jobs_per_gpu_gpu  skipped: this checkout's launcher has no hydra.launcher.jobs_per_gpu", flush=True)
        bench("sweep_gpu", sweep, deadline, out)
    walls = {}
    for value in variants:
        options = [*sweep, f"--override=hydra.launcher.jobs_per_gpu={value}"]
        figures = bench(f"sweep_gpu_jobs_per_gpu_{value}", options, deadline, out)
        if figures is not None:
            walls[value] = figures["sweep_wall_s"]
    if len(walls) == 2:
        auto, one = walls["auto"], walls["1"]
        text = line("sweep_jobs_per_gpu_gpu", f"auto={auto:.0f}s", f"one={one:.0f}s", one / auto, ">=", 3)
        print_line(text, f"the same loss_comparison_gpu sweep ({' '.join(SWEEP)}): several jobs per GPU against one")
    for mode in COMPILE_MODES:
        options = ["--step-only", "--override=module.compile=true", f"--override=module.compile_mode={mode}"]
        compiled = bench(f"compile_step_gpu_{mode}", options, deadline, out, least_s=60.0)
        if compiled is not None and eager is not None:
            ms, eager_ms = compiled["step_s"] * 1e3, eager["step_s"] * 1e3
            text = line(f"compile_step_gpu_{mode}", f"compiled={ms:.1f}ms", f"eager={eager_ms:.1f}ms", eager_ms / ms, None, None)
            print_line(text, f"a training step of loss_comparison_gpu, module.compile_mode={mode}, after a warm-up step")


def check(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.budget
    wheels = args.wheels.resolve()
    names = install(wheels, wheels / "site")
    path = [str(wheels / "site"), str(REPO_ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    imported = subprocess.run([sys.executable, "-c", "import segsweep.train, pytest, monai"], env=env, cwd=REPO_ROOT)
    if imported.returncode != 0:
        print(f"gpu_check_install  failed: import segsweep.train with {wheels / 'site'} on the path", flush=True)
        return 1
    print(f"gpu_check_install  {len(names)} wheels in {wheels / 'site'}; import segsweep.train OK", flush=True)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check  no CUDA device here: the install and import passed; the gpu tests and benchmarks need one")
        return 1
    print(f"gpu_check_device  {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}  torch {torch.__version__}")
    # only the files with gpu tests: collecting the others would import the optional extras (mlflow, smp, ...)
    files = sorted(str(path) for path in (REPO_ROOT / "tests").glob("test_*.py") if "mark.gpu" in path.read_text())
    pytest = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files]
    tests = run_limited(pytest, deadline - 120, env)  # two minutes kept for the benchmarks
    print(f"gpu_check_tests  {'stopped at the budget' if tests is None else 'passed' if tests == 0 else 'failed'}", flush=True)
    child = [sys.executable, str(Path(__file__).resolve()), "--benchmarks-until", str(deadline - time.monotonic())]
    run_limited(child, deadline + 15, env)
    return 0 if tests == 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--download-wheels", type=Path, metavar="DIR", help="download the wheels into DIR and stop")
    parser.add_argument("--wheels", type=Path, default=REPO_ROOT / "wheels", help="the carried wheels (default wheels/)")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for everything (default 480)")
    parser.add_argument("--benchmarks-until", type=float, help=argparse.SUPPRESS)  # the child: seconds it has
    args = parser.parse_args()
    if args.benchmarks_until is not None:
        benchmarks(time.monotonic() + args.benchmarks_until)
        return 0
    if args.download_wheels:
        args.download_wheels.mkdir(parents=True, exist_ok=True)
        for command in download_commands(args.download_wheels, pins()):
            subprocess.run(command, check=True)
        print(f"gpu_check_wheels  {len(wheel_files(args.download_wheels))} wheels in {args.download_wheels}")
        return 0
    return check(args)


if __name__ == "__main__":
    sys.exit(main())
