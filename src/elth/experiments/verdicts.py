"""The paper's claims each experiment tests, the effect measured for each, and a verdict.

A claim's effect is a paired difference over seeds (`elth.analysis.stats`), oriented so that larger
supports the claim: e.g. ETT - IMP for "ETT is on par with IMP", the instability of far-depth ETT
tickets minus that of close-depth ones for "close-depth tickets are more stable". Where a claim
covers several tickets (transfers, levels), their differences are averaged within each seed first,
so the pairing stays within seeds. The rule (`RULE`):

- confirmed: at least `MIN_SEEDS` seeds and the whole 95% interval above -margin;
- contradicted: at least `MIN_SEEDS` seeds and the whole interval below -margin;
- inconclusive otherwise (the interval straddles -margin, or too few seeds to tell); where it
  straddles, the reason adds how many seeds would decide it if the mean and spread held
  (`stats.seeds_to_decide`), to plan a rerun with `--seeds`.

The margin is 0 for claims that one thing beats another and, for claims that ETT tickets are "on par"
with IMP, the largest shortfall the claim allows: the paper's own 0.21 points for Table 5, half a
point (`ON_PAR_MARGIN`) where the paper says "nearly the same" without a number.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable

from elth.analysis.stats import (
    MOST_SEEDS,
    PairedDifference,
    format_difference,
    paired_difference,
    pooled,
    seeds_to_decide,
)
from elth.elastic.strategies import APPENDING
from elth.experiments.aggregate import aggregate, curves, targets_of
from elth.experiments.paired import IMP_KEY, SeedPoints, compare_paired, ett_comparisons
from elth.experiments.results import Row
from elth.experiments.spec import is_width_change
from elth.methods import DEFAULT_STRATEGIES, CurveKey, names
from elth.models import parse_model_name

MIN_SEEDS = 3
#: the largest shortfall (accuracy fraction) an "on par" claim without a number of its own allows
ON_PAR_MARGIN = 0.005
#: Table 5: "E-LTH yields less than 0.21% accuracy drop in all cases"
TABLE5_MARGIN = 0.0021
#: Figure 3: "ETTs are among the best at all non-trivial sparsity levels (>= 50%)"
NON_TRIVIAL_SPARSITY = 0.5
#: Figure 6's family starts at ResNet-14, the shallowest CIFAR ResNet with more than one block per stage; a
#: scale may add shallower networks (ResNet-8 as a target only), judged apart from the figure's range
FIG6_MIN_DEPTH = 14
#: Figure 3's controls: the ETT ticket re-initialised, under a shuffled mask, and both ("among the best");
#: SNIP-extra (the source's masks on the shared blocks, SNIP on the extra ones) is a claim of its own
CONTROLS = names("ett-control")
SNIP_EXTRA = "snip-extra"

RULE = (f"Verdict rule: each claim's effect is a per-seed paired difference (seeds pair the runs that "
        f"share an IMP run; several tickets are averaged within a seed first), oriented so that larger "
        f"supports the claim, with a 95% t-interval over seeds. **Confirmed** when there are at least "
        f"{MIN_SEEDS} seeds and the whole interval lies above −margin; **contradicted** when there are at "
        f"least {MIN_SEEDS} seeds and the whole interval lies below −margin; **inconclusive** otherwise "
        f"(with, where the interval straddles −margin, the seeds that would decide it if its mean and "
        f"spread held: an estimate to plan a rerun, not a result). "
        f"The margin is 0 for \"beats\" claims; for \"on par\" claims it is the shortfall the claim allows "
        f"(Table 5: the paper's 0.21 points; elsewhere {100 * ON_PAR_MARGIN:.1f} points).")

Measure = Callable[[list[Row], list[dict]], tuple[PairedDifference | None, int]]


@dataclass(frozen=True)
class Claim:
    experiment: str
    where: str  # "Fig. 6", "Table 5"
    statement: str
    effect: str  # what the difference is, in words
    margin: float  # accuracy fraction (or instability fraction)
    measure: "NamedMeasure"


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    difference: PairedDifference | None
    cells: int  # how many comparisons were pooled
    outcome: str  # confirmed / contradicted / inconclusive
    reason: str


def decide(d: PairedDifference | None, margin: float) -> tuple[str, str]:
    """The rule of the module docstring: (outcome, why)."""
    if d is None:
        return "inconclusive", "not measured by this run"
    iv = d.interval
    if iv.n < MIN_SEEDS or iv.low is None:
        return "inconclusive", f"only {iv.n} seed{'s' if iv.n != 1 else ''}; {MIN_SEEDS} needed"
    bound = f"{-100 * margin:+.2f}" if margin else "0"
    if iv.low > -margin:
        return "confirmed", f"interval above {bound}"
    if iv.high < -margin:
        return "contradicted", f"interval below {bound}"
    needed = seeds_to_decide(iv, -margin)
    plan = (f"; ~{needed} seeds would decide it at this mean and spread" if needed is not None
            else f"; more than {MOST_SEEDS} seeds at this mean and spread")
    return "inconclusive", f"interval contains {bound}{plan}"


# -- measures ---------------------------------------------------------------------------------
def _by_dataset(rows: list[Row]) -> list[list[Row]]:
    return [[r for r in rows if r.dataset == ds] for ds in sorted({r.dataset for r in rows})]


def _pool(diffs: list[PairedDifference | None]) -> tuple[PairedDifference | None, int]:
    present = [d for d in diffs if d is not None]
    return pooled(present), len(present)


def ett_vs_imp(rows: list[Row], lmc: list[dict]) -> tuple[PairedDifference | None, int]:
    """ETT - IMP at each ETT ticket's sparsity, every transfer (default strategies) and level."""
    diffs = []
    for part in _by_dataset(rows):
        diffs += [imp.difference for imp, _ in ett_comparisons(part) if imp.key[2] in DEFAULT_STRATEGIES]
    return _pool(diffs)


