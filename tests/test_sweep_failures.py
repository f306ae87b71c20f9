"""A sweep that meets failures: bad metrics.json files, jobs that never started, failed Optuna trials, a killed
joblib worker; the report is still written and running the same command again finishes the sweep."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus

from segsweep.app.search import allowed_failures, trial_outcome
from segsweep.report import build_report, main
from segsweep.sweep.jobs import BASIC_SWEEPER, find_jobs

from .helpers.commands import REPO_ROOT, run_module
from .helpers.outputs import CLASSES, fake_job, job_dirs, read_metrics

FAST = ["debug=fast"]

# ---------------------------------------------------------------- records of the wrong shape


BAD_RECORDS = {
    "seed=3": None,
    "seed=4": [1, 2],
    "seed=5": {"status": "completed", "error": None, "config": {}, "best": {}, "test": "abc", "history": []},
    "seed=6": {"status": "completed", "error": None, "config": {}, "best": {}, "test": {}, "history": [{"val/mIoU": "x"}]},
    "seed=7": {"status": "completed", "error": None, "config": {}, "best": {}, "test": {}, "history": "long"},
}


def test_metrics_json_of_the_wrong_shape_is_listed_unreadable_and_the_rest_reported(tmp_path, capsys):
    for seed in (1, 2):
        fake_job(tmp_path / f"seed={seed}", [f"seed={seed}"], 0.5 + 0.1 * seed, [0.5])
    for name, record in BAD_RECORDS.items():
        fake_job(tmp_path / name, [name], 0.5, [0.5])
        (tmp_path / name / "metrics.json").write_text(json.dumps(record))

    assert main([str(tmp_path), "--no-plots"]) == 0
    capsys.readouterr()
    report = build_report(tmp_path, plots=False)
    assert {job.name for job in report.failed} == set(BAD_RECORDS)
    (group,) = report.groups
    assert len(group.finished) == 2 and group.stats["test/mIoU"][0] == pytest.approx(0.65)
    text = (tmp_path / "report.md").read_text()
    expected = {
        "seed=3": "expected a JSON object, got NoneType",
        "seed=4": "expected a JSON object, got list",
        "seed=5": "test must be an object, got str",
        "seed=6": "history[0].val/mIoU must be a number, got 'x'",
        "seed=7": "history must be a list, got str",
    }
    for name, reason in expected.items():
        assert f"- `{name}`: metrics.json unreadable ({reason})" in text, name


def _counts_file(job_dir: Path, **arrays) -> None:
    names = np.array(CLASSES)
    intersection = np.ones((3, len(CLASSES)), dtype=np.int64)
    np.savez(
        job_dir / "test_image_counts.npz", **{"classes": names, "intersection": intersection, "union": intersection * 2, **arrays}
    )


def _craft(job_dir: Path, case: str) -> None:
    """One crafted or damaged file in a finished job's dir."""
    record_file, overrides_file = job_dir / "metrics.json", job_dir / ".hydra" / "overrides.yaml"
    record = json.loads(record_file.read_text())
    if case == "infinite test mIoU":
        record_file.write_text(record_file.read_text().replace('"test/mIoU": 0.5', '"test/mIoU": Infinity'))
    elif case == "infinite history":
        record_file.write_text(json.dumps({**record, "history": [{"epoch": 0, "val/mIoU": math.inf}]}))
    elif case == "deep JSON":
        record_file.write_text("[" * 100_000 + "]" * 100_000)
    elif case == "class names a number":
        record_file.write_text(json.dumps({**record, "classes": {"names": 5}}))
    elif case == "overrides not UTF-8":
        overrides_file.write_bytes(b"- seed=\xff\xfe\n")
    elif case == "overrides a number":
        overrides_file.write_text("42\n")
    elif case == "overrides a mapping":
        overrides_file.write_text("seed: 1\nloss: dice\n")
    elif case == "counts not an archive":
        (job_dir / "test_image_counts.npz").write_bytes(b"garbage")
    elif case == "counts of objects":
        _counts_file(job_dir, intersection=np.array([[1, None]], dtype=object))
    elif case == "negative counts":
        _counts_file(job_dir, union=-np.ones((3, len(CLASSES)), dtype=np.int64))
    elif case == "NaN counts":
        _counts_file(job_dir, union=np.full((3, len(CLASSES)), np.nan))
    elif case == "counts of the wrong shape":
        _counts_file(job_dir, intersection=np.ones((3, 2), dtype=np.int64), union=np.ones((3, 2), dtype=np.int64))
    else:
        raise AssertionError(case)


