"""Where an experiment's runs execute: here, in local worker processes, or as SLURM jobs.

`LaunchOptions` (what `elth experiment` was told: launcher, workers, devices, SLURM options) and
`make_launcher`, which builds the launcher they describe: `local_launchers.InlineLauncher` or
`local_launchers.PoolLauncher`, or `slurm_launcher.SubmititLauncher`. Every launcher hands its tasks to
`leased.run_task`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from elth.experiments.leased import LaunchError
from elth.experiments.local_launchers import InlineLauncher, PoolLauncher
from elth.experiments.slurm_launcher import SlurmOptions, SubmititLauncher
from elth.files import JOBS_DIR


LAUNCHERS = ("local", "slurm", "submitit-local")


@dataclass(frozen=True)
class LaunchOptions:
    """Where an experiment's runs execute.

    `local`: here (`workers` 1) or in `workers` spawned processes, each with `threads` torch
    threads (default: the cores shared out) and, with `devices`, its own GPU. `slurm`: one SLURM
    job per run (`slurm` says what each asks for), at most `max_parallel` queued or running at
    once. `submitit-local`: the same jobs as local subprocesses (no cluster needed).
    """

    launcher: str = "local"
    workers: int = 1
    threads: int | None = None
    devices: tuple[str, ...] = ()
    slurm: SlurmOptions = field(default_factory=SlurmOptions)
    max_parallel: int = 64

    def check_for_ranks(self) -> None:
        """Several ranks (torchrun, --nproc) train every run together: options that train runs side
        by side in other processes do not combine with them."""
        flags = [flag for flag, on in (("--workers", self.workers > 1), ("--devices", bool(self.devices)),
                                       ("--launcher slurm", self.launcher != "local")) if on]
        if flags:
            raise LaunchError(f"{' and '.join(flags)} run trainings side by side in other processes; with several "
                              "ranks (--nproc, torchrun) every training uses all of them: use one or the other")

    def check(self) -> None:
        if self.launcher not in LAUNCHERS:
            raise LaunchError(f"unknown launcher {self.launcher!r} (choose from {', '.join(LAUNCHERS)})")
        if self.workers < 1:
            raise LaunchError(f"--workers must be at least 1, got {self.workers}")
        if self.threads is not None and self.threads < 1:
            raise LaunchError(f"--threads must be at least 1, got {self.threads}")
        if self.max_parallel < 1:
            raise LaunchError(f"--max-parallel must be at least 1, got {self.max_parallel}")
        if self.slurm.cpus_per_run < 1 or self.slurm.gpus_per_run < 0:
            raise LaunchError("--cpus-per-run must be at least 1 and --gpus-per-run at least 0")
        if self.slurm.gpus_per_run > 1:
            raise LaunchError(
                "--gpus-per-run is 0 or 1: a job trains its run (or fused group) on one GPU; the SLURM "
                "launcher does not start several ranks in a job (run a single command over several GPUs "
                "with torchrun instead)"
            )
        if self.devices and self.launcher != "local":
            raise LaunchError("--devices spreads local workers over GPUs; SLURM jobs get theirs with --gpus-per-run")

    def worker_threads(self) -> int | None:
        """Torch threads of each worker (None: torch's default, for runs in this process)."""
        if self.launcher == "local":
            if self.workers == 1:
                return self.threads
            return self.threads or max(1, (os.cpu_count() or 1) // self.workers)
        return self.threads or self.slurm.cpus_per_run

    def describe(self) -> str:
        if self.launcher == "local":
            if self.workers == 1:
                return "runs in this process"
            gpus = f" on {', '.join(self.devices)}" if self.devices else ""
            return f"{self.workers} worker processes x {self.worker_threads()} threads{gpus}"
        where = "SLURM jobs" if self.launcher == "slurm" else "local submitit jobs"
        gpus = f", {self.slurm.gpus_per_run} GPU(s)" if self.slurm.gpus_per_run else ""
        part = f" on partition {self.slurm.partition}" if self.slurm.partition else ""
        return (f"one {where.rstrip('s')} per run{part} ({self.slurm.cpus_per_run} CPU(s){gpus}, "
                f"{self.slurm.time_min} min), at most {self.max_parallel} at once")


def make_launcher(options: LaunchOptions, out_dir: str | os.PathLike):
    """The launcher `options` describe; submitit keeps its job files under OUT/jobs/."""
    options.check()
    if options.launcher == "local":
        if options.workers == 1:
            return InlineLauncher()
        return PoolLauncher(options.workers, options.worker_threads(), list(options.devices) or None)
    cluster = "slurm" if options.launcher == "slurm" else "local"
    return SubmititLauncher(Path(out_dir) / JOBS_DIR, cluster=cluster, options=options.slurm,
                            max_parallel=options.max_parallel)
