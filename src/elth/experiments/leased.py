"""Executing one run, wherever it executes: under its run's lease, recorded in its directory.

A launcher takes `Task`s and hands back what each returned. Whatever executes a task calls
`run_task`, which takes the run's lease first (`lease.py`): a run that another worker holds comes
back as `Busy` and is not trained, so any number of runners, on one machine or on a cluster's
nodes, can work on one store and every run is trained once. The store is the only coordination:
launchers never talk to each other. A `GroupTask` is several runs trained as one fused group.
"""
from __future__ import annotations

import _thread
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Hashable
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch

from elth.errors import ElthError
from elth.experiments.attempts import (
    clear_failure,
    clear_submitted,
    failure_text,
    first_line,
    record,
    write_failure,
)
from elth.experiments.lease import DEFAULT_TIMEOUT, Lease, LeaseInfo, holder
from elth.files import alone, rank_alone
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


#: The GPU of this worker process (set by `PoolLauncher`'s initializer); None elsewhere.
_WORKER_DEVICE: str | None = None


def set_worker_device(device: str | None) -> None:
    """This worker process's own GPU (a pool worker's initializer sets it)."""
    global _WORKER_DEVICE
    _WORKER_DEVICE = device


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
    """What the scheduler hands a worker: one or more runs' tasks (a lone run is a group of one).
    Several are first trained together as one fused group, then each run's own task runs.

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
        in_group = {"fused_group": group.label} if len(group.members) > 1 else {}  # else a lone run
        for _, member, lease in held:  # each member's attempt starts with the group
            _record_start(member, lease, **in_group)
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


def task_directories(task) -> tuple[str, ...]:
    return getattr(task, "directories", (task.directory,))


#: (task, what run_task returned or None, error text or None)
Completion = tuple[Task, "Finished | Busy | Failed | None", "str | None"]