CRAFTED = {
    "infinite test mIoU": "metrics.json unreadable (test.test/mIoU must be finite, got inf)",
    "infinite history": "metrics.json unreadable (history[0].val/mIoU must be finite, got inf)",
    "deep JSON": "metrics.json unreadable (unreadable (nested too deep))",
    "class names a number": "metrics.json unreadable (classes.names must be a non-empty list of names, got 5)",
    "overrides not UTF-8": ".hydra/overrides.yaml unreadable (UnicodeDecodeError)",
    "overrides a number": ".hydra/overrides.yaml: expected a list of overrides, got int",
    "overrides a mapping": ".hydra/overrides.yaml: expected a list of overrides, got dict",
    "counts not an archive": "test_image_counts.npz unreadable",
    "counts of objects": "test_image_counts.npz unreadable (ValueError)",
    "negative counts": "test_image_counts.npz: union holds negative counts",
    "NaN counts": "test_image_counts.npz: union must be integer counts of shape [images, 4]",
    "counts of the wrong shape": "test_image_counts.npz: intersection must be integer counts of shape [images, 4]",
}


def test_segsweep_report_lists_crafted_job_files_with_the_reason(tmp_path):
    for seed in (1, 2):
        fake_job(tmp_path / f"seed={seed}", [f"seed={seed}"], 0.5 + 0.1 * seed, [0.5])
        _counts_file(tmp_path / f"seed={seed}")
    for number, case in enumerate(CRAFTED, start=3):
        fake_job(tmp_path / f"seed={number}", [f"seed={number}"], 0.5, [0.5])
        _craft(tmp_path / f"seed={number}", case)
    (tmp_path / "multirun.yaml").write_bytes(b"hydra: \xff\n")  # not UTF-8: the jobs that exist are reported

    result = run_module("segsweep.report", str(tmp_path), "--no-plots", timeout=120)
    text = (tmp_path / "report.md").read_text()
    for number, (case, reason) in enumerate(CRAFTED.items(), start=3):
        assert f"- `seed={number}`: {reason}" in text, (case, result.stdout[-3000:], result.stderr[-3000:])
    report = build_report(tmp_path, plots=False)
    (group,) = report.groups
    assert [job.name for job in group.finished] == ["seed=1", "seed=2"]


def test_segsweep_report_removes_the_temp_file_of_a_report_killed_mid_write(tmp_path):
    fake_job(tmp_path / "seed=1", ["seed=1"], 0.5, [0.5])
    orphan = tmp_path / ".curves.png.k1ll3d.tmp"
    orphan.write_bytes(b"half a png")
    run_module("segsweep.report", str(tmp_path), "--no-plots", timeout=120)
    assert not orphan.exists() and (tmp_path / "report.md").is_file()


def test_a_sweep_of_a_hundred_million_jobs_in_multirun_yaml_is_not_expanded(tmp_path):
    write_multirun_yaml(tmp_path, ["seed=range(0,100000000)", "debug=fast"])
    fake_job(tmp_path / "seed=0", ["seed=0"], 0.5, [0.5])
    started = time.monotonic()
    result = run_module("segsweep.report", str(tmp_path), "--no-plots", timeout=120)
    assert time.monotonic() - started < 60
    assert "sweeps more than 10000 jobs; those that never started are not listed" in result.stdout + result.stderr


# ---------------------------------------------------------------- jobs that never started


