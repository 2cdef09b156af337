"""A lease per run directory: at most one worker trains a run, and a dead worker's run is taken over.

Workers coordinate through the store alone (a local directory or a shared file system seen by
every node of a cluster), so a lease is a file in the run's directory. Leases are numbered:
`lease.<n>.json`, the highest number being the current one. A worker takes a run by creating the
next number with an exclusive create (write a private file, then `os.link` it to the new name:
the link fails when the name exists, on a local disk as on NFS), so of any number of workers that
try at once exactly one gets it. The holder rewrites its file every `heartbeat` seconds; a lease
whose heartbeat is older than `timeout` seconds (its worker was killed, its node died) is stale and
the next worker takes the run over by creating the following number; so is, at once, a lease whose
holder ran in this process space (this host and pid namespace) and no longer exists (a killed
command run again resumes without waiting). A holder that finds a higher
number than its own has lost the lease (it was presumed dead) and must stop. Releasing marks the
file released; the number is never reused, so a late heartbeat of a presumed-dead worker never
touches its successor's lease.

Heartbeats are wall-clock times: the hosts sharing a store must agree on the time to well within
`timeout` (NTP does).
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from elth.files import LEASE_FILE, LEASE_FILE_PATTERN, process_alive, process_space_tag

#: Seconds without a heartbeat after which a lease is presumed dead and its run is taken over.
DEFAULT_TIMEOUT = 120.0
_NAME = re.compile(LEASE_FILE_PATTERN)


@dataclass(frozen=True)
class LeaseInfo:
    """What a lease file records: who holds the run, where, since when, and its last sign of life."""

    owner: str  # a fresh token per acquisition
    host: str
    pid: int
    started: float  # wall-clock seconds
    heartbeat: float
    label: str = ""
    slurm_job: str = ""
    released: bool = False
    extra: dict = field(default_factory=dict)
    #: `files.process_space_tag()` of the holder ("" in leases written before it was recorded)
    space: str = ""

    def age(self, now: float | None = None) -> float:
        """Seconds since the last heartbeat."""
        return (time.time() if now is None else now) - self.heartbeat

    def live(self, timeout: float, now: float | None = None) -> bool:
        """Whether this lease still holds its run: not released, a heartbeat within `timeout` seconds,
        and, when its holder ran in this process space (this host; on Linux also this pid
        namespace: a container's processes cannot be seen from another), that process still exists."""
        if self.released or self.age(now) > timeout:
            return False
        here = self.space == process_space_tag() if self.space else self.host == socket.gethostname()
        return not here or process_alive(self.pid)

    def where(self) -> str:
        job = f", SLURM job {self.slurm_job}" if self.slurm_job else ""
        return f"{self.host} (pid {self.pid}{job})"


class LeaseLost(RuntimeError):
    """The lease was taken over by another worker (this one was presumed dead)."""


def _number(path: Path) -> int:
    m = _NAME.fullmatch(path.name)
    return int(m.group(1)) if m else -1


def _lease_files(directory: Path) -> list[Path]:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted((directory / n for n in names if _NAME.fullmatch(n)), key=_number)


_FIELDS = {f.name for f in fields(LeaseInfo)}


def _read(path: Path) -> LeaseInfo | None:
    try:
        record = json.loads(path.read_text())
        # Fields a later version may add are left out, so that versions sharing a store read each other.
        return LeaseInfo(**{k: v for k, v in record.items() if k in _FIELDS})
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # removed meanwhile, or being replaced


def current(directory: str | os.PathLike) -> tuple[int, LeaseInfo | None]:
    """(number, record) of the run's current lease; (-1, None) when it never had one."""
    files = _lease_files(Path(directory))
    for path in reversed(files):
        info = _read(path)
        if info is not None:
            return _number(path), info
    return (_number(files[-1]), None) if files else (-1, None)


def holder(directory: str | os.PathLike, timeout: float = DEFAULT_TIMEOUT) -> LeaseInfo | None:
    """The live holder of the run, if any (a released or stale lease has none)."""
    _, info = current(directory)
    if info is None or not info.live(timeout):
        return None
    return info


def _private_copy(path: Path, info: LeaseInfo) -> Path:
    """`info` written to a file beside `path` that only this holder (its owner token) writes."""
    tmp = path.with_name(f".{path.name}.{info.owner}.tmp")
    tmp.write_text(json.dumps(asdict(info)))
    return tmp


def _write_atomic(path: Path, info: LeaseInfo) -> None:
    os.replace(_private_copy(path, info), path)


def _link_new(path: Path, info: LeaseInfo) -> bool:
    """Create `path` holding `info` if no file of that name exists; False when one does."""
    tmp = _private_copy(path, info)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


class Lease:
    """The right to work on one run, kept alive by a heartbeat thread while held.

    Use `Lease.acquire(directory, ...)`, which returns None when another live worker holds the run,
    then `with lease:` around the work (the heartbeat runs inside, the lease is released after).
    """

    def __init__(self, directory: Path, number: int, info: LeaseInfo, timeout: float, heartbeat: float):
        self.directory, self.number, self.info = directory, number, info
        self.timeout, self.interval = timeout, heartbeat
        #: called (from the heartbeat thread) when the lease is found taken over
        self.on_lost: Callable[[], None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False
        self.taken_over: LeaseInfo | None = None  # the stale lease this one replaced

    @property
    def path(self) -> Path:
        return self.directory / LEASE_FILE.format(number=self.number)

    @classmethod
    def acquire(cls, directory: str | os.PathLike, *, label: str = "", timeout: float = DEFAULT_TIMEOUT,
                heartbeat: float | None = None) -> Lease | None:
        """Take the run in `directory` unless a live worker holds it (then None)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        interval = heartbeat if heartbeat is not None else default_heartbeat(timeout)
        unreadable_since: float | None = None
        while True:
            number, info = current(directory)
            if info is not None and info.live(timeout):
                return None
            if info is None and number >= 0:
                # No lease file is readable: one is being replaced right now (writes are atomic),
                # so look again; one that stays unreadable for a whole timeout is treated as stale.
                unreadable_since = unreadable_since or time.time()
                if time.time() - unreadable_since < min(timeout, 5.0):
                    time.sleep(0.05)
                    continue
            now = time.time()
            mine = LeaseInfo(owner=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), started=now,
                             heartbeat=now, label=label, slurm_job=_slurm_job(), space=process_space_tag())
            lease = cls(directory, number + 1, mine, timeout, interval)
            if _link_new(lease.path, mine):
                if info is not None and not info.released:
                    lease.taken_over = info
                for old in _lease_files(directory):
                    if _number(old) < lease.number:
                        old.unlink(missing_ok=True)
                return lease
            # Another worker created that number first: look at its lease.

    def beat(self) -> None:
        """Record a sign of life; raises LeaseLost when a successor took the run over."""
        newest = _lease_files(self.directory)
        if newest and _number(newest[-1]) > self.number:
            self.lost = True
            raise LeaseLost(f"{self.directory}: lease taken over by another worker")
        self.info = replace(self.info, heartbeat=time.time())
        _write_atomic(self.path, self.info)

    def release(self) -> None:
        self._stop_heartbeat()
        if self.lost:
            return
        newest = _lease_files(self.directory)
        if newest and _number(newest[-1]) > self.number:
            self.lost = True
            return
        self.info = replace(self.info, heartbeat=time.time(), released=True)
        _write_atomic(self.path, self.info)

    def _run_heartbeat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except LeaseLost:
                if self.on_lost is not None:
                    self.on_lost()
                return
            except OSError:
                continue  # a file-system hiccup: try again at the next beat

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._run_heartbeat, name="elth-lease-heartbeat", daemon=True)
        self._thread.start()

    def _stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Lease:
        self.start_heartbeat()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def default_heartbeat(timeout: float) -> float:
    """A heartbeat several times per timeout (so a slow file system or a busy node is not mistaken
    for a dead worker), at most every 30 s."""
    return max(0.05, min(30.0, timeout / 6))


def _slurm_job() -> str:
    job = os.environ.get("SLURM_JOB_ID", "")
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{task}" if job and task else job
