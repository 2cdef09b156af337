"""Launchers on this machine: `InlineLauncher` (one task at a time in this process, `--workers 1`)
and `PoolLauncher` (K spawned worker processes, each with its own torch threads and, with
`devices`, its own GPU: worker i on `devices[i % len(devices)]`). Workers stop their run on SIGTERM
and when the process that started them dies, however it died."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from multiprocessing import get_context

import torch

from elth.errors import Terminated, raise_terminated
from elth.experiments.attempts import (
    failure_text,
)


from elth.experiments.leased import Completion, Task, run_task, set_worker_device


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
    # SIGTERM (the parent stopping its workers, scancel, a container stopping) unwinds the run like
    # Ctrl-C: its attempt recorded as interrupted, its lease released; a second one does not cut that short.
    signal.signal(signal.SIGTERM, _stop_worker)
    if parent is not None:
        _end_with(parent)
    torch.set_num_threads(threads)
    if devices is not None:
        set_worker_device(devices.get())


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