def write_multirun_yaml(sweep_dir: Path, task: list[str], sweeper: str = BASIC_SWEEPER) -> None:
    """The part of <sweep dir>/multirun.yaml that names the sweep's jobs, as Hydra writes it."""
    hydra = {
        "sweeper": {"_target_": sweeper, "max_batch_size": None, "params": {"seed": "1,2"}},
        "overrides": {"hydra": [], "task": task},
        "job": {"config": {"override_dirname": {"kv_sep": "=", "item_sep": ",", "exclude_keys": ["debug"]}}},
    }
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra, "seed": 42}))


def test_jobs_of_the_sweep_that_never_started_are_listed(tmp_path):
    write_multirun_yaml(tmp_path, ["loss=ce,dice", "debug=fast"])
    fake_job(tmp_path / "loss=ce,seed=1", ["seed=1", "loss=ce", "debug=fast"], 0.5, [0.5])
    fake_job(tmp_path / "loss=dice,seed=2", ["seed=2", "loss=dice", "debug=fast"], 0.6, [0.6])
    jobs = {job.name: job for job in find_jobs(tmp_path)}
    assert set(jobs) == {"loss=ce,seed=1", "loss=ce,seed=2", "loss=dice,seed=1", "loss=dice,seed=2"}
    assert jobs["loss=ce,seed=2"].error == "never started" and jobs["loss=ce,seed=2"].overrides["loss"] == "ce"
    assert jobs["loss=dice,seed=1"].error == "never started" and jobs["loss=ce,seed=1"].finished
    build_report(tmp_path, plots=False)
    assert "- `loss=dice,seed=1`: never started" in (tmp_path / "report.md").read_text()

    # an Optuna study's trials are not known in advance: nothing is expected of it
    write_multirun_yaml(tmp_path, ["loss=ce,dice"], sweeper="hydra_plugins.x.OptunaSweeper")
    assert {job.name for job in find_jobs(tmp_path)} == {"loss=ce,seed=1", "loss=dice,seed=2"}
    (tmp_path / "multirun.yaml").write_text("hydra: [")  # unreadable: the jobs that exist are still reported
    assert len(find_jobs(tmp_path)) == 2


def test_a_job_whose_records_hold_more_overrides_than_the_sweep_gave_is_not_missing(tmp_path):
    # the default launcher adds threads=<n> to every job; a dir named otherwise (here by job number) is still the job
    write_multirun_yaml(tmp_path, ["loss=ce", "debug=fast"])
    fake_job(tmp_path / "0", ["seed=1", "loss=ce", "debug=fast", "threads=1"], 0.5, [0.5])
    fake_job(tmp_path / "1", ["seed=2", "loss=ce", "debug=fast", "threads=1"], 0.6, [0.6])
    assert sorted(job.name for job in find_jobs(tmp_path)) == ["0", "1"]


# ---------------------------------------------------------------- failed Optuna trials


def job_return(status: JobStatus, value: object) -> JobReturn:
    return JobReturn(overrides=[], status=status, _return_value=value)


def test_a_trial_fails_when_its_job_raised_or_returned_no_number():
    assert trial_outcome(job_return(JobStatus.COMPLETED, 0.5), 1) == ([0.5], None)
    assert trial_outcome(job_return(JobStatus.COMPLETED, (0.5, 2)), 2) == ([0.5, 2.0], None)
    failures = {
        "returned nan": job_return(JobStatus.COMPLETED, math.nan),
        "returned None, not a number": job_return(JobStatus.COMPLETED, None),
        "RuntimeError: boom": job_return(JobStatus.FAILED, RuntimeError("boom")),
        "returned 1 values for 2 objectives": job_return(JobStatus.COMPLETED, [0.5]),
    }
    for reason, job in failures.items():
        values, why = trial_outcome(job, 2 if "objectives" in reason else 1)
        assert values is None and why == reason
    assert [allowed_failures(rate, 10) for rate in (0.0, 0.25, 0.3, 1.0)] == [0, 2, 3, 10]


def optuna_study(sweep: Path) -> list:
    import optuna

    return optuna.load_study(study_name="segsweep", storage=f"sqlite:///{sweep / 'optuna.db'}").trials