def ett_vs_imp_from_depth(min_depth: int) -> Measure:
    """`ett_vs_imp` over the transfers whose source and target are both at least `min_depth` deep."""
    def measure(rows: list[Row], lmc: list[dict]) -> tuple[PairedDifference | None, int]:
        deep = [r for r in rows if _depth(r.target) >= min_depth and (not r.source or _depth(r.source) >= min_depth)]
        return ett_vs_imp(deep, lmc)
    return measure


def matched_ett_vs_imp(rows: list[Row], lmc: list[dict]) -> tuple[PairedDifference | None, int]:
    """Sparsity-matched ETT - IMP at the same sparsity (beyond the paper), every transfer and level."""
    diffs = []
    for part in _by_dataset(rows):
        diffs += [imp.difference for imp, _ in ett_comparisons(part) if imp.key[2].endswith(" matched")]
    return _pool(diffs)


def ett_vs_best_baseline(rows: list[Row], lmc: list[dict], min_sparsity: float = 0.0):
    """ETT - the most accurate baseline at each ETT ticket's sparsity."""
    diffs = []
    for part in _by_dataset(rows):
        diffs += [b.difference for _, b in ett_comparisons(part)
                  if b is not None and b.key[2] in DEFAULT_STRATEGIES and b.sparsity >= min_sparsity]
    return _pool(diffs)


def _only(methods: tuple[str, ...], rows: list[Row]) -> list[Row]:
    """The ETT, IMP and dense rows and those of `methods` (so that the best baseline is one of them)."""
    return [r for r in rows if r.method in ("ett", "imp", "dense") or r.method in methods]


def ett_vs_controls(rows: list[Row], lmc: list[dict]):
    return ett_vs_best_baseline(_only(CONTROLS, rows), lmc, min_sparsity=NON_TRIVIAL_SPARSITY)


def ett_vs_snip_extra(rows: list[Row], lmc: list[dict]):
    return ett_vs_best_baseline(_only((SNIP_EXTRA,), rows), lmc)


def ett_vs_dpf(rows: list[Row], lmc: list[dict]):
    return ett_vs_best_baseline(_only(("dpf",), rows), lmc)


def _blocks(strategy: str, order: str) -> tuple[int, ...] | None:
    """(1, 2) from 'appending 1,2' (order 'appending'); None for other strategies or random variants."""
    m = re.fullmatch(rf"{order} ([0-9,]+)", strategy)
    return tuple(int(i) for i in m.group(1).split(",")) if m else None


def _ett_curve_pairs(rows: list[Row], pick) -> list[PairedDifference | None]:
    """Per target: for each pair (A, B) of ETT curves `pick(the target's ETT curve keys)` gives, A
    minus B (read at A's sparsity, seed by seed), at every level of A."""
    diffs = []
    for part in _by_dataset(rows):
        points = aggregate(part)
        seeds = SeedPoints.of(part)
        for target in targets_of(points):
            cs = curves(points, target)
            for a, b in pick([k for k in cs if k[0] == "ett"]):
                diffs += [compare_paired(seeds, target, a, p.level, b).difference for p in cs[a]]
    return diffs


