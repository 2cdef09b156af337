"""Progress display that suits where the output goes.

On a terminal: tqdm bars. Elsewhere (a SLURM job's log, a file, a pipe), bars would fill the file
with carriage returns, so the same calls print a plain line every `ELTH_LOG_EVERY` seconds (default
30) and one when the work ends: `desc: 300/1000 it (30%), 41.5 it/s, eta 17s, loss=0.512`.
`ELTH_PROGRESS=bars` or `=lines` overrides the choice.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO

from tqdm import tqdm

from elth.errors import ElthError

PROGRESS_ENV = "ELTH_PROGRESS"
LOG_EVERY_ENV = "ELTH_LOG_EVERY"
DEFAULT_LOG_EVERY = 30.0


def use_bars(stream: TextIO | None = None) -> bool:
    """Whether progress goes out as bars (a terminal) or as plain lines (anything else)."""
    choice = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if choice in ("bars", "lines"):
        return choice == "bars"
    stream = stream or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def log_every() -> float:
    try:
        return max(0.0, float(os.environ.get(LOG_EVERY_ENV, DEFAULT_LOG_EVERY)))
    except ValueError:
        return DEFAULT_LOG_EVERY


class SettingError(ElthError):
    """An environment variable of elth's with a value it does not take."""


def check_settings() -> None:
    """`ELTH_PROGRESS` and `ELTH_LOG_EVERY` as set in the environment are values elth takes (the
    `elth` command checks at its start; the functions above fall back to their defaults)."""
    choice = os.environ.get(PROGRESS_ENV, "").strip().lower()
    if choice not in ("", "bars", "lines"):
        raise SettingError(f"{PROGRESS_ENV}={os.environ[PROGRESS_ENV]!r}: expected bars or lines (or leave it unset)")
    text = os.environ.get(LOG_EVERY_ENV, "").strip()
    if text:
        try:
            seconds = float(text)
        except ValueError:
            seconds = float("nan")
        if not (seconds >= 0 and seconds < float("inf")):
            raise SettingError(f"{LOG_EVERY_ENV}={os.environ[LOG_EVERY_ENV]!r}: expected seconds between progress "
                               f"lines, a number >= 0 (default {DEFAULT_LOG_EVERY:g})")


class PlainProgress:
    """The subset of tqdm's interface elth uses, printing a line every `every` seconds."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0,
                 desc: str = "", unit: str = "it", disable: bool = False, file: TextIO | None = None,
                 every: float | None = None, **_ignored):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.desc, self.unit = total, initial, desc, unit
        self.disable = disable
        self.file = file or sys.stderr
        self.every = log_every() if every is None else every
        self._start_n, self._start = initial, time.monotonic()
        self._last_line = self._start
        self._postfix = ""
        self._closed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.disable and time.monotonic() - self._last_line >= self.every:
            self._line()

    def set_postfix(self, values: dict | None = None, refresh: bool = True, **kwargs) -> None:
        items = {**(values or {}), **kwargs}
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        self._postfix = text

    def write(self, text: str) -> None:
        print(text, file=self.file, flush=True)

    def _line(self) -> None:
        elapsed = time.monotonic() - self._start
        done = self.n - self._start_n
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        parts = [f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if rate:
            parts.append(f"{rate:.1f} {self.unit}/s")
            if self.total and self.n < self.total:
                parts.append(f"eta {_duration((self.total - self.n) / rate)}")
        else:
            parts.append(f"{_duration(elapsed)} elapsed")
        if self._postfix:
            parts.append(self._postfix)
        print(f"{self.desc}: " + ", ".join(parts), file=self.file, flush=True)
        self._last_line = time.monotonic()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.disable and self.n > self._start_n:
            self._line()

    def refresh(self) -> None:
        pass


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def progress_bar(iterable: Iterable | None = None, **kwargs):
    """A tqdm bar on a terminal, a `PlainProgress` elsewhere (same arguments as tqdm)."""
    if use_bars(kwargs.get("file")):
        return tqdm(iterable, **kwargs)
    return PlainProgress(iterable, **kwargs)


def write(text: str, file: TextIO | None = None) -> None:
    """A line that does not break an active bar."""
    file = file or sys.stderr
    if use_bars(file):
        tqdm.write(text, file=file)
    else:
        print(text, file=file, flush=True)


def percent(fraction: float) -> str:
    """`fraction` in percent with two decimals, or as many more as it takes not to read as exactly
    0% or 100% when it is not (99.999% sparsity is not 100.00%)."""
    value = 100 * fraction
    for decimals in range(2, 10):
        text = f"{value:.{decimals}f}"
        if 0 < fraction < 1 and float(text) in (0.0, 100.0):
            continue
        return f"{text}%"
    return f"{value!r}%"
