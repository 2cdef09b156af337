"""Seed-by-seed comparisons of an experiment's tickets (see `elth.analysis.stats` for the pairing).

A ticket of curve A at one level is compared with curve B at A's actual sparsity, separately in each
seed: B's own points of that seed are read at the sparsity A's ticket of that seed has (linear in log
density, as `aggregate.read_at`), and the difference A - B is taken within the seed. The mean of the
differences over seeds gets a 95% t-interval.
"""
from __future__ import annotations

from dataclasses import dataclass

from elth.analysis.stats import PairedDifference, paired_difference
from elth.experiments.aggregate import Point, aggregate, compare_ett, curves, imp_curve, read_at, targets_of
from elth.experiments.results import Row
from elth.methods import BASELINES, CurveKey, curve_label

IMP_KEY: CurveKey = ("imp", "", "")


@dataclass(frozen=True)
class SeedPoints:
    """The experiment's points computed from each seed's rows alone (one dataset)."""

    by_seed: dict[int, list[Point]]

    @classmethod
    def of(cls, rows: list[Row]) -> "SeedPoints":
        seeds = sorted({r.seed for r in rows})
        return cls({s: aggregate([r for r in rows if r.seed == s]) for s in seeds})

    def curve(self, seed: int, target: str, key: CurveKey) -> list[Point]:
        pts = self.by_seed.get(seed, [])
        if key == IMP_KEY:
            return imp_curve(pts, target)
        return curves(pts, target).get(key, [])


@dataclass(frozen=True)
class PairedComparison:
    """Curve `key` at `level` on `target` against curve `against`, read at the first one's sparsity."""

    target: str
    key: CurveKey
    level: int
    sparsity: float  # mean over seeds of the compared ticket's actual sparsity
    against: CurveKey
    difference: PairedDifference | None
    extrapolated: bool  # some seed's reading of `against` lies just beyond its curve's end

    @property
    def label(self) -> str:
        return curve_label(self.key)

    @property
    def against_label(self) -> str:
        return curve_label(self.against)


def compare_paired(seeds: SeedPoints, target: str, key: CurveKey, level: int, against: CurveKey) -> PairedComparison:
    """`key`'s ticket at `level` minus `against` read at that ticket's sparsity, seed by seed."""
    mine: dict[int, float] = {}
    theirs: dict[int, float] = {}
    sparsities: list[float] = []
    extrapolated = False
    for seed in seeds.by_seed:
        own = [p for p in seeds.curve(seed, target, key) if p.level == level]
        if not own:
            continue
        mine[seed] = own[0].accuracy
        sparsities.append(own[0].sparsity)
        r = read_at(seeds.curve(seed, target, against), own[0].sparsity)
        if r is not None:
            theirs[seed] = r.accuracy
            extrapolated |= r.extrapolated
    sparsity = sum(sparsities) / len(sparsities) if sparsities else float("nan")
    return PairedComparison(target, key, level, sparsity, against, paired_difference(mine, theirs), extrapolated)


def ett_keys(points: list[Point], target: str) -> list[CurveKey]:
    return [k for k in curves(points, target) if k[0] == "ett"]


def baselines_for(points: list[Point], target: str, ett: CurveKey) -> list[CurveKey]:
    """The baselines an ETT curve is compared with: the target's own (no source) and the controls
    built from the same source and strategy."""
    return [k for k in curves(points, target)
            if k[0] in BASELINES and (k[1] == "" or (k[1], k[2]) == (ett[1], ett[2]))]


def ett_comparisons(rows: list[Row]) -> list[tuple[PairedComparison, PairedComparison | None]]:
    """Per ETT ticket: (ETT - IMP, ETT - the best baseline), the best baseline being the one most
    accurate at that sparsity on the mean (as in `aggregate.compare_ett`)."""
    points = aggregate(rows)
    seeds = SeedPoints.of(rows)
    best = {(c.target, c.source, c.strategy, c.level): c.best_baseline for c in compare_ett(points)}
    out = []
    for target in targets_of(points):
        for key in ett_keys(points, target):
            names = {curve_label(b): b for b in baselines_for(points, target, key)}
            for p in curves(points, target)[key]:
                vs_imp = compare_paired(seeds, target, key, p.level, IMP_KEY)
                b = names.get(best.get((target, key[1], key[2], p.level), ""))
                out.append((vs_imp, compare_paired(seeds, target, key, p.level, b) if b else None))
    return out


def ett_vs_every_baseline(rows: list[Row]) -> list[PairedComparison]:
    points = aggregate(rows)
    seeds = SeedPoints.of(rows)
    out = []
    for target in targets_of(points):
        for key in ett_keys(points, target):
            for p in curves(points, target)[key]:
                for b in baselines_for(points, target, key):
                    out.append(compare_paired(seeds, target, key, p.level, b))
    return out
