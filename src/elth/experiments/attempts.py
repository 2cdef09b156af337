"""What a run directory records about the workers that ran it, for `elth experiment --status`.

`attempts.jsonl` gets one line per event of a worker on the run: `start`, then `finish`, `fail`
or `lost` (the lease was taken over), each with the host, process, SLURM job and time; a run
trained exactly once has one `start` and one `finish`. `failure.json` holds the traceback of the
last failed attempt until an attempt succeeds. `submitted.json` says that a batch job for the run
is queued (its id, since when) until the job starts.
"""
from __future__ import annotations

import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Iterable

from elth.errors import ElthError

from elth.files import ATTEMPTS_FILE, FAILURE_FILE, SUBMITTED_FILE, write_json_atomic


def _where() -> dict:
    job = os.environ.get("SLURM_JOB_ID", "")
    return {"host": socket.gethostname(), "pid": os.getpid(), **({"slurm_job": job} if job else {})}


def record(directory: str | os.PathLike, event: str, **fields) -> None:
    """Append one event line (a single write of one line: lines of concurrent writers never mix).

    A last line torn by a writer that was killed mid-write stays torn (readers skip it): the new
    line starts on a line of its own."""
    path = Path(directory) / ATTEMPTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"event": event, "time": time.time(), **_where(), **fields}) + "\n"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = "\n" + line
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_attempts(directory: str | os.PathLike) -> list[dict]:
    path = Path(directory) / ATTEMPTS_FILE
    if not path.is_file():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def busy_seconds(directories: Iterable[str | os.PathLike]) -> float:
    """Seconds during which at least one of these runs was being worked on: the union of their
    attempts' spans (each ending event carries its attempt's length). Work resumed over several
    invocations, or shared by several workers, counts each moment once; pauses between count not."""
    spans = sorted((e["time"] - e["seconds"], e["time"]) for d in directories for e in read_attempts(d)
                   if e.get("event") != "start" and isinstance(e.get("seconds"), (int, float)))
    total, end = 0.0, float("-inf")
    for a, b in spans:
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def write_failure(directory: str | os.PathLike, error: str) -> None:
    write_json_atomic(Path(directory) / FAILURE_FILE, {"time": time.time(), **_where(), "error": error})


def _read_json(path: Path) -> dict | None:
    """The record in `path`; None when it is absent or unreadable (being replaced, torn)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def read_failure(directory: str | os.PathLike) -> dict | None:
    return _read_json(Path(directory) / FAILURE_FILE)


def clear_failure(directory: str | os.PathLike) -> None:
    (Path(directory) / FAILURE_FILE).unlink(missing_ok=True)


def failure_text(exc: BaseException) -> str:
    """An expected failure (ElthError: bad settings, a diverged training) as its message; anything else
    as its traceback, which a bug report needs."""
    if isinstance(exc, ElthError):
        return str(exc)
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def first_line(text: str) -> str:
    """The line of a failure text that says what happened (a traceback's last line)."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if len(lines) > 1 and lines[0].startswith("Traceback") else (lines[0] if lines else "")


def write_submitted(directory: str | os.PathLike, job: str, launcher: str) -> None:
    write_json_atomic(Path(directory) / SUBMITTED_FILE,
                      {"job": job, "launcher": launcher, "time": time.time(), "by": socket.gethostname()})


def read_submitted(directory: str | os.PathLike) -> dict | None:
    return _read_json(Path(directory) / SUBMITTED_FILE)


def clear_submitted(directory: str | os.PathLike) -> None:
    (Path(directory) / SUBMITTED_FILE).unlink(missing_ok=True)
