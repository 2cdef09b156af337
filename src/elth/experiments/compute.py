"""What tickets cost: the FLOPs of finding a mask, the E-LTH saving (one IMP run serving k targets vs
IMP on each target) and the comparison with dynamic sparse training."""
from __future__ import annotations

from dataclasses import dataclass

from elth.experiments.aggregate import Point
from elth.flops import training_flops
from elth.methods import DEFAULT_STRATEGIES, DST_METHODS, METHODS


def mask_cost_flops(
    method: str,
    *,
    dense_macs: int,
    rewind_step: int,
    batch_size: int,
    source_cost: float,
    like_cost: float,
    score_examples: int,
    synflow_rounds: int,
) -> float:
    """FLOPs spent finding the mask of a ticket made by `method` (its `elth.methods.MaskCost`).

    `source_cost`, `like_cost`: the mask costs of the IMP tickets it came from (an ETT's source) and
    whose sparsity it matches (the target's); `score_examples`, `synflow_rounds`: the scoring settings
    the ticket was made with (its provenance); `rewind_step`, `batch_size`: the dense training to the
    rewind point the scores are taken at. IMP's own levels are priced by their rounds instead.
    """
    m = METHODS[method]
    if m.mask_cost == "source":
        return source_cost
    if m.mask_cost == "like":
        return like_cost
    if m.mask_cost == "training":
        return 0.0
    if m.mask_cost == "imp":
        raise ValueError("IMP levels are priced by the rounds of their run, not per ticket")
    if m.scores_all_ones:
        scoring = training_flops(dense_macs, m.scoring_passes * synflow_rounds, 1)
    else:
        scoring = training_flops(dense_macs, m.scoring_passes, score_examples)
    if m.mask_cost == "source+scoring":
        return source_cost + scoring
    return training_flops(dense_macs, rewind_step, batch_size) + scoring


@dataclass(frozen=True)
class Saving:
    """Tickets at IMP level `level` for `source` and `targets`, found two ways.

    E-LTH: IMP on the source (its mask cost and its ticket's training), then one training per
    target of the transformed ticket. IMP each: IMP on every one of those networks (mask cost and
    training of its level-`level` ticket).
    """

    source: str
    level: int
    targets: tuple[str, ...]
    elth_flops: float
    imp_each_flops: float

    @property
    def ratio(self) -> float:
        return self.imp_each_flops / self.elth_flops if self.elth_flops else float("nan")


def _index(points: list[Point]) -> dict[tuple, Point]:
    return {(p.target, p.method, p.source, p.level): p for p in points}


def elth_savings(points: list[Point]) -> list[Saving]:
    idx = _index(points)
    pairs = sorted({(p.source, p.level) for p in points if p.method == "ett"})
    out = []
    for source, level in pairs:
        src_imp = idx.get((source, "imp", "", level))
        if src_imp is None:
            continue
        # One ticket per target (ablations transfer several ways): the default strategy's if there is one.
        per_target: dict[str, Point] = {}
        for p in sorted((p for p in points if p.method == "ett" and p.source == source and p.level == level),
                        key=lambda p: (p.strategy not in DEFAULT_STRATEGIES, p.strategy)):
            per_target.setdefault(p.target, p)
        etts = list(per_target.values())
        targets = tuple(sorted(per_target))
        imp_targets = [idx.get((t, "imp", "", level)) for t in targets]
        if any(p is None for p in imp_targets):
            continue
        elth = src_imp.total_flops + sum(p.train_flops for p in etts)
        each = src_imp.total_flops + sum(p.total_flops for p in imp_targets)
        out.append(Saving(source, level, targets, elth, each))
    return out


def dense_training_flops(points: list[Point]) -> float:
    """One full dense training of the largest member (the paper's unit for FLOPs)."""
    dense = [p.total_flops for p in points if p.method == "dense"]
    return max(dense) if dense else 0.0


@dataclass(frozen=True)
class DSTRow:
    """One network at one level: its E-LTH ticket (the ETT into it, or IMP on it when it is only a
    source) next to a dynamic sparse training run on it."""

    network: str
    elth: Point
    dst: Point


@dataclass(frozen=True)
class DSTComparison:
    """E-LTH against one DST method at one level, over the networks both cover (Section 4.5).

    E-LTH's cost is IMP on every source used (its mask cost and its own ticket's training) plus one
    training per transferred ticket; the DST method's is its training on each network.
    """

    method: str
    level: int
    rows: tuple[DSTRow, ...]
    elth_flops: float
    dst_flops: float


def dst_comparisons(points: list[Point]) -> list[DSTComparison]:
    idx = _index(points)
    out = []
    for method in DST_METHODS:
        for level in sorted({p.level for p in points if p.method == method}):
            rows, sources = [], {}
            for dst in sorted((p for p in points if p.method == method and p.level == level), key=lambda p: p.target):
                etts = sorted((p for p in points if p.method == "ett" and p.target == dst.target and p.level == level),
                              key=lambda p: (p.strategy not in DEFAULT_STRATEGIES, p.source, p.strategy))
                if etts:
                    ticket = etts[0]
                    src = idx.get((ticket.source, "imp", "", level))
                    if src is None:
                        continue
                    sources[ticket.source] = src
                else:
                    ticket = idx.get((dst.target, "imp", "", level))
                    if ticket is None or not any(p.method == "ett" and p.source == dst.target and p.level == level
                                                 for p in points):
                        continue  # neither transferred to nor a source: E-LTH has no ticket here
                    sources[dst.target] = ticket
                rows.append(DSTRow(dst.target, ticket, dst))
            if not rows:
                continue
            elth = sum(p.total_flops for p in sources.values())
            elth += sum(r.elth.train_flops for r in rows if r.elth.method != "imp")
            out.append(DSTComparison(method, level, tuple(rows), elth, sum(r.dst.total_flops for r in rows)))
    return out