@pytest.mark.slow
def test_a_failed_trial_is_recorded_failed_and_the_study_goes_on(tmp_path):
    sweep = tmp_path / "optuna"
    # a negative learning rate makes the optimizer raise: about a quarter of this range fails
    run_module(
        "segsweep.train",
        "hparams_search=optuna",
        "optimizer.lr=interval(-0.01,0.03)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.5",
        *FAST,
        f"hydra.sweep.dir={sweep}",
    )
    trials = optuna_study(sweep)
    states = [trial.state.name for trial in trials]
    assert len(trials) == 4 and "FAIL" in states and states[states.index("FAIL") + 1 :].count("COMPLETE") >= 1, states
    for trial in trials:
        assert (trial.state.name == "FAIL") == (trial.params["optimizer.lr"] < 0)
        assert trial.value is None or math.isfinite(trial.value)
    failed = [job for job in job_dirs(sweep) if read_metrics(job)["status"] == "failed"]
    assert len(failed) == states.count("FAIL") and "Invalid learning rate" in read_metrics(failed[0])["error"]
    assert (sweep / "optimization_results.yaml").is_file()
    assert f"- `{failed[0].name}`: failed: ValueError: " in (sweep / "report.md").read_text()


@pytest.mark.slow
def test_a_study_whose_trials_all_fail_stops_past_max_failure_rate_with_one_line(tmp_path):
    sweep = tmp_path / "optuna"
    result = run_module(
        "segsweep.train",
        "hparams_search=optuna",
        "optimizer.lr=interval(-1.0,-0.5)",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.max_failure_rate=0.25",
        *FAST,
        f"hydra.sweep.dir={sweep}",
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Optuna study stopped: 2 of 2 trials failed, more than max_failure_rate=0.25 of n_trials=4 allows (1); "
        f"see {sweep}/report.md"
    )
    assert [trial.state.name for trial in optuna_study(sweep)] == ["FAIL", "FAIL"]  # none left RUNNING
    report = (sweep / "report.md").read_text()
    assert report.count(": failed: ValueError: optimizer.lr=-") == 2 and "Traceback" not in result.stderr


# ---------------------------------------------------------------- a killed worker, and finishing the sweep


def loky_workers(parent: int) -> list[int]:
    """PIDs of the joblib (loky) worker processes of ``parent``."""
    workers = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended meanwhile
        if ppid == parent and b"popen_loky_posix" in command:
            workers.append(int(stat.parent.name))
    return workers


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds the joblib workers through /proc")
def test_a_sweep_whose_worker_is_killed_reports_and_the_same_command_finishes_it(tmp_path):
    sweep = tmp_path / "joblib"
    command = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3,4", *FAST, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    process = subprocess.Popen(
        [sys.executable, "-m", "segsweep.train", *command],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        # kill a worker as soon as a job is running (as the OOM killer would): the sweep ends with TerminatedWorkerError.
        # Running: Hydra has written all of a job's records (a kill while it writes them: test_resume.py)
        running = "seed=*/.hydra/overrides.yaml"
        while not (list(sweep.glob(running)) and loky_workers(process.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(loky_workers(process.pid)[0], signal.SIGKILL)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and "TerminatedWorkerError" in output, output[-3000:]
    report = (sweep / "report.md").read_text()  # written at exit, for the jobs that finished
    completed = [job.name for job in find_jobs(sweep) if job.finished]
    assert len(completed) < 4 and "the same command with hydra.sweep.dir=" in output
    assert "## Failed or missing jobs" in report and "None: every job finished" not in report

    rerun = run_module("segsweep.train", *command)
    assert rerun.stdout.count("skipped, already completed") + rerun.stderr.count("skipped, already completed") == len(completed)
    jobs = find_jobs(sweep)
    errors = {job.name: (job.path / "metrics.json").read_text()[-1500:] for job in jobs if not job.finished}
    assert [job.name for job in jobs if job.finished] == [f"seed={seed}" for seed in (1, 2, 3, 4)], errors
    assert "None: every job finished." in (sweep / "report.md").read_text()
