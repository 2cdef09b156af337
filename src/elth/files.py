"""What a run store holds on disk: file names, atomic writes and the hash of a set of tensors.

Every name below is part of the store's format (a store written before keeps being read), so each
is defined here once and imported wherever a file is written or read.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import pickle
import re
import socket
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, TypeVar

import torch
import torch.distributed as dist

from elth.errors import ElthError

T = TypeVar("T")

# Any run directory (`runs.run_dir`)
HPARAMS_FILE = "hparams.json"
#: The training run inside a run directory that trains (`training.train` writes the next three there)
TRAIN_DIR = "train"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.jsonl"
RUN_FILE = "run.json"
#: The outcome of finished work: a training run, an IMP level, a DST run, an experiment's ticket run
RESULT_FILE = "result.json"
#: Who works on a run (`experiments.lease`, `experiments.attempts`): the numbered leases, one line
#: per attempt, the traceback of the last failed attempt
LEASE_FILE = "lease.{number:06d}.json"
LEASE_FILE_PATTERN = r"lease\.([0-9]+)\.json"
ATTEMPTS_FILE = "attempts.jsonl"
FAILURE_FILE = "failure.json"
#: a run handed to a batch system and not started yet (the job's id, when, by which host)
SUBMITTED_FILE = "submitted.json"
# Tickets and rewind points
TICKET_FILE = "ticket.safetensors"
REWIND_WEIGHTS_FILE = "rewind.safetensors"
IMP_LEVELS_FILE = "levels.json"
# Linear mode connectivity
LMC_FILE = "lmc.json"
LMC_FIGURE = "lmc.png"
# An experiment's results folder
RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
LMC_JSONL = "lmc.jsonl"
EXPERIMENT_FILE = "experiment.json"
REPORT_FILE = "report.md"
ACCURACY_FIGURE = "accuracy_vs_sparsity.png"
#: submitit's job files (pickles and logs), one folder per SLURM job
JOBS_DIR = "jobs"


#: Temporary files of atomic writes: `.<target name>.<host>-<pid>.<random>.tmp` next to the target.
#: The writer's process space (a short hash of its host name and pid namespace: `process_space_tag`) and
#: process id let a later writer in the directory tell a temporary file left by a killed process
#: from one a running process is still writing.
_TEMPORARY = re.compile(r"\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[^.]+\.tmp")
#: Temporary files older than this are removed whoever wrote them (a writer on another host that died).
STALE_SECONDS = 7 * 24 * 3600


@functools.cache
def process_space_tag() -> str:
    """Where this process's id means something, as 8 hex digits (for file names and lease records):
    a hash of the host name and, on Linux, the pid namespace (containers that share a host name but
    not their process ids are different spaces). Read once per process."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()} {namespace}".strip().encode()).hexdigest()[:8]


def process_alive(pid: int) -> bool:
    """Whether a process of this id exists in this process space (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of atomic writes in `directory` whose writer is gone; return them.

    A writer is gone when it ran in this process space and its process no longer exists, or when its file is
    older than `STALE_SECONDS`. Files of live writers (a second run at the same time) are left alone.
    """
    removed = []
    host, now = process_space_tag(), time.time()
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        m = _TEMPORARY.fullmatch(entry.name)
        if m is None or not entry.is_file(follow_symlinks=False):
            continue
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS
            if old or (m["host"] == host and not process_alive(int(m["pid"]))):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except FileNotFoundError:  # its writer finished or another cleaner got there first
            continue
    return removed


#: Set while rank 0 of several ranks works alone (an experiment's scheduler, whose ranks wait for
#: the trainings it hands them): its writes and collectives are then those of one process.
_ALONE = False


def _several_ranks() -> bool:
    return not _ALONE and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_alone() -> bool:
    """Whether this rank works alone for now (see `alone`)."""
    return _ALONE


@contextlib.contextmanager
def alone(flag: bool = True) -> Iterator[None]:
    """Within the block this rank acts as one process (`flag=False`: with its ranks again)."""
    global _ALONE
    before, _ALONE = _ALONE, flag
    try:
        yield
    finally:
        _ALONE = before


def is_writer() -> bool:
    """Whether this process writes the store: always on one process, rank 0 of several ranks."""
    return not _several_ranks() or dist.get_rank() == 0