def _strategy_pairs(rows: list[Row], order: str, pick) -> list[PairedDifference | None]:
    """`_ett_curve_pairs` over the ETT curves of one stretch order or drop, `pick` given their blocks."""
    def blocks(keys: list[CurveKey]):
        options = {k: _blocks(k[2], order) for k in keys}
        return pick({k: v for k, v in options.items() if v})
    return _ett_curve_pairs(rows, blocks)


def _more_vs_first(options: dict[CurveKey, tuple[int, ...]]):
    if not options:
        return []
    most = max(options, key=lambda k: (len(options[k]), k))
    first = [k for k, v in options.items() if v == (1,)]
    return [(most, first[0])] if first and len(options[most]) > 1 else []


def replicate_more(rows: list[Row], lmc: list[dict]):
    """Replicating the most unique blocks (appending) minus replicating only the first."""
    return _pool(_strategy_pairs(rows, APPENDING, _more_vs_first))


def _earliest_vs_latest(options):
    if len(options) < 2:
        return []
    size = max(len(v) for v in options.values())
    same = {k: v for k, v in options.items() if len(v) == size}
    early, late = min(same, key=lambda k: sum(same[k])), max(same, key=lambda k: sum(same[k]))
    return [(early, late)] if early != late else []


def replicate_earlier(rows: list[Row], lmc: list[dict]):
    """Appending the earliest blocks minus appending the latest ones (as many blocks)."""
    return _pool(_strategy_pairs(rows, APPENDING, _earliest_vs_latest))


def _others_vs_earliest(options):
    if len(options) < 2:
        return []
    earliest = min(options, key=lambda k: (sum(options[k]), k))
    return [(k, earliest) for k in options if k != earliest]


def drop_earliest_hurts(rows: list[Row], lmc: list[dict]):
    """Each other way of dropping blocks minus dropping the earliest ones."""
    return _pool(_strategy_pairs(rows, "drop", _others_vs_earliest))


def _width_pairs(rows: list[Row], a: str, b: str) -> list[PairedDifference | None]:
    """Per target and source: the width-ETT curve of strategy `a` minus that of strategy `b`."""
    def same_source(keys: list[CurveKey]):
        by = {(k[1], k[2]): k for k in keys}
        return [(by[s, a], by[s, b]) for s in sorted({k[1] for k in keys}) if (s, a) in by and (s, b) in by]
    return _ett_curve_pairs(rows, same_source)


def width_rescaled_beats_plain(rows: list[Row], lmc: list[dict]):
    """Widening with the copies' outgoing weights divided minus widening without (beyond the paper)."""
    return _pool(_width_pairs(rows, "widen", "widen plain"))


def width_ranked_beats_first(rows: list[Row], lmc: list[dict]):
    """Narrowing to the units of largest kept-weight norm minus keeping the first units (beyond the paper)."""
    return _pool(_width_pairs(rows, "narrow norm", "narrow first"))


def _width_default(rows: list[Row]) -> list[Row]:
    """IMP, dense, the baselines and the width-ETT rows of the default width strategies, relabelled as
    default strategies, so that the on-par and baseline comparisons read them."""
    out = []
    for r in rows:
        if r.strategy.startswith(("widen", "narrow")):  # width ETTs and the baselines made from them
            if r.strategy not in ("widen", "narrow norm"):
                continue
            r = dataclasses.replace(r, strategy=DEFAULT_STRATEGIES[0])
        elif r.method == "ett":
            continue  # depth ETTs are other claims'
        out.append(r)
    return out


def width_ett_vs_imp(rows: list[Row], lmc: list[dict]):
    """Width-ETT (widen, narrow by norm) - IMP at each ticket's sparsity (beyond the paper)."""
    return ett_vs_imp(_width_default(rows), lmc)


def width_ett_vs_best_baseline(rows: list[Row], lmc: list[dict]):
    """Width-ETT (widen, narrow by norm) - the most accurate baseline at each ticket's sparsity."""
    return ett_vs_best_baseline(_width_default(rows), lmc)


def _depth(model: str) -> int:
    return parse_model_name(model).depth


def lmc_close_more_stable(rows: list[Row], lmc: list[dict]):
    """Instability of the ETT ticket from the farthest depth minus that from the closest, per target,
    level and seed."""
    groups: dict[tuple, dict[str, dict[int, float]]] = {}
    for d in lmc:
        if d.get("method") == "ett":
            groups.setdefault((d["target"], d["level"]), {}).setdefault(d["source"], {})[d["seed"]] = d["instability"]
    diffs = []
    for (target, _), by_source in groups.items():
        if len(by_source) < 2:
            continue
        gap = lambda s: abs(_depth(s) - _depth(target))
        close, far = min(by_source, key=gap), max(by_source, key=gap)
        if gap(close) != gap(far):
            diffs.append(paired_difference(by_source[far], by_source[close]))
    return _pool(diffs)


