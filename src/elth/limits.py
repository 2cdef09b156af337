"""Checks of the numbers users give elth: finite, in range, integers where they must be; seeds.

Every setting that reaches training (the CLI, the Python API's dataclasses, a ticket's metadata,
an experiment spec) goes through these, so a value that cannot work is refused where it enters,
with its name, instead of surfacing later as a NaN loss, an OverflowError or invalid JSON.
"""
from __future__ import annotations

import math

from elth.errors import ElthError

#: Seeds are integers 0..MAX_SEED (torch, NumPy and every derived seed accept them all).
MAX_SEED = 2**32 - 1
#: Seeds of one experiment (0..N-1): the paper uses 3; past this a typo is far likelier than intent.
MAX_SEEDS = 100
#: RigL-Kx length multipliers: the paper's largest is 5.
MAX_MULTIPLIER = 100
#: Points on a linear-mode-connectivity path: the paper uses 30; each costs a test evaluation.
MAX_LMC_POINTS = 1000


class BadNumberError(ElthError, ValueError):
    """A number outside what a setting accepts."""


def is_int(value) -> bool:
    """An integer, and not a bool (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_real(value, what: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """`value` as a float if it is a finite real number in the range, else `BadNumberError` naming `what`."""
    if not is_real(value):
        raise BadNumberError(f"{what} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise BadNumberError(f"{what} must be a finite number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise BadNumberError(f"{what} must be {'above' if low_open else 'at least'} {low:g}, got {value!r}")
    if high is not None and (value >= high if high_open else value > high):
        raise BadNumberError(f"{what} must be {'below' if high_open else 'at most'} {high:g}, got {value!r}")
    return float(value)


def check_int(value, what: str, *, low: int | None = None, high: int | None = None) -> int:
    """`value` if it is an integer (not a bool, not a float) in [low, high], else `BadNumberError`."""
    if not is_int(value):
        raise BadNumberError(f"{what} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise BadNumberError(f"{what} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise BadNumberError(f"{what} must be at most {high}, got {value}")
    return value


def check_seed(value, what: str = "seed") -> int:
    """A seed: an integer from 0 to `MAX_SEED`."""
    if not is_int(value) or not 0 <= value <= MAX_SEED:
        raise BadNumberError(f"{what} must be an integer from 0 to {MAX_SEED}, got {value!r}")
    return value
