"""SLURM through submitit: `SubmititLauncher` (one job per task, on SLURM with `cluster="slurm"` or
as local subprocesses with `cluster="local"`, the same code path without a cluster), the options a
job asks for (`SlurmOptions`, `parse_time`, `parse_slurm_args`), the check that SLURM would take
them before anything is submitted (`check_request`) and the jobs' states (`slurm_job_states`)."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import submitit

from elth.experiments.attempts import clear_submitted, write_failure, write_submitted
from elth.experiments.leased import Completion, LaunchError, Task, run_task, task_directories


#: seconds a SLURM job may be gone from the queue before its result file shows (network file systems lag)
GONE_GRACE_S = 20.0

@dataclass(frozen=True)
class SlurmOptions:
    """What each run's SLURM job asks for."""

    partition: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    time_min: int = 24 * 60
    extra: tuple[tuple[str, str], ...] = ()  # further sbatch options, e.g. (("qos", "high"),)

    def sbatch_options(self) -> list[str]:
        """The options submitit gives sbatch for these settings (to check them with `--test-only`)."""
        out = [f"--time={self.time_min}", f"--cpus-per-task={self.cpus_per_run}", "--ntasks-per-node=1", "--nodes=1"]
        if self.gpus_per_run:
            out.append(f"--gpus-per-node={self.gpus_per_run}")
        if self.partition:
            out.append(f"--partition={self.partition}")
        out += [f"--{key.replace('_', '-')}={value}" for key, value in self.extra]
        return out

    def submitit_parameters(self) -> dict:
        params: dict = {"timeout_min": self.time_min, "cpus_per_task": self.cpus_per_run, "tasks_per_node": 1,
                        "nodes": 1, "name": "elth"}
        if self.gpus_per_run:
            params["gpus_per_node"] = self.gpus_per_run
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.extra:
            params["slurm_additional_parameters"] = dict(self.extra)
        return params


def parse_time(text: str) -> int:
    """SLURM's time formats (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`, `D-HH:MM:SS`) in whole minutes."""
    try:
        days = 0
        rest = text
        if "-" in text:
            d, rest = text.split("-", 1)
            days = int(d)
            parts = [int(p) for p in rest.split(":")]
            h, m, s = (parts + [0, 0])[:3]
        else:
            parts = [int(p) for p in rest.split(":")]
            if len(parts) == 1:
                h, m, s = 0, parts[0], 0
            elif len(parts) == 2:
                h, m, s = 0, parts[0], parts[1]
            elif len(parts) == 3:
                h, m, s = parts
            else:
                raise ValueError
    except ValueError:
        raise LaunchError(f"--time {text!r}: expected minutes, HH:MM:SS or D-HH:MM:SS") from None
    minutes = days * 1440 + h * 60 + m + (1 if s else 0)
    if minutes <= 0:
        raise LaunchError(f"--time {text!r}: must be positive")
    return minutes


def parse_slurm_args(items: list[str]) -> tuple[tuple[str, str], ...]:
    """`--slurm-arg K=V` items (K as sbatch spells it without the dashes: qos=high, account=abc)."""
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise LaunchError(f"--slurm-arg {item!r}: expected KEY=VALUE, e.g. qos=high")
        out.append((key.replace("-", "_"), value))
    return tuple(out)


class _RunTaskJob(submitit.helpers.Checkpointable):
    """`run_task` as a submitit job that SLURM requeues when it reaches its time limit or is
    preempted (submitit signals it 90 s before): the requeued job resumes the run from its checkpoints."""

    def __call__(self, task):
        return run_task(task)