@contextlib.contextmanager
def rank_zero_writes() -> Iterator[bool]:
    """Yield `is_writer()`; with several ranks (torch.distributed) a barrier before and after the block.

    Every rank must enter at the same point (it is a collective). The barriers make every check of
    the store that ranks do between two writes see the same files on every rank, so all ranks take
    the same branches and meet at the same collectives (several nodes: the store on a shared file
    system).
    """
    if not _several_ranks():
        yield True
        return
    dist.barrier()
    try:
        yield dist.get_rank() == 0
    finally:
        dist.barrier()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; when the block succeeds, move it onto `path`.

    The file is flushed to disk before the rename, so `path` is always either the old file or the
    complete new one; if the block fails the temporary file is removed and `path` is untouched.
    Temporary files that killed writers left in the directory are removed first.
    With several ranks only rank 0 writes (`rank_zero_writes`: every rank calls this at the same
    point); the others write a scratch file that is thrown away.
    """
    with rank_zero_writes() as writes:
        if writes:
            with _atomic_path(Path(path)) as tmp:
                yield tmp
        else:
            with tempfile.TemporaryDirectory(prefix="elth-rank-") as scratch:
                yield Path(scratch) / Path(path).name


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; it is set back at once
    os.umask(mask)
    return mask


#: The mode a file written atomically ends with: what `open` would give it under the process's umask
#: (a temporary file is created 0600, which would keep a shared store's records from the group).
FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """`_atomic_temporary`, its errors naming `path` (what the user asked for), not the temporary file."""
    try:
        with _atomic_temporary(path) as tmp:
            yield tmp
    except OSError as e:
        name = Path(os.fsdecode(e.filename)).name if e.filename else ""
        if name.startswith(f".{path.name}.") and name.endswith(".tmp"):
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise


@contextlib.contextmanager
def _atomic_temporary(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.{process_space_tag()}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def finite_or_none(value):
    """`value` with every float that is NaN or infinite replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def json_text(value, **options) -> str:
    """Strict JSON (RFC 8259): a number that is not finite is written as null, never NaN or Infinity."""
    return json.dumps(finite_or_none(value), allow_nan=False, **options)


def refuse_json_constant(name: str):
    """`json.loads(..., parse_constant=refuse_json_constant)`: NaN, Infinity and -Infinity (which
    Python's reader takes and strict JSON has not) are a ValueError naming them."""
    raise ValueError(f"{name} is not a number JSON allows")


def write_json_atomic(path: str | os.PathLike, value) -> Path:
    return write_text_atomic(path, json_text(value, indent=2, sort_keys=True) + "\n")


class DamagedRecordError(ElthError):
    """A record in a run directory that cannot be read: damaged outside elth (elth writes atomically)."""


#: What to do about a damaged record of finished work (the store redoes what is missing).
REDO = "delete it to have that work done again"


def json_object(value: Any) -> dict:
    """`read_record`'s conversion for a record that must be a JSON object (TypeError otherwise)."""
    return {**value}


def read_record(path: str | os.PathLike, convert: Callable[[Any], T] = lambda x: x, remedy: str = REDO) -> T | None:
    """The JSON record at `path` passed through `convert` (e.g. a dataclass made from it), or None
    when there is none; a record that is not JSON, or that `convert` cannot use, is one clear error
    naming the file and the `remedy` (not a traceback in the middle of an experiment)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return convert(json.loads(text))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        why = "not JSON" if isinstance(e, json.JSONDecodeError) else f"{type(e).__name__}: {e}"
        raise DamagedRecordError(f"{path}: a damaged record ({why}); {remedy}") from None


#: How a hashed record spells each tensor before its bytes. Two spellings exist because tickets and
#: training checkpoints each recorded their own before they shared this function; both are kept
#: so that every stored checksum and checkpoint key stays valid.
HashRecord = Literal["ticket", "checkpoint"]


def tensors_hash(tensors: dict[str, torch.Tensor], record: HashRecord = "ticket") -> str:
    """SHA-256 (hex) over names, dtypes, shapes and exact bytes of `tensors`, in sorted name order.

    `record="ticket"`: the full digest, headers `name|dtype|shape|` (a ticket file's checksum).
    `record="checkpoint"`: the first 16 hex digits, bool tensors as uint8, headers
    `name:shape:dtype;` (the weights and masks in a training checkpoint's key).
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach()
        if record == "checkpoint":
            if t.dtype == torch.bool:
                t = t.to(torch.uint8)
            t = t.to("cpu").contiguous()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        else:
            t = t.cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16] if record == "checkpoint" else h.hexdigest()


class UnreadableTensorFileError(ElthError):
    """A torch file that cannot be read as tensors (damaged, foreign, or holding code)."""


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """`torch.load(path)` of tensors and plain containers only, errors as one short sentence.

    Files that would need more than tensors, numbers, strings and containers (any other Python
    object: a file that could run code when loaded) are refused. Torch's warnings about the file's
    pickle protocol or its tensors are not shown: the outcome (read, or this error) says it all.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except pickle.UnpicklingError as e:
        code = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if code:
            raise UnreadableTensorFileError(
                f"{path}: not a {what} elth can read: it holds a Python object ({code.group(1)}) besides tensors "
                "and plain values, and elth refuses files that could run code when loaded") from None
        raise UnreadableTensorFileError(
            f"{path}: not a readable {what} (truncated, damaged or not written by torch.save)") from None
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise UnreadableTensorFileError(f"{path}: not a readable {what} (truncated or damaged: {_first_line(e)})") from None


def _first_line(e: Exception, keep: int = 120) -> str:
    text = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return text if len(text) <= keep else text[:keep] + "..."