def simpler_dataset_costs_most(rows: list[Row], lmc: list[dict]):
    """(IMP - ticket moved from the simpler dataset) minus (IMP - ticket moved from the harder one),
    depth unchanged; the simpler dataset is the one whose dense networks are more accurate."""
    parts = {part[0].dataset: part for part in _by_dataset(rows)}
    if len(parts) != 2:
        return None, 0
    dense = {ds: sum(r.accuracy for r in p if r.method == "dense") / max(1, sum(r.method == "dense" for r in p))
             for ds, p in parts.items()}
    simpler, harder = sorted(parts, key=lambda ds: -dense[ds])
    # ETT - IMP for tickets moved into each dataset from the other one, per target and level.
    def moved_into(ds: str, other: str) -> dict[tuple, PairedDifference]:
        points = aggregate(parts[ds])
        seeds = SeedPoints.of(parts[ds])
        out = {}
        for target in targets_of(points):
            for k, pts in curves(points, target).items():
                if k[0] == "ett" and k[2] == f"from {other}":
                    for p in pts:
                        d = compare_paired(seeds, target, k, p.level, IMP_KEY).difference
                        if d is not None:
                            out[(target, k[1], p.level)] = d
        return out

    into_harder, into_simpler = moved_into(harder, simpler), moved_into(simpler, harder)
    diffs = []
    for cell in sorted(set(into_harder) & set(into_simpler)):
        a, b = into_simpler[cell], into_harder[cell]
        # drop into harder - drop into simpler = (ETT - IMP) into simpler - (ETT - IMP) into harder
        diffs.append(paired_difference(dict(zip(a.seeds, a.differences)), dict(zip(b.seeds, b.differences))))
    return _pool(diffs)


# -- the measures a claim can name (in a spec file too) ----------------------------------------
def _any_transfer(setups) -> bool:
    return any(s.expand_transfers() for s in setups)


def _any_width(setups) -> bool:
    return any(is_width_change(t.source, t.target) for s in setups for t in s.expand_transfers())


def _makes(method: str):
    return lambda setups: any(method in s.baselines for s in setups)


@dataclass(frozen=True)
class MeasureKind:
    """A measure a claim names: what it compares, its parameters and what runs it needs."""

    name: str
    doc: str
    make: Callable[..., Measure]
    #: parameter name -> (type, what it is)
    params: dict = field(default_factory=dict)
    #: (whether a spec's setups make the runs it reads, what they lack otherwise)
    needs: tuple[Callable, str] | None = None


