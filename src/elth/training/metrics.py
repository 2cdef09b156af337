"""Training metrics as JSON lines (one object per log point) and running sums kept on the device."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from elth.files import is_writer, json_text, write_text_atomic
from elth.training import distributed


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
        if self.count == 0:
            return None, None
        return float(self.loss) / self.count, int(self.correct) / self.count

    def read_global(self) -> tuple[float | None, float | None]:
        """`read` over every rank's examples (a collective: every rank calls it at the same step)."""
        if not distributed.is_active():
            return self.read()
        loss, correct, count = distributed.all_reduce_numbers(
            [float(self.loss), float(self.correct), self.count], self.loss.device
        )
        if count == 0:
            return None, None
        return loss / count, int(correct) / count

    def reset(self) -> None:
        self.loss.zero_()
        self.correct.zero_()
        self.count = 0
