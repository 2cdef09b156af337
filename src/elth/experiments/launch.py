"""Where an experiment's runs execute: here, in local worker processes, or as SLURM jobs (submitit).

A launcher takes `Task`s and hands back what each returned. Whatever executes a task calls
`run_task`, which takes the run's lease first (`lease.py`): a run that another worker holds comes
back as `Busy` and is not trained, so any number of runners, on one machine or on a cluster's
nodes, can work on one store and every run is trained once. The store is the only coordination:
launchers never talk to each other.

Launchers:
- `InlineLauncher`: one task at a time in this process (`--workers 1`).
- `PoolLauncher`: K spawned worker processes, each with its own torch threads and, with
  `devices`, its own GPU (worker i on `devices[i % len(devices)]`).
- `SubmititLauncher`: one job per task through submitit, on SLURM (`cluster="slurm"`) or as local
  subprocesses (`cluster="local"`, the same code path without a cluster).
"""
from __future__ import annotations

import _thread
import contextlib
import dataclasses
import multiprocessing
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Hashable
from contextlib import ExitStack
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import submitit
import torch

from elth.errors import ElthError, Terminated, raise_terminated
from elth.experiments.attempts import (
    clear_failure,
    clear_submitted,
    failure_text,
    first_line,
    record,
    write_failure,
    write_submitted,
)
from elth.experiments.lease import DEFAULT_TIMEOUT, Lease, LeaseInfo, holder
from elth.files import JOBS_DIR, alone, rank_alone
from elth.training import distributed
from elth.training.metrics import enable_tensorboard


class LaunchError(ElthError):
    """A launcher that cannot start (no submitit, no sbatch, a bad option)."""


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs its tasks (picklable: it travels with every task)."""

    threads: int | None = None  # torch threads (None: leave torch's default)
    lease_timeout: float = DEFAULT_TIMEOUT
    tensorboard: bool = False


@dataclass(frozen=True)
class Task:
    """One run to execute: `fn(ctx, *args)` under the lease of `directory`.

    `cached(ctx, *args)` returns the run's result when the store already holds it (else None); it
    is asked again once the lease is held, since another worker may have finished the run meanwhile.
    """

    key: Hashable
    label: str
    directory: str
    fn: Callable
    ctx: object
    args: tuple
    cached: Callable
    settings: WorkerSettings = field(default_factory=WorkerSettings)


@dataclass(frozen=True)
class Finished:
    result: object
    trained: bool  # False: the store held the result by the time the lease was taken


@dataclass(frozen=True)
class Failed:
    """The run failed in an expected way (an ElthError: bad settings, a diverged training): its message."""

    error: str


@dataclass(frozen=True)
class Busy:
    """Another live worker holds the run (or took it over from this one)."""

    holder: LeaseInfo | None


#: seconds a SLURM job may be gone from the queue before its result file shows (network file systems lag)
GONE_GRACE_S = 20.0

#: The GPU of this worker process (set by `PoolLauncher`'s initializer); None elsewhere.
_WORKER_DEVICE: str | None = None


def _worker_context(ctx):
    """`ctx` on this worker's own GPU when the pool gave it one and the run asked for CUDA."""
    if _WORKER_DEVICE is None or getattr(ctx, "device", None) not in (None, "cuda"):
        return ctx
    return dataclasses.replace(ctx, device=_WORKER_DEVICE)


def _apply(settings: WorkerSettings) -> None:
    if settings.threads:
        if torch.get_num_threads() != settings.threads:
            torch.set_num_threads(settings.threads)
    if settings.tensorboard:
        enable_tensorboard(True)


def run_task(task: "Task | GroupTask") -> "Finished | Busy | Failed | GroupOutcome":
    """Execute `task` under its run's lease (what every launcher runs, wherever it runs).

    An expected failure (ElthError) comes back as `Failed` with its message, so that it reads the
    same whichever launcher ran the task; anything else is raised, with its traceback. A
    `GroupTask` runs as `run_group_task`."""
    if isinstance(task, GroupTask):
        return run_group_task(task)
    _apply(task.settings)
    ctx = _worker_context(task.ctx)
    timeout = task.settings.lease_timeout
    lease = Lease.acquire(task.directory, label=task.label, timeout=timeout)
    clear_submitted(task.directory)  # the job has started (whether it works on the run or not)
    if lease is None:
        return Busy(holder(task.directory, timeout))
    with lease:
        return _run_leased(task, ctx, lease)


