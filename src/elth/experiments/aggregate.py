"""Aggregation over seeds and comparisons at matched sparsity.

A *curve* is one method's points on one target (IMP; ETTs from one source; one baseline), each point
the mean over seeds at one IMP level. Points sit at their tickets' actual mean sparsity. Comparing two
curves "at the same sparsity" reads one of them at the other's sparsity along the sparsity axis
(linearly in log density, the axis on which IMP's levels are evenly spaced), never by level number.
A sparsity up to half an IMP level beyond a curve's end is read by extending its end segment, and
the reading is marked as extrapolated; further out there is no comparison.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

from elth.experiments.results import Row
from elth.methods import BASELINES, CurveKey, curve_label, method_rank
from elth.models import parse_model_name


@dataclass(frozen=True)
class Point:
    target: str
    method: str
    source: str
    strategy: str
    level: int
    n: int
    sparsity: float
    sparsity_std: float
    accuracy: float
    accuracy_std: float
    train_steps: float
    train_flops: float
    mask_cost_flops: float

    @property
    def key(self) -> CurveKey:
        return (self.method, self.source, self.strategy)

    @property
    def total_flops(self) -> float:
        return self.train_flops + self.mask_cost_flops


def _std(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(rows: list[Row]) -> list[Point]:
    """Mean and sample standard deviation over seeds of every (target, method, source, strategy, level)."""
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r.target, r.method, r.source, r.strategy, r.level)].append(r)
    points = []
    for (target, method, source, strategy, level), rs in groups.items():
        acc = [r.accuracy for r in rs]
        sp = [r.sparsity for r in rs]
        points.append(Point(
            target, method, source, strategy, level, len(rs),
            statistics.fmean(sp), _std(sp), statistics.fmean(acc), _std(acc),
            statistics.fmean(r.train_steps for r in rs),
            statistics.fmean(r.train_flops for r in rs),
            statistics.fmean(r.mask_cost_flops for r in rs),
        ))
    return sorted(points, key=lambda p: (p.target, method_rank(p.method), p.method, p.source, p.level))


def targets_of(points: list[Point]) -> list[str]:
    """Targets in the order of their depth (then name)."""
    def key(t: str):
        try:
            s = parse_model_name(t)
            return (s.kind, s.depth + s.fc_layers, t)
        except Exception:
            return ("", 0, t)

    return sorted({p.target for p in points}, key=key)


def curves(points: list[Point], target: str) -> dict[CurveKey, list[Point]]:
    """The target's curves, each sorted by sparsity; dense is its own one-point curve."""
    out: dict[CurveKey, list[Point]] = defaultdict(list)
    for p in points:
        if p.target == target:
            out[p.key].append(p)
    ordered = sorted(out.items(), key=lambda kv: (method_rank(kv[0][0]), kv[0]))
    return {k: sorted(v, key=lambda p: p.sparsity) for k, v in ordered}


def imp_curve(points: list[Point], target: str) -> list[Point]:
    """IMP's points on `target`, the dense network included as IMP's level 0."""
    pts = [p for p in points if p.target == target and p.method in ("imp", "dense")]
    return sorted(pts, key=lambda p: p.sparsity)


def _log_density(sparsity: float) -> float:
    return math.log(max(1.0 - sparsity, 1e-12))


#: how far (in log density) a curve is read beyond its last point: half an IMP level at fraction 0.2
HALF_LEVEL = 0.5 * abs(math.log(0.8))


@dataclass(frozen=True)
class Reading:
    """A curve's accuracy read at some sparsity; `extrapolated` when beyond the curve's ends."""

    accuracy: float
    extrapolated: bool = False


def read_at(curve: list[Point], sparsity: float, margin: float = HALF_LEVEL,
            tolerance: float = 1e-9) -> Reading | None:
    """Mean accuracy of `curve` at `sparsity`, linear in log density between neighbouring points.

    Beyond the curve's first or last point by at most `margin` (log density), the end segment is
    extended (a one-point curve gives its own value) and the reading is marked extrapolated;
    further out there is no reading.
    """
    if not curve:
        return None
    pts = sorted(curve, key=lambda p: p.sparsity)
    for p in pts:
        if abs(p.sparsity - sparsity) <= tolerance:
            return Reading(p.accuracy)
    x = _log_density(sparsity)
    for a, b in zip(pts, pts[1:]):
        if a.sparsity <= sparsity <= b.sparsity:
            return Reading(_line(a, b, x))
    end, inner = (pts[0], pts[1:2]) if sparsity < pts[0].sparsity else (pts[-1], pts[-2:-1])
    if abs(x - _log_density(end.sparsity)) > margin:
        return None
    if not inner:
        return Reading(end.accuracy, extrapolated=True)
    return Reading(_line(inner[0], end, x), extrapolated=True)


def _line(a: Point, b: Point, x: float) -> float:
    xa, xb = _log_density(a.sparsity), _log_density(b.sparsity)
    if xa == xb:
        return (a.accuracy + b.accuracy) / 2
    return a.accuracy + (x - xa) / (xb - xa) * (b.accuracy - a.accuracy)


def interpolate(curve: list[Point], sparsity: float) -> float | None:
    """`read_at` without extrapolation: None outside the curve's range."""
    r = read_at(curve, sparsity, margin=0.0)
    return None if r is None or r.extrapolated else r.accuracy


@dataclass(frozen=True)
class Comparison:
    """An ETT point against IMP and the best baseline, both read at the ETT ticket's sparsity."""

    target: str
    source: str
    strategy: str
    level: int
    sparsity: float
    accuracy: float
    accuracy_std: float
    imp_at_sparsity: Reading | None
    best_baseline: str
    baseline_at_sparsity: Reading | None


def compare_ett(points: list[Point]) -> list[Comparison]:
    out = []
    for target in targets_of(points):
        cs = curves(points, target)
        imp = imp_curve(points, target)
        baselines = {k: v for k, v in cs.items() if k[0] in BASELINES}
        for key, pts in cs.items():
            if key[0] != "ett":
                continue
            for p in pts:
                best_name, best = "", None
                for bkey, bpts in baselines.items():
                    r = read_at(bpts, p.sparsity)
                    if r is not None and (best is None or r.accuracy > best.accuracy):
                        best_name, best = curve_label(bkey), r
                out.append(Comparison(
                    target, p.source, p.strategy, p.level, p.sparsity, p.accuracy, p.accuracy_std,
                    read_at(imp, p.sparsity), best_name, best,
                ))
    return out