MEASURE_KINDS: dict[str, MeasureKind] = {k.name: k for k in (
    MeasureKind("ett_vs_imp", "ETT - IMP at each ETT ticket's sparsity, every transfer (default strategies) and level",
                lambda min_depth=None: ett_vs_imp if min_depth is None else ett_vs_imp_from_depth(min_depth),
                {"min_depth": (int, "only transfers whose source and target have at least this depth")},
                (_any_transfer, "a transfer")),
    MeasureKind("matched_ett_vs_imp", "sparsity-matched ETT - IMP at the same sparsity", lambda: matched_ett_vs_imp,
                needs=(lambda setups: any(s.match_sparsity for s in setups), "match_sparsity = true")),
    MeasureKind("ett_vs_best_baseline", "ETT - the most accurate baseline at each ETT ticket's sparsity",
                lambda: ett_vs_best_baseline, needs=(lambda setups: any(s.baselines for s in setups), "baselines")),
    MeasureKind("ett_vs_controls", "ETT - the best control (re-initialised, random mask, both) at >= 50% sparsity",
                lambda: ett_vs_controls,
                needs=(lambda setups: any(set(CONTROLS) & set(s.baselines) for s in setups),
                       f"a control among the baselines ({', '.join(CONTROLS)})")),
    MeasureKind("ett_vs_snip_extra", "ETT - SNIP-extra at each ETT ticket's sparsity", lambda: ett_vs_snip_extra,
                needs=(_makes(SNIP_EXTRA), f"{SNIP_EXTRA} among the baselines")),
    MeasureKind("ett_vs_dpf", "ETT - DPF at each ETT ticket's sparsity", lambda: ett_vs_dpf,
                needs=(_makes("dpf"), "dpf among the baselines")),
    MeasureKind("replicate_more", "appending the most blocks - appending the first block", lambda: replicate_more,
                needs=(lambda setups: any(t.units for s in setups for t in s.expand_transfers()),
                       "transfers with units to replicate")),
    MeasureKind("replicate_earlier", "appending the earliest blocks - appending the latest ones",
                lambda: replicate_earlier,
                needs=(lambda setups: any(t.units for s in setups for t in s.expand_transfers()),
                       "transfers with units to replicate")),
    MeasureKind("drop_earliest_hurts", "each other drop - dropping the earliest blocks", lambda: drop_earliest_hurts,
                needs=(lambda setups: any(t.drop for s in setups for t in s.expand_transfers()),
                       "transfers with units to drop")),
    MeasureKind("lmc_close_more_stable", "instability of the far-depth ETT - that of the close-depth ETT",
                lambda: lmc_close_more_stable,
                needs=(lambda setups: any(s.lmc_levels for s in setups), "lmc_levels")),
    MeasureKind("width_ett_vs_imp", "width-ETT (widen, narrow by norm) - IMP at each ticket's sparsity",
                lambda: width_ett_vs_imp, needs=(lambda setups: _any_width(setups), "a transfer that changes the width")),
    MeasureKind("width_ett_vs_best_baseline", "width-ETT (widen, narrow by norm) - the most accurate baseline",
                lambda: width_ett_vs_best_baseline,
                needs=(lambda setups: _any_width(setups) and any(s.baselines for s in setups),
                       "a transfer that changes the width, and baselines")),
    MeasureKind("width_rescaled_beats_plain", "widening with outgoing weights divided by the copies - without",
                lambda: width_rescaled_beats_plain,
                needs=(lambda setups: any(not t.rescale for s in setups for t in s.expand_transfers()),
                       "a widening transfer with rescale = false")),
    MeasureKind("width_ranked_beats_first", "narrowing to the units of largest norm - keeping the first units",
                lambda: width_ranked_beats_first,
                needs=(lambda setups: any(t.width_squeeze == "first" for s in setups for t in s.expand_transfers()),
                       "a narrowing transfer with width_squeeze = \"first\"")),
    MeasureKind("simpler_dataset_costs_most",
                "accuracy drop into the harder dataset - drop into the simpler one (tickets moved across datasets)",
                lambda: simpler_dataset_costs_most,
                needs=(lambda setups: any(t.source_dataset for s in setups for t in s.expand_transfers()),
                       "transfers with a source_dataset")),
)}


@dataclass(frozen=True)
class NamedMeasure:
    """A registered measure with its parameters, as a claim (or a spec file) names it."""

    name: str
    params: tuple[tuple[str, object], ...] = ()

    def __call__(self, rows: list[Row], lmc: list[dict]) -> tuple[PairedDifference | None, int]:
        return MEASURE_KINDS[self.name].make(**dict(self.params))(rows, lmc)


def measure(name: str, **params) -> NamedMeasure:
    return NamedMeasure(name, tuple(sorted(params.items())))




#: The claims of every experiment loaded in this process, in the order they were loaded: those of the
#: shipped experiments (`shipped.py` loads them with the package) and of users' spec files.
_CLAIMS: list[Claim] = []


def register_claims(claims: list[Claim], experiment: str | None = None) -> None:
    """The claims of an experiment read from its spec file (those of an earlier read of it replaced)."""
    names = {c.experiment for c in claims} | ({experiment} if experiment else set())
    _CLAIMS[:] = [c for c in _CLAIMS if c.experiment not in names] + list(claims)


def all_claims() -> list[Claim]:
    return list(_CLAIMS)


def claims_of(experiment: str) -> list[Claim]:
    return [c for c in _CLAIMS if c.experiment == experiment]


def judge(claim: Claim, rows: list[Row], lmc: list[dict]) -> Verdict:
    d, cells = claim.measure(rows, lmc)
    outcome, reason = decide(d, claim.margin)
    return Verdict(claim, d, cells, outcome, reason)


def verdicts_for(experiment: str, rows: list[Row], lmc: list[dict]) -> list[Verdict]:
    return [judge(c, rows, lmc) for c in claims_of(experiment)]


def verdict_rows(verdicts: list[Verdict], link: str | None = None) -> list[list[str]]:
    out = []
    for v in verdicts:
        seeds = str(v.difference.interval.n) if v.difference is not None else "0"
        row = [v.claim.where, v.claim.statement, v.claim.effect, format_difference(v.difference), seeds,
               str(v.cells), f"**{v.outcome}** ({v.reason})"]
        out.append(row + ([link] if link else []))
    return out


VERDICT_HEADER = ["paper", "claim", "effect (points)", "mean [95% interval]", "seeds", "tickets pooled", "verdict"]
