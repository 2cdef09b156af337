"""Output directories named by a hash of everything that determines their result.

`run_dir(root, "imp", hparams)` is `root/imp-<hash>`: running the same work again finds the same
directory (finished work is reused, interrupted work resumes from its checkpoints), and different
settings never share one. Each directory keeps its `hparams.json`, so it explains itself.

Every kind of run says what determines its result as a `RunKey`: a frozen dataclass of plain JSON
fields (as open_lth's hparams descriptors) whose `directory(root)` is the run's directory. The keys
are defined where their runs are made (`ImpKey` beside IMP, `TicketRunKey` beside the experiment's
ticket runs, ...); this module is the one place that turns a key into a directory.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from pathlib import Path
from typing import ClassVar

from elth.errors import ElthError
from elth.files import HPARAMS_FILE, write_text_atomic

HASH_LENGTH = 12
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


def run_dir(root: str | os.PathLike, kind: str, hparams: dict, create: bool = True) -> Path:
    """`root/<kind>-<hash of hparams>`, created with its `hparams.json` (or checked against it);
    with `create=False` only named (and checked if it exists), as when surveying a store."""
    if not _KIND.fullmatch(kind):
        raise ValueError(f"run kind must be lower-case letters, digits and '_', got {kind!r}")
    text = canonical_json(hparams)
    path = Path(root) / f"{kind}-{hparams_hash(hparams)}"
    if create:
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
    elif create:
        write_text_atomic(record, json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n")
    return path


@dataclasses.dataclass(frozen=True)
class RunKey:
    """What determines a run's result, as typed fields of plain JSON data: fields -> hash ->
    directory. A subclass names its runs' directory prefix (`prefix`, or `kind()` when it depends
    on the fields) and declares its fields in the order they are recorded."""

    prefix: ClassVar[str] = ""

    def kind(self) -> str:
        return self.prefix

    def hparams(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def directory(self, root: str | os.PathLike, create: bool = True) -> Path:
        """`root/<kind>-<hash of the fields>` (created with its `hparams.json` unless `create` is False)."""
        return run_dir(root, self.kind(), self.hparams(), create=create)