def _record_start(task: Task, lease: Lease, **fields) -> None:
    taken = {"took_over_from": lease.taken_over.where()} if lease.taken_over else {}
    record(task.directory, "start", label=task.label, **taken, **fields)


def _run_leased(task: Task, ctx, lease: Lease, started: float | None = None) -> Finished | Busy | Failed:
    """The run of `task` while this worker holds its lease: read back, or trained and recorded.
    `started`: the time its attempt started (recorded already, as a member of a fused group)."""
    timeout = task.settings.lease_timeout
    if threading.current_thread() is threading.main_thread():
        lease.on_lost = _thread.interrupt_main  # stop training a run that another worker now owns
    try:
        if started is None:
            found = task.cached(ctx, *task.args)
            if found is not None:
                return Finished(found, trained=False)
            _record_start(task, lease)
        start = time.time() if started is None else started
        try:
            result = _on_every_rank(task, ctx)
        except (SystemExit, KeyboardInterrupt) as e:
            if lease.lost and isinstance(e, KeyboardInterrupt):
                record(task.directory, "lost", seconds=time.time() - start)
                return Busy(holder(task.directory, timeout))
            _record_stop(task.directory, e, time.time() - start)
            raise
        except ElthError as e:
            write_failure(task.directory, str(e))
            record(task.directory, "fail", error=first_line(str(e)), seconds=time.time() - start)
            return Failed(str(e))
        except BaseException as e:
            text = failure_text(e)
            write_failure(task.directory, text)
            record(task.directory, "fail", error=first_line(text) or type(e).__name__, seconds=time.time() - start)
            raise
        clear_failure(task.directory)
        record(task.directory, "finish", seconds=time.time() - start)
        return Finished(result, trained=True)
    finally:
        lease.on_lost = None


# -- an experiment over several ranks (torchrun) -----------------------------------------------------
# Rank 0 runs the experiment alone (`files.alone`: its store checks, leases, records and reports
# are one process's) and hands each training to the other ranks, which run it with it (DDP, the
# collective writes of the training code); `follow_rank_zero` is what the other ranks do meanwhile.


def _perform(work: "Task | tuple[GroupTask, list]", ctx):
    """A task's training (`fn`), or a fused group's (`train` of its members' arguments)."""
    if isinstance(work, Task):
        return work.fn(ctx, *work.args)
    group, args = work
    return group.train(ctx, args)


def _record_stop(directory: str, e: BaseException, seconds: float) -> None:
    """The attempt of a run stopped by `e`: submitit ends a job it requeued (time limit, preemption)
    with SystemExit, not a failure (the lease is released by the caller, so the requeued job resumes
    the run from its checkpoints); Ctrl-C or SIGTERM is an interruption."""
    if isinstance(e, SystemExit):
        record(directory, "stop", error="job requeued", seconds=seconds)
    else:
        record(directory, "fail", error="interrupted", seconds=seconds)


def _on_every_rank(work: "Task | tuple[GroupTask, list]", ctx):
    """`_perform(work, ctx)`, on every rank when this is rank 0 of several ranks."""
    if not rank_alone():
        return _perform(work, ctx)
    distributed.hand_out(work)
    with alone(False):
        return _perform(work, ctx)


@contextlib.contextmanager
def leading_ranks():
    """Rank 0 of several ranks: the block works alone, handing trainings out; the other ranks are
    released at its end (also on an error). Elsewhere the block runs as it is."""
    if not distributed.is_active() or not distributed.is_main():
        yield
        return
    try:
        with alone():
            yield
    finally:
        distributed.hand_out(None)


