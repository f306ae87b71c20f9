"""scripts/gpu_check.py on the CPU: its wheel list covers every dependency, its pip commands, the install, no-CUDA exit."""

import importlib.util
import re
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch

from .helpers.commands import REPO_ROOT

spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "scripts" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_check)


def test_the_wheel_list_covers_every_dependency_the_gpu_machine_lacks():
    # fails when a dependency (or a dependency of one) is added to pyproject.toml and not to WHEELS
    assert gpu_check.uncovered() == []
    provided = gpu_check.closure(gpu_check.PROVIDED)  # numpy, pillow: torchvision, tensorboard and timm need them
    assert set(gpu_check.core_dependencies()) - set(gpu_check.WHEELS) - provided == set()
    assert not set(gpu_check.WHEELS) & provided, "a wheel the GPU machine has already"


def test_uncovered_names_what_an_added_dependency_brings_along():
    graph = {"segsweep-core": ["hydra-core", "newdep"], "newdep": ["newdep-helper", "numpy"], "hydra-core": []}
    needed = gpu_check.closure(["segsweep-core"], lambda name: graph.get(name, []))
    assert needed == {"segsweep-core", "hydra-core", "newdep", "newdep-helper", "numpy"}
    assert sorted(needed - set(gpu_check.WHEELS) - {"segsweep-core", "numpy"}) == ["newdep", "newdep-helper"]


def test_download_commands_fetch_each_pinned_wheel_alone_for_python_312_on_manylinux(tmp_path):
    versions = gpu_check.pins()
    binary, source = gpu_check.download_commands(tmp_path, versions)
    assert binary[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in binary and "--no-deps" in binary
    assert binary[binary.index("--python-version") + 1] == "3.12" and "manylinux_2_28_x86_64" in binary
    assert "manylinux2014_x86_64" in binary and binary[binary.index("--dest") + 1] == str(tmp_path)
    fetched = {arg.split("==")[0] for arg in binary + source if "==" in arg}
    assert fetched == set(gpu_check.WHEELS) and not fetched & {"torch", "pytorch-lightning", "numpy"}
    assert f"hydra-core=={versions['hydra-core']}" in binary
    assert source[3:5] == ["wheel", "--no-deps"] and source[-1] == "antlr4-python3-runtime==4.9.3"
    with pytest.raises(SystemExit, match="pins no version of hydra-core"):
        gpu_check.download_commands(tmp_path, {name: "1" for name in gpu_check.WHEELS if name != "hydra-core"})


def test_install_command_uses_the_carried_wheels_alone(tmp_path):
    command = gpu_check.install_command("python3", tmp_path / "wheels", tmp_path / "site", ["hydra-core", "rich"])
    assert command[:4] == ["python3", "-m", "pip", "install"] and command[-2:] == ["hydra-core", "rich"]
    assert "--no-index" in command and "--no-deps" in command
    assert command[command.index("--find-links") + 1] == str(tmp_path / "wheels")
    assert command[command.index("--target") + 1] == str(tmp_path / "site")
    assert gpu_check.to_install({"rich", "scipy"}) == [name for name in gpu_check.WHEELS if name not in {"rich", "scipy"}]


def make_wheel(directory: Path, name: str) -> Path:
    """A minimal pure-Python wheel of distribution ``name`` with a module of the same name."""
    module, info = name.replace("-", "_"), f"{name.replace('-', '_')}-1.0.dist-info"
    path = directory / f"{module}-1.0-py3-none-any.whl"
    files = {
        f"{module}.py": "VALUE = 42\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{file},,\n" for file in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as archive:
        for file, text in files.items():
            archive.writestr(file, text)
    return path


@pytest.mark.parametrize("with_pip", [True, False])
def test_install_puts_the_missing_wheels_into_the_site_dir_once(tmp_path, monkeypatch, with_pip):
    wheels, site = tmp_path / "wheels", tmp_path / "wheels" / "site"
    wheels.mkdir()
    for name in ("gpucheck-probe-a", "gpucheck-probe-b"):
        make_wheel(wheels, name)
    monkeypatch.setattr(gpu_check, "WHEELS", ("gpucheck-probe-a", "gpucheck-probe-b", "pytest"))  # pytest is here
    if not with_pip:  # the fallback: the wheels unpacked
        monkeypatch.setattr(gpu_check.subprocess, "run", lambda *args, **kwargs: subprocess.CompletedProcess(args, 1))
    assert gpu_check.install(wheels, site) == ["gpucheck-probe-a", "gpucheck-probe-b"]
    assert (site / "gpucheck_probe_a.py").is_file() and (site / "gpucheck_probe_b.py").is_file()
    assert gpu_check.installed([str(site)]) >= {"gpucheck-probe-a", "gpucheck-probe-b"}
    (site / "kept").write_text("")
    assert gpu_check.install(wheels, site) == ["gpucheck-probe-a", "gpucheck-probe-b"]
    assert (site / "kept").is_file(), "an install that is there already is not redone"
    (wheels / "gpucheck_probe_b-1.0-py3-none-any.whl").unlink()
    (site / "gpu_check_installed.json").unlink()
    with pytest.raises(SystemExit, match="no wheel of gpucheck-probe-b; run `python scripts/gpu_check.py --download"):
        gpu_check.install(wheels, site)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the no-CUDA exit")
def test_without_cuda_it_checks_the_install_and_import_then_says_so_in_one_line_and_exits_1(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--wheels", str(tmp_path / "wheels")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith("gpu_check_install  0 wheels in") and lines[0].endswith("import segsweep.train OK")
    assert lines[1:] == ["gpu_check  no CUDA device here: the install and import passed; the gpu tests and benchmarks need one"]


def test_a_step_past_the_budget_is_stopped_with_its_children():
    start = time.monotonic()
    sleeper = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    )
    assert gpu_check.run_limited([sys.executable, "-c", sleeper], start + 2) is None
    assert time.monotonic() - start < 20
    assert gpu_check.run_limited([sys.executable, "-c", "pass"], start + 60) == 0


def test_benchmarks_that_would_pass_the_budget_say_so_in_their_line():
    result = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--benchmarks-until", "1"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    names = [line.split()[0] for line in lines]
    assert names[0] == "sweep_train_step_gpu" and names[-3:] == [f"compile_step_gpu_{mode}" for mode in gpu_check.COMPILE_MODES]
    assert all("  skipped: " in line for line in lines), lines
    assert re.search(r"skipped: \d+s of gpu_check's budget left, under the 30s it needs$", lines[0])
