"""Output directories named by a hash of everything that determines their result.

`run_dir(root, "imp", hparams)` is `root/imp-<hash>`: running the same work again finds the same
directory (finished work is reused, interrupted work resumes from its checkpoints), and different
settings never share one. Each directory keeps its `hparams.json`, so it explains itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from elth.errors import ElthError

HASH_LENGTH = 12
HPARAMS_FILE = "hparams.json"
_KIND = re.compile(r"[a-z][a-z0-9_]*")


class RunDirError(ElthError):
    """A run directory whose recorded hparams disagree with the ones asked for."""


def canonical_json(value) -> str:
    """One fixed JSON text per value: sorted keys, no spaces, tuples as lists."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"hparams must be plain JSON data (dicts, lists, str, int, finite float, bool, None): {e}") from None


def hparams_hash(hparams: dict) -> str:
    """A short stable hash of `hparams` (first hex digits of the SHA-256 of its canonical JSON)."""
    return hashlib.sha256(canonical_json(hparams).encode()).hexdigest()[:HASH_LENGTH]


def run_dir(root: str | os.PathLike, kind: str, hparams: dict) -> Path:
    """`root/<kind>-<hash of hparams>`, created with its `hparams.json` (or checked against it)."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"run kind must be lower-case letters, digits and '_', got {kind!r}")
    text = canonical_json(hparams)
    path = Path(root) / f"{kind}-{hparams_hash(hparams)}"
    path.mkdir(parents=True, exist_ok=True)
    record = path / HPARAMS_FILE
    if record.exists():
        try:
            recorded = json.loads(record.read_text())
        except (OSError, ValueError) as e:
            raise RunDirError(f"{record}: unreadable hparams record ({e}); remove the directory to start over") from None
        if canonical_json(recorded) != text:
            raise RunDirError(
                f"{path} was made with different hparams than its name says; remove it to start over"
            )
    else:
        write_text_atomic(record, json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n")
    return path


@contextlib.contextmanager
def rank_zero_writes() -> Iterator[bool]:
    """Yield whether this process writes: always on one process; on several ranks, rank 0 only.

    With several ranks (torch.distributed) every rank must enter at the same point: a barrier
    before and after the block makes every file check a rank does between two writes see the same
    files on every rank, so all ranks take the same branches (and meet at the same collectives).
    """
    import torch.distributed as dist

    several = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    if not several:
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
    With several ranks only rank 0 writes (`rank_zero_writes`); the others write a scratch file
    that is thrown away.
    """
    with rank_zero_writes() as writes:
        if writes:
            with _atomic_path(Path(path)) as tmp:
                yield tmp
        else:
            with tempfile.TemporaryDirectory(prefix="elth-rank-") as scratch:
                yield Path(scratch) / Path(path).name


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, value) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")