def follow_rank_zero() -> None:
    """Every rank but 0: run the trainings rank 0 hands out, with it, until it says there are no more.
    A failure is rank 0's to report (it fails the same way: the ranks share every collective)."""
    while (work := distributed.receive_work()) is not None:
        task = work if isinstance(work, Task) else work[0].members[0]
        ctx = task.ctx
        if getattr(ctx, "device", None) and str(ctx.device).startswith("cuda"):
            ctx = dataclasses.replace(ctx, device=str(distributed.rank_device("cuda")))  # this rank's GPU
        _apply(task.settings)
        try:
            _perform(work, ctx)
        except Exception:
            pass


@dataclass(frozen=True)
class GroupTask:
    """Runs trained together as one fused group, then each run's own task.

    `train(ctx, [member args...])` trains what the members' tasks would train (writing it where
    they look for it) and returns how many trainings it did; each member's task then runs as it
    would alone and finds its training done. All members share `ctx`."""

    key: Hashable
    label: str
    members: tuple[Task, ...]
    train: Callable
    settings: WorkerSettings = field(default_factory=WorkerSettings)

    @property
    def directory(self) -> str:
        return self.members[0].directory

    @property
    def directories(self) -> tuple[str, ...]:
        return tuple(m.directory for m in self.members)


@dataclass(frozen=True)
class GroupOutcome:
    """What a group task did: per member what its task returned, or its error text; how many
    members trained in the fused group; why the group failed (its members then ran one by one)."""

    members: tuple[tuple["Finished | Busy | Failed | None", "str | None"], ...]
    fused: int
    error: str | None = None


def run_group_task(group: GroupTask) -> GroupOutcome:
    """Take the leases of the group's runs (a run another worker holds is left to it), train those
    not yet finished as one fused group, then run each member's own task under its lease (finding
    its training done; after a failed group, training it alone)."""
    _apply(group.settings)
    ctx = _worker_context(group.members[0].ctx)
    timeout = group.settings.lease_timeout
    outcomes: list = [None] * len(group.members)
    with ExitStack() as held_leases:
        held: list[tuple[int, Task, Lease]] = []
        for i, member in enumerate(group.members):
            lease = Lease.acquire(member.directory, label=member.label, timeout=timeout)
            clear_submitted(member.directory)
            if lease is None:
                outcomes[i] = (Busy(holder(member.directory, timeout)), None)
                continue
            held_leases.enter_context(lease)
            found = member.cached(ctx, *member.args)
            if found is not None:
                outcomes[i] = (Finished(found, trained=False), None)
                continue
            held.append((i, member, lease))
        fused, error = 0, None
        started = time.time()
        for _, member, lease in held:  # each member's attempt starts with the group
            _record_start(member, lease, fused_group=group.label)
        if len(held) > 1:
            try:
                _on_every_rank((group, [m.args for _, m, _ in held]), ctx)
                fused = len(held)
            except (SystemExit, KeyboardInterrupt) as e:
                for _, member, lease in held:
                    if lease.lost:
                        record(member.directory, "lost", seconds=time.time() - started)
                    else:
                        _record_stop(member.directory, e, time.time() - started)
                raise
            except BaseException as e:  # the members train one by one below, each reporting its own errors
                error = failure_text(e)
        for i, member, lease in held:
            if lease.lost:
                record(member.directory, "lost", seconds=time.time() - started)
                outcomes[i] = (Busy(holder(member.directory, timeout)), None)
                continue
            try:
                outcomes[i] = (_run_leased(member, ctx, lease, started=started), None)
            except (SystemExit, KeyboardInterrupt):
                raise
            except Exception as e:
                outcomes[i] = (None, failure_text(e))
    return GroupOutcome(tuple(outcomes), fused, error)


#: (task, what run_task returned or None, error text or None)
Completion = tuple[Task, "Finished | Busy | Failed | None", "str | None"]


