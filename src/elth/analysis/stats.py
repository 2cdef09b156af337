"""Paired differences over seeds and their 95% t-intervals.

Every seed of an experiment runs its own IMP on each network; all tickets of that seed derive from
those IMP runs (an ETT from the source's, a baseline from the target's) and train with that seed. Two
methods are therefore compared seed by seed: the difference is taken within each seed, and runs of
different seeds are never paired. The mean of the per-seed differences gets a two-sided 95%
t-interval over seeds (n - 1 degrees of freedom), which removes the seed-to-seed spread that both
methods share.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

#: two-sided 95% quantiles of Student's t, t_{0.975, df}, for df = 1..30
_T975 = (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157,
         2.228139, 2.200985, 2.178813, 2.160369, 2.144787, 2.131450, 2.119905, 2.109816, 2.100922,
         2.093024, 2.085963, 2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831,
         2.048407, 2.045230, 2.042272)
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """t_{0.975} with `df` degrees of freedom (tabulated to 30, then a Cornish-Fisher expansion)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


@dataclass(frozen=True)
class Interval:
    """Mean of `values` with its two-sided 95% t-interval (none for fewer than two values)."""

    values: tuple[float, ...]
    mean: float
    low: float | None
    high: float | None

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def half_width(self) -> float | None:
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    @property
    def contains_zero(self) -> bool:
        """True when the interval contains 0 (the difference is within noise) or there is no interval."""
        return self.low is None or self.high is None or self.low <= 0.0 <= self.high


def mean_interval(values) -> Interval:
    vals = tuple(float(v) for v in values)
    if not vals:
        raise ValueError("no values")
    mean = statistics.fmean(vals)
    if len(vals) < 2:
        return Interval(vals, mean, None, None)
    half = t_quantile_975(len(vals) - 1) * statistics.stdev(vals) / math.sqrt(len(vals))
    return Interval(vals, mean, mean - half, mean + half)


#: The most seeds `seeds_to_decide` looks at.
MOST_SEEDS = 100


def seeds_to_decide(iv: Interval, bound: float) -> int | None:
    """The fewest seeds whose 95% interval would lie wholly on one side of `bound` if more seeds kept
    this interval's mean and spread (a planning estimate, not a promise: both move as seeds come);
    None with fewer than two values, a zero spread, a mean at `bound` or more than `MOST_SEEDS`."""
    if iv.n < 2:
        return None
    gap, spread = abs(iv.mean - bound), statistics.stdev(iv.values)
    if gap == 0 or spread == 0:
        return None
    return next((n for n in range(2, MOST_SEEDS + 1) if t_quantile_975(n - 1) * spread / math.sqrt(n) < gap), None)


@dataclass(frozen=True)
class PairedDifference:
    """`a - b` per seed (seeds both have), and the interval of its mean."""

    seeds: tuple[int, ...]
    interval: Interval
    unpaired_seeds: tuple[int, ...] = ()

    @property
    def differences(self) -> tuple[float, ...]:
        return self.interval.values

    @property
    def mean(self) -> float:
        return self.interval.mean


def paired_difference(a: dict[int, float], b: dict[int, float]) -> PairedDifference | None:
    """Per-seed differences `a[s] - b[s]` over the seeds present in both (None when there are none).

    Seeds present in only one of them are left out (listed in `unpaired_seeds`), never matched with
    another seed.
    """
    seeds = tuple(sorted(set(a) & set(b)))
    if not seeds:
        return None
    unpaired = tuple(sorted(set(a) ^ set(b)))
    return PairedDifference(seeds, mean_interval(a[s] - b[s] for s in seeds), unpaired)


def pooled(differences: list[PairedDifference]) -> PairedDifference | None:
    """Several comparisons pooled into one: per seed, the mean of their differences, then the
    interval over seeds (seeds every comparison has; the pairing stays within each seed)."""
    if not differences:
        return None
    seeds = set(differences[0].seeds)
    for d in differences[1:]:
        seeds &= set(d.seeds)
    if not seeds:
        return None
    per_seed = {s: statistics.fmean(d.differences[d.seeds.index(s)] for d in differences) for s in seeds}
    every = set().union(*(set(d.seeds) | set(d.unpaired_seeds) for d in differences))
    return PairedDifference(tuple(sorted(seeds)), mean_interval(per_seed[s] for s in sorted(seeds)),
                            tuple(sorted(every - seeds)))


def format_difference(d: PairedDifference | None, scale: float = 100.0, digits: int = 2) -> str:
    """'-0.42 [-0.80, -0.04]' in points (x `scale`); '+0.10 [-0.30, +0.50] ~0' when the interval
    contains 0; without an interval for one seed; 'n/a' for none."""
    if d is None:
        return "n/a"
    iv = d.interval
    text = f"{scale * iv.mean:+.{digits}f}"
    if iv.low is None:
        return text + " (1 seed)"
    text += f" [{scale * iv.low:+.{digits}f}, {scale * iv.high:+.{digits}f}]"
    return text + (f" {WITHIN_NOISE}" if iv.contains_zero else "")


#: marks a difference whose 95% interval contains 0
WITHIN_NOISE = "~0"
