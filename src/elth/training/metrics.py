"""Training metrics as JSON lines (one object per log point) and running sums kept on the device.

With `enable_tensorboard(True)` (`elth experiment --tensorboard`), every numeric field of every
line is also written as a TensorBoard scalar (tag = field name, x = global step) to an event file
in the same directory, so `tensorboard --logdir STORE` shows every run of a store.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from elth.errors import ElthError
from elth.files import is_writer, json_text, write_text_atomic
from elth.training import distributed

#: fields that are the x axis or bookkeeping, not curves
_NOT_SCALARS = ("step",)

_tensorboard = False
_writers: dict[Path, object] = {}
_MAX_OPEN_WRITERS = 4


def enable_tensorboard(on: bool = True) -> None:
    """Mirror the metrics of every run this process trains to TensorBoard event files."""
    global _tensorboard
    if on:
        _check_tensorboard()
    _tensorboard = on


def _check_tensorboard() -> None:
    try:
        import tensorboard  # noqa: F401  (an optional extra: imported only when asked for)
    except ImportError:
        raise ElthError("--tensorboard needs the tensorboard package: pip install 'elth[tensorboard]'") from None


def _writer(directory: Path):
    """One open SummaryWriter per run directory (the few most recent are kept open)."""
    from torch.utils.tensorboard import SummaryWriter  # needs the optional tensorboard package

    writer = _writers.pop(directory, None)
    if writer is None:
        while len(_writers) >= _MAX_OPEN_WRITERS:
            _writers.pop(next(iter(_writers))).close()
        writer = SummaryWriter(log_dir=str(directory))
    _writers[directory] = writer  # most recent last
    return writer


class MetricsLog:
    """Append-only `metrics.jsonl`; on resume, lines past the checkpoint's step are dropped."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by a kill: everything after it is stale as well
        return rows

    def truncate_after(self, step: int) -> None:
        """Keep only the lines logged at or before global step `step` (every rank calls it)."""
        rows = self.read()
        kept = [r for r in rows if r.get("step", 0) <= step]
        if self.path.is_file() and len(kept) != len(self.path.read_text().splitlines()):
            write_text_atomic(self.path, "".join(json_text(r) + "\n" for r in kept))

    def append(self, row: dict) -> None:
        """Add a line (on rank 0 only, when several ranks train: the rows are reduced over ranks)."""
        if not is_writer():
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json_text(row) + "\n")  # NaN/inf as null
        if _tensorboard:
            self._to_tensorboard(row)

    def _to_tensorboard(self, row: dict) -> None:
        writer = _writer(self.path.parent)
        step = int(row.get("step", 0))
        for key, value in row.items():
            if (key not in _NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value)):
                writer.add_scalar(key, value, step)
        writer.flush()


class RunningStats:
    """Sums of loss x examples and correct predictions, accumulated on the device without syncing."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.count = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[0]
        self.loss.add_(loss.detach(), alpha=n)
        self.correct.add_((logits.detach().argmax(1) == labels).sum())
        self.count += n

    def read(self) -> tuple[float | None, float | None]:
        """(mean loss, accuracy) since the last reset: one host sync."""
        return _means(self.loss, self.correct, self.count, over_ranks=False)

    def read_global(self) -> tuple[float | None, float | None]:
        """`read` over every rank's examples (a collective: every rank calls it at the same step)."""
        return _means(self.loss, self.correct, self.count, over_ranks=True)

    def reset(self) -> None:
        self.loss.zero_()
        self.correct.zero_()
        self.count = 0


class GroupStats:
    """`RunningStats` of the K members of a fused group, summed for all of them in one `add` per
    step (losses [K], logits [K, N, classes], labels [K, N]); `member(k)` is member k's view, which
    a member's `Progress` reads and resets like its own `RunningStats`."""

    def __init__(self, device: torch.device, members: int):
        self.loss = torch.zeros(members, dtype=torch.float64, device=device)
        self.correct = torch.zeros(members, dtype=torch.int64, device=device)
        self.counts = [0] * members

    def add(self, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = labels.shape[1]
        self.loss.add_(losses.detach(), alpha=n)
        self.correct.add_((logits.detach().argmax(2) == labels).sum(1))
        self.counts = [c + n for c in self.counts]

    def member(self, k: int) -> "MemberStats":
        return MemberStats(self, k)


class MemberStats:
    """Member k's running sums inside a `GroupStats` (the interface of `RunningStats`)."""

    def __init__(self, group: GroupStats, k: int):
        self.group, self.k = group, k

    def read(self) -> tuple[float | None, float | None]:
        g = self.group
        return _means(g.loss[self.k], g.correct[self.k], g.counts[self.k], over_ranks=False)

    def read_global(self) -> tuple[float | None, float | None]:
        """`read` over every rank's examples (a collective: every rank calls it at the same step)."""
        g = self.group
        return _means(g.loss[self.k], g.correct[self.k], g.counts[self.k], over_ranks=True)

    def reset(self) -> None:
        self.group.loss[self.k] = 0.0
        self.group.correct[self.k] = 0
        self.group.counts[self.k] = 0


def _means(loss: torch.Tensor, correct: torch.Tensor, count: int, over_ranks: bool) -> tuple[float | None, float | None]:
    """(mean loss, accuracy) of running sums on the device; `over_ranks`: summed over every rank
    first (a collective). Without examples: (None, None), and nothing is read from the device."""
    if over_ranks and distributed.is_active():
        total, right, count = distributed.all_reduce_numbers([float(loss), float(correct), count], loss.device)
    elif count == 0:
        return None, None
    else:
        total, right = float(loss), int(correct)
    if count == 0:
        return None, None
    return total / count, int(right) / count