class InlineLauncher:
    """Tasks run one at a time in this process, as they are submitted."""

    name = "local"

    def __init__(self):
        self.slots = 1
        self._done: list[Completion] = []

    def submit(self, task: Task) -> None:
        try:
            self._done.append((task, run_task(task), None))
        except Exception as e:  # reported and counted by the runner; the other runs go on
            self._done.append((task, None, failure_text(e)))

    def in_flight(self) -> int:
        return 0

    def wait(self, timeout: float) -> list[Completion]:
        done, self._done = self._done, []
        if not done and timeout > 0:
            time.sleep(timeout)
        return done

    def running(self) -> list[str]:
        return []

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _init_worker(threads: int, devices, parent: int | None = None) -> None:
    global _WORKER_DEVICE
    # SIGTERM (the parent stopping its workers, scancel, a container stopping) unwinds the run like
    # Ctrl-C: its attempt recorded as interrupted, its lease released; a second one does not cut that short.
    signal.signal(signal.SIGTERM, _stop_worker)
    if parent is not None:
        _end_with(parent)
    torch.set_num_threads(threads)
    if devices is not None:
        _WORKER_DEVICE = devices.get()


#: Seconds between a worker's looks at whether the process that started it is still there.
PARENT_CHECK_S = 1.0
#: Seconds a worker whose parent died has to unwind its run (then it exits regardless).
ORPHAN_GRACE_S = 30.0


#: Set while a pool worker runs a task (the watcher of an orphaned worker waits for it to unwind).
_in_task = threading.Event()


def _pool_task(task):
    """`run_task` in a pool worker, marked as running."""
    _in_task.set()
    try:
        return run_task(task)
    finally:
        _in_task.clear()


def _end_with(parent: int) -> None:
    """Stop this worker when `parent` dies, however it died (SIGKILL, a crash): a watcher thread sees
    the worker adopted by another process, stops its run as SIGTERM would (attempt recorded, lease
    released) and ends the process once the run has unwound (or after ORPHAN_GRACE_S regardless)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while _in_task.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        os._exit(1)

    threading.Thread(target=watch, name="elth-parent-watch", daemon=True).start()


def _stop_worker(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise_terminated(signum, frame)


def worker_devices(workers: int, devices: list[str]) -> list[str]:
    """The GPU of each of `workers` workers: round robin over `devices` (several workers may share one)."""
    return [devices[i % len(devices)] for i in range(workers)]


class PoolLauncher(InlineLauncher):
    """K spawned worker processes (no state leaks in), each with `threads` torch threads and,
    with `devices`, a GPU of its own (worker i on devices[i % len(devices)])."""

    def __init__(self, workers: int, threads: int, devices: list[str] | None = None):
        super().__init__()
        self.slots = workers
        context = get_context("spawn")
        queue = None
        if devices:
            queue = context.Queue()
            for d in worker_devices(workers, devices):
                queue.put(d)
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                         initargs=(threads, queue, os.getpid()))
        self._futures: dict[Future, Task] = {}

    def submit(self, task: Task) -> None:
        self._futures[self._pool.submit(_pool_task, task)] = task

    def in_flight(self) -> int:
        return len(self._futures)

    def wait(self, timeout: float) -> list[Completion]:
        if not self._futures:
            time.sleep(timeout)
            return []
        done, _ = wait(list(self._futures), timeout=timeout, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            task = self._futures.pop(fut)
            exc = fut.exception()
            if exc is not None:
                out.append((task, None, failure_text(exc)))
            else:
                out.append((task, fut.result(), None))
        return out

    def running(self) -> list[str]:
        return [t.label for f, t in self._futures.items() if f.running()]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __exit__(self, exc_type, exc, tb):
        if isinstance(exc, Terminated):
            # This process was stopped (SIGTERM to it alone): its workers stop their runs too rather
            # than finish them first. (Ctrl-C in a terminal reaches every worker by itself.)
            for worker in multiprocessing.active_children():
                worker.terminate()
        self.close()


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
        for directory in _directories(task):
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
                    for directory in _directories(task):
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
            for directory in _directories(task):
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



def _directories(task) -> tuple[str, ...]:
    return getattr(task, "directories", (task.directory,))


def _have(program: str) -> bool:
    return shutil.which(program) is not None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