class SubmititLauncher:
    """One job per task through submitit: SLURM jobs (`cluster="slurm"`) or local subprocesses
    (`cluster="local"`). At most `max_parallel` jobs are queued or running at once."""

    def __init__(self, folder: str | os.PathLike, cluster: str = "slurm", options: SlurmOptions | None = None,
                 max_parallel: int = 64):
        if cluster == "slurm" and not _have("sbatch"):
            raise LaunchError("--launcher slurm: no sbatch on this machine (run from a SLURM login node)")
        self.name = cluster if cluster == "slurm" else "submitit-local"
        self.cluster = cluster
        self.slots = max_parallel
        self.folder = Path(folder)
        self.options = options or SlurmOptions()
        if cluster == "slurm":
            check_request(self.options)
        self._executor = submitit.AutoExecutor(folder=self.folder / "%j", cluster=cluster)
        params = self.options.submitit_parameters()
        if cluster != "slurm":
            params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
        self._executor.update_parameters(**params)
        self._jobs: dict[object, Task] = {}
        self._gone_since: dict[str, float] = {}
        self._states: dict[str, tuple[str, str]] = {}
        self._states_read = 0.0

    def submit(self, task: Task) -> None:
        self._executor.update_parameters(name=f"elth:{task.label}"[:100])
        before = set(self.folder.iterdir()) if self.folder.is_dir() else set()
        try:
            job = self._executor.submit(_RunTaskJob(), task)
        except Exception as e:  # submitit's FailedJobError (sbatch's own message) and what led to it
            for path in set(self.folder.iterdir()) - before if self.folder.is_dir() else ():
                if path.is_file() or path.is_symlink():
                    path.unlink()  # the submission script and pickle of a job that does not exist
            raise LaunchError(f"SLURM refused the job for {task.label}: {_slurm_message(e)}") from None
        # submitit leaves a link to each job's script beside the job folders: the folder has the script.
        for path in set(self.folder.iterdir()) - before:
            if path.name.startswith(".submission_file_") and path.is_symlink():
                path.unlink()
        self._jobs[job] = task
        for directory in task_directories(task):
            write_submitted(directory, str(job.job_id), self.name)

    def in_flight(self) -> int:
        return len(self._jobs)

    def _queued_ids(self) -> set[str] | None:
        """Job ids SLURM still knows about (pending, running, completing), or None if squeue fails."""
        if self.cluster != "slurm":
            return None
        ids = ",".join(str(j.job_id) for j in self._jobs)
        if not ids:
            return set()
        try:
            out = subprocess.run(["squeue", "-h", "-o", "%i", "-j", ids], capture_output=True, text=True,
                                 timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if out.returncode != 0 and "Invalid job id" not in out.stderr:
            return None
        return set(out.stdout.split())

    def wait(self, timeout: float) -> list[Completion]:
        deadline = time.time() + timeout
        while True:
            out = self._collect()
            if out or time.time() >= deadline:
                return out
            time.sleep(min(1.0, max(0.0, deadline - time.time())))

    def _has_result(self, job) -> bool:
        if self.cluster != "slurm":
            return job.done()
        # Read the result file, not SLURM's accounting (which a small cluster may not keep):
        # touching the folder first refreshes a network file system's view of it.
        folder = job.paths.folder
        try:
            folder.chmod(folder.stat().st_mode)
        except OSError:
            pass
        return job.paths.result_pickle.exists()

    def _collect(self) -> list[Completion]:
        out: list[Completion] = []
        queued = None
        for job, task in list(self._jobs.items()):
            if not self._has_result(job):
                if queued is None:
                    queued = self._queued_ids()
                if queued is None or str(job.job_id) in queued:
                    continue
                # Gone from the queue without a result file: give the file system a moment, then
                # call it a failure (killed at its time limit, out of memory, node failure).
                first = self._gone_since.setdefault(str(job.job_id), time.time())
                if time.time() - first < GONE_GRACE_S:
                    continue
                if not job.paths.result_pickle.exists():
                    del self._jobs[job]
                    error = (f"SLURM job {job.job_id} ended without a result (cancelled, out of time or memory, or "
                             f"its node failed); the end of its log ({job.paths.stderr}):\n{_tail(job.paths.stderr)}")
                    for directory in task_directories(task):
                        clear_submitted(directory)
                        write_failure(directory, error)  # `--status` shows the run failed, with the reason
                    out.append((task, None, error))
                    continue
            del self._jobs[job]
            try:
                out.append((task, job.result(), None))
            except Exception as e:  # the job's exception, with the job's traceback in its text
                out.append((task, None, f"{e}\n(job {job.job_id}; log {job.paths.stderr})"))
        return out

    def running(self) -> list[str]:
        """The labels of the jobs in flight; on SLURM, those still pending with SLURM's reason."""
        if self.cluster != "slurm":
            return [t.label for t in self._jobs.values()]
        now = time.time()
        if now - self._states_read >= STATES_EVERY_S:
            self._states = slurm_job_states([str(j.job_id) for j in self._jobs]) or {}
            self._states_read = now
        out = []
        for job, task in self._jobs.items():
            state, reason = self._states.get(str(job.job_id), ("", ""))
            out.append(f"{task.label} (SLURM job {job.job_id} pending: {reason})" if state == "PENDING" else task.label)
        return out

    def close(self) -> None:
        for job, task in list(self._jobs.items()):
            try:
                job.cancel(check=False)
            except Exception:
                pass
            for directory in task_directories(task):
                clear_submitted(directory)
        self._jobs.clear()
        try:  # submitit leaves an empty folder named by its placeholder "%j"
            (self.folder / "%j").rmdir()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: Seconds between two questions to SLURM about the state of the jobs in flight (progress lines).
STATES_EVERY_S = 30.0


def slurm_job_states(job_ids: list[str]) -> dict[str, tuple[str, str]] | None:
    """job id -> (state, reason) for the jobs SLURM still knows (PENDING with its reason: Resources,
    Priority, ...), or None when squeue cannot tell."""
    if not job_ids:
        return {}
    try:
        out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r", "-j", ",".join(job_ids)], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return None
    states = {}
    for line in out.stdout.splitlines():
        job, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        states[job.strip()] = (state.strip(), reason.strip())
    return states


#: Seconds `sbatch --test-only` may take (with no controller to answer, sbatch gives up after ~20 s).
SBATCH_CHECK_TIMEOUT_S = 60


def check_request(options: SlurmOptions) -> None:
    """Ask SLURM (`sbatch --test-only`, nothing is submitted) whether it would accept a job with these
    options: a partition it lacks, an option sbatch does not know, more CPUs, memory or GPUs than a
    node has, or no controller to answer are one error, before any run is submitted."""
    command = ["sbatch", "--test-only", "--job-name=elth-check", *options.sbatch_options(), "--wrap=true"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=SBATCH_CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"--launcher slurm: SLURM's controller did not answer within {SBATCH_CHECK_TIMEOUT_S} s "
                          "(sbatch --test-only)") from None
    except OSError as e:
        raise LaunchError(f"--launcher slurm: cannot run sbatch ({e.strerror})") from None
    if out.returncode != 0:
        said = _slurm_message(out.stderr)
        if "Unable to contact slurm controller" in said:
            raise LaunchError(f"--launcher slurm: SLURM's controller does not answer ({said}); is slurmctld running, "
                              "and does this machine's slurm.conf name its host?")
        raise LaunchError(f"--launcher slurm: SLURM would refuse these jobs ({' '.join(options.sbatch_options())}): "
                          f"{said}")


def _slurm_message(error: object) -> str:
    """SLURM's own words in an sbatch failure (its error lines, joined), without Python's."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    said = [line for line in lines if line.startswith(("sbatch:", "allocation failure", "srun:"))] or lines[-1:]
    text = "; ".join(dict.fromkeys(line.removeprefix("sbatch: ").removeprefix("error: ") for line in said))
    return text or "sbatch failed without a message"


def _have(program: str) -> bool:
    return shutil.which(program) is not None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
