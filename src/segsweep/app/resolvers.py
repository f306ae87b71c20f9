"""The OmegaConf resolvers that conf/ uses, registered in one place; each is implemented where its concept lives.

=====================  ==========================================  ====================================================
resolver               in                                          implemented in
=====================  ==========================================  ====================================================
run_dir                hydra.run.dir                               app/rundir.py: a training run dir given as ckpt_path
                                                                   is continued in place, anything else gets a new dir
run_suffix             hydra.run.dir                               app/naming.py: a new run's name, by its overrides
job_dirname            hydra.sweep.subdir                          app/naming.py: a sweep job's name, by its overrides
hydra_records          hydra.output_subdir                         app/rundir.py: .hydra for a run dir's first command,
                                                                   .hydra/resumes/<time> for every later one
dir_name               conf/logger's run names                     app/naming.py: a run directory's own name
tracking_experiment    conf/logger/mlflow.yaml's experiment_name   app/tracking.py: a sweep is one MLflow experiment
deterministic_default  trainer.deterministic                       here: True on CPU, "warn" on GPU
cudnn_benchmark        trainer.benchmark                           here: cuDNN's autotuner where determinism is off
=====================  ==========================================  ====================================================
"""

from __future__ import annotations

from omegaconf import OmegaConf

from segsweep.app.naming import dir_name, job_dirname, run_suffix
from segsweep.app.rundir import hydra_records, run_dir
from segsweep.app.tracking import experiment_name


def deterministic_default() -> bool | str:
    """True on CPU (bit-identical reruns); 'warn' on GPU, where some kernels (CE's 2-D NLL) have no deterministic version."""
    from segsweep import machine  # here: a multirun's launching process composes its jobs' configs without torch

    return "warn" if machine.cuda_available() else True


def cudnn_benchmark(deterministic: bool | str | None) -> bool:
    """cuDNN's autotuner (``torch.backends.cudnn.benchmark``) on where the trainer's determinism is off: it times the
    convolution algorithms for each new input shape and keeps the fastest, which may differ between runs."""
    return deterministic is None or deterministic is False


def register_resolvers() -> None:
    """Our OmegaConf resolvers; every entry point calls this before Hydra composes its config."""
    resolvers = {
        "job_dirname": job_dirname,
        "run_suffix": run_suffix,
        "run_dir": run_dir,
        "deterministic_default": deterministic_default,
        "cudnn_benchmark": cudnn_benchmark,
        "dir_name": dir_name,
        "tracking_experiment": experiment_name,
    }
    for name, resolver in resolvers.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("hydra_records"):
        # cached: Hydra reads hydra.output_subdir twice and both reads must name the same directory
        OmegaConf.register_new_resolver("hydra_records", hydra_records, use_cache=True)
