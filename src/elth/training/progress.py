"""What a training run reports as it goes: running loss/accuracy, log points, the progress bar."""
from __future__ import annotations

import sys
import time
from typing import Callable

import torch

from elth.console import progress_bar
from elth.training.metrics import MemberStats, MetricsLog, RunningStats
from elth.training.protocol import LRSchedule

#: Steps between progress-bar refreshes of loss/accuracy (each one reads the device sums).
DISPLAY_EVERY = 50

Evaluation = Callable[[], tuple[float, float]]


class Progress:
    """Sums loss and accuracy on the device between log points; a log point reads them (one sync),
    optionally evaluates on the test set, appends a row to `metrics.jsonl` and updates the bar."""

    def __init__(
        self,
        device: torch.device,
        schedule: LRSchedule,
        iterations_per_epoch: int,
        *,
        start_step: int,
        step: int,
        end: int,
        seconds_before: float,
        log: MetricsLog | None,
        desc: str,
        enabled: bool,
        stats: RunningStats | MemberStats | None = None,
    ):
        """`stats`: where the running sums are kept (default: a `RunningStats` of this run; a fused
        group's members get views of one `GroupStats`, summed once per step for all, see `count`)."""
        self.schedule, self.ipe, self.start_step, self.log = schedule, iterations_per_epoch, start_step, log
        self.stats = RunningStats(device) if stats is None else stats
        self.bar = progress_bar(
            total=end - start_step, initial=step - start_step, desc=desc, unit="it", disable=not enabled,
            file=sys.stderr, dynamic_ncols=True, leave=True,
        )
        self.clock = _Clock(seconds_before)
        self.last_test: tuple[float | None, float | None] = (None, None)
        self.train_loss: float | None = None

    def after_step(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, images: int | None = None) -> None:
        """`images`: the step's global batch when `labels` is one rank's share (for images/s)."""
        self.stats.add(loss, logits, labels)
        self.count(labels.shape[0] if images is None else images)

    def count(self, images: int) -> None:
        """A step of `images` examples whose sums were added to `stats` elsewhere."""
        self.clock.images += images
        self.bar.update(1)

    def refresh(self, step: int) -> None:
        """Every DISPLAY_EVERY steps, show the running loss and accuracy (only with a visible bar)."""
        if not self.bar.disable and (step - self.start_step) % DISPLAY_EVERY == 0:
            _show(self.bar, *self.stats.read(), self.clock.window_rate(), self.last_test[0])

    def log_point(self, step: int, evaluate: Evaluation | None) -> None:
        """Read the running sums (of every rank), run `evaluate` if given, and log the row for global
        step `step` (a collective with several ranks: every rank calls it at the same step)."""
        loss, acc = self.stats.read_global()
        images_per_s = self.clock.window_rate()
        test = (None, None)
        if evaluate is not None:
            test = evaluate()
            self.last_test = test
        if loss is not None:
            self.train_loss = loss
        row = {
            "step": step,
            "epoch": round(step / self.ipe, 4),
            "lr": self.schedule(step - 1) if step > 0 else self.schedule(0),
            "train_loss": loss,
            "train_accuracy": acc,
            "test_loss": test[1],
            "test_accuracy": test[0],
            "images_per_second": images_per_s,
            "seconds": self.clock.total(),
        }
        if self.log is not None:
            self.log.append(row)
        _show(self.bar, loss, acc, images_per_s, self.last_test[0])
        self.stats.reset()
        self.clock.new_window()

    def close(self) -> None:
        self.bar.close()


class _Clock:
    """Wall time of the run (carried over resumes) and images/s since the last log point."""

    def __init__(self, seconds_before: float):
        self.seconds_before = seconds_before
        self.start = time.perf_counter()
        self.window_start = self.start
        self.images = 0

    def total(self) -> float:
        return self.seconds_before + time.perf_counter() - self.start

    def window_rate(self) -> float | None:
        elapsed = time.perf_counter() - self.window_start
        return self.images / elapsed if self.images and elapsed > 0 else None

    def new_window(self) -> None:
        self.window_start = time.perf_counter()
        self.images = 0


def _show(bar, loss, acc, images_per_s, test_acc) -> None:
    if bar.disable:
        return
    post = {}
    if loss is not None:
        post["loss"] = f"{loss:.3f}"
        post["acc"] = f"{acc:.3f}"
    if images_per_s:
        post["img/s"] = f"{images_per_s:.0f}"
    if test_acc is not None:
        post["test"] = f"{test_acc:.3f}"
    bar.set_postfix(post, refresh=False)
