"""`report.md` and its figures from a results directory (see `results.py` for the table).

Accuracies are means +- sample standard deviations over seeds, in percent; every cell states its
tickets' actual sparsity. Comparisons at "the same sparsity" read the other curve at the ETT ticket's
sparsity by interpolation (`aggregate.interpolate`), never by level number.
"""
from __future__ import annotations

import os
import re
import statistics
from dataclasses import fields
from pathlib import Path

from elth.analysis import LMCResult, plot_lmc
from elth.experiments.aggregate import (
    Comparison,
    Point,
    Reading,
    aggregate,
    compare_ett,
    curves,
    imp_curve,
    read_at,
    targets_of,
)
from elth.experiments.compute import dense_training_flops, dst_comparisons, elth_savings
from elth.experiments.evidence import paired_section, verdict_section
from elth.experiments.markdown import table
from elth.experiments.plots import plot_accuracy_vs_sparsity, plot_single_level
from elth.experiments.results import Row, read_lmc, read_meta, read_results
from elth.experiments.shipped import get_experiment
from elth.experiments.spec import SMOKE_SCALE, SpecError
from elth.experiments.spec_file import load_experiment_file
from elth.experiments.verdicts import claims_of
from elth.files import ACCURACY_FIGURE, REPORT_FILE, write_text_atomic
from elth.methods import DEFAULT_STRATEGIES, curve_label, short_name


def nominal_sparsity(level: int, fraction: float = 0.2) -> float:
    return 1.0 - (1.0 - fraction) ** level


def acc_cell(p: Point, with_sparsity: bool = True) -> str:
    text = f"{100 * p.accuracy:.2f}" + (f" ± {100 * p.accuracy_std:.2f}" if p.n > 1 else "")
    return text + (f" ({100 * p.sparsity:.1f}%)" if with_sparsity else "")


def delta(a: float | None, b: Reading | None) -> str:
    if a is None or b is None:
        return "n/a"
    return ("≈" if b.extrapolated else "") + f"{100 * (a - b.accuracy):+.2f}"


def reading(r: Reading | None) -> str:
    if r is None:
        return "n/a"
    return ("≈" if r.extrapolated else "") + f"{100 * r.accuracy:.2f}"


def flops(x: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {unit}"
    return f"{x:.3g}"


def evaluated_levels(points: list[Point]) -> list[int]:
    """Levels with tickets other than IMP's own (ETTs or baselines); IMP's levels when there are none."""
    levels = sorted({p.level for p in points if p.method not in ("imp", "dense")})
    return levels or sorted({p.level for p in points if p.method == "imp"})


# -- sections ---------------------------------------------------------------------------------
def _spec_seeds(meta: dict) -> int | None:
    """The number of seeds the shipped spec gives the reported scale (None for unknown experiments)."""
    try:
        setups = get_experiment(meta.get("name", "")).setups(meta.get("scale", ""))
    except SpecError:
        return None
    return max(s.seeds for s in setups)


def _header(meta: dict, rows: list[Row], points: list[Point]) -> str:
    title = meta.get("title") or (rows[0].experiment if rows else "experiment")
    out = [f"# {title}\n"]
    if meta.get("scale", rows[0].scale if rows else "") == SMOKE_SCALE:
        out.append(f"> **A plumbing check, not a result.** The `{SMOKE_SCALE}` scale trains for a few iterations on "
                   "synthetic data, so its accuracies are near chance and its verdicts say nothing about the paper.\n")
    facts = []
    if meta.get("paper"):
        facts.append(f"Reproduces: {meta['paper']}.")
    if rows:
        scale = meta.get("scale", rows[0].scale)
        datasets = ", ".join(f"`{d}`" for d in sorted({r.dataset for r in rows}))
        facts.append(f"Scale `{scale}` on {datasets}.")
    seeds = sorted({r.seed for r in rows})
    spec_seeds = _spec_seeds(meta)
    fewer = (f" (fewer than the {spec_seeds} this scale's spec asks for: the run was made with `--seeds "
             f"{len(seeds)}`)") if spec_seeds and spec_seeds > len(seeds) else ""
    facts.append(f"Seeds: {len(seeds)}{fewer}; accuracies are mean ± standard deviation over seeds, in %.")
    out.append(" ".join(facts) + "\n")
    if meta.get("description"):
        out.append(meta["description"].strip() + "\n")
    if meta.get("note"):
        out.append(f"**This scale:** {meta['note'].strip()}\n")
    for part in meta.get("parts", []):
        if part.get("imp_levels", 0) > max(part.get("levels", [0])):
            out.append(
                f"On `{part['dataset']}`, tickets are compared at IMP levels {', '.join(map(str, part['levels']))}; "
                f"IMP itself runs to level {part['imp_levels']}, so that transformed tickets, whose sparsity "
                "drifts from their source level's, can be compared with IMP at their own sparsity.\n")
    if meta.get("protocols"):
        lines = [f"- `{m}`: {p}" for m, p in meta["protocols"].items()]
        out.append("Training protocol per network (IMP rounds and every ticket's training):\n\n" + "\n".join(lines) + "\n")
    if meta.get("command"):
        out.append(f"Command: `{meta['command']}`\n")
    if meta.get("busy_seconds"):
        out.append(f"Time: {meta['busy_seconds'] / 60:.0f} min while any of its runs trained (over every invocation "
                   "and worker; runs shared with other experiments count here too).\n")
    return "\n".join(out)


def _key_findings(comparisons: list[Comparison]) -> str:
    if not comparisons:
        return ""
    rows = []
    for c in comparisons:
        rows.append([
            short_name(c.target),
            short_name(c.source) + (f" ({c.strategy})" if c.strategy not in DEFAULT_STRATEGIES else ""),
            str(c.level), f"{100 * c.sparsity:.2f}%",
            f"{100 * c.accuracy:.2f}" + (f" ± {100 * c.accuracy_std:.2f}" if c.accuracy_std else ""),
            reading(c.imp_at_sparsity), delta(c.accuracy, c.imp_at_sparsity),
            c.best_baseline or "n/a", reading(c.baseline_at_sparsity), delta(c.accuracy, c.baseline_at_sparsity),
        ])
    head = ["target", "ETT from", "level", "ETT sparsity", "ETT acc", "IMP at that sparsity", "ETT − IMP",
            "best baseline", "its acc at that sparsity", "ETT − baseline"]
    text = (
        "## ETT tickets against IMP and the best baseline at the same sparsity\n\n"
        "Each ETT ticket is compared at its own actual sparsity: IMP's and each baseline's accuracy are read "
        "there by linear interpolation along log density between their neighbouring points. ≈ marks a "
        "reading up to half an IMP level beyond the other curve's last point (its end segment extended, or "
        "its only point's value); n/a: further out. The best baseline is the one most accurate at that "
        "sparsity.\n\n"
    )
    return text + table(head, rows)


def _per_target_tables(points: list[Point], levels: list[int]) -> str:
    out = ["## Accuracy per target network\n",
           "Cells: test accuracy mean ± std (%) and, in parentheses, the tickets' actual mean sparsity. "
           "Columns are IMP levels; baselines are matched to the sparsity of the target's own IMP ticket "
           "at that level, ETT tickets keep whatever sparsity the transformation gives.\n"]
    header = ["method"] + [f"level {lv} ({100 * nominal_sparsity(lv):.2f}%)" for lv in levels]
    for target in targets_of(points):
        cs = curves(points, target)
        out.append(f"### {short_name(target)} (`{target}`)\n")
        dense = cs.get(("dense", "", ""))
        if dense:
            out.append(f"Dense: {acc_cell(dense[0], with_sparsity=False)}\n")
        rows = []
        for key, pts in cs.items():
            if key[0] == "dense":
                continue
            by_level = {p.level: p for p in pts}
            rows.append([curve_label(key)] + [acc_cell(by_level[lv]) if lv in by_level else "" for lv in levels])
        out.append(table(header, rows))
    return "\n".join(out)


def _imp_all_levels(points: list[Point]) -> str:
    imp = [p for p in points if p.method == "imp"]
    levels = sorted({p.level for p in imp})
    if not levels:
        return ""
    rows = []
    for target in targets_of(points):
        by_level = {p.level: p for p in imp if p.target == target}
        rows.append([short_name(target)] + [acc_cell(by_level[lv]) if lv in by_level else "" for lv in levels])
    return ("## IMP at every level\n\n" + table(["target"] + [f"L{lv}" for lv in levels], rows) + _imp_spread(imp))


#: The seed-to-seed spread of IMP's accuracy a cpu-scale protocol aims at (points): below the effects studied.
SPREAD_TARGET = 0.3


def _imp_spread(imp: list[Point]) -> str:
    """IMP's seed-to-seed standard deviation per network: the noise floor of every comparison."""
    multi = [p for p in imp if p.n > 1]
    if not multi:
        return ""
    parts = []
    for target in targets_of(multi):
        pts = [p for p in multi if p.target == target]
        worst = max(pts, key=lambda p: p.accuracy_std)
        parts.append(f"{short_name(target)} {100 * statistics.fmean(p.accuracy_std for p in pts):.2f} "
                     f"(at most {100 * worst.accuracy_std:.2f}, level {worst.level})")
    seeds = max(p.n for p in multi)
    return (f"\nSeed-to-seed spread of IMP's accuracy (standard deviation over {seeds} seeds, in points, mean over "
            f"levels {min(p.level for p in multi)}-{max(p.level for p in multi)}; a protocol aims at "
            f"{SPREAD_TARGET:.1f} or less): " + "; ".join(parts) + ".\n")


def _matrix(points: list[Point], levels: list[int]) -> str:
    """Source x target matrices (the layout of the paper's Table 5): ETT accuracy, IMP on the diagonal."""
    # One transfer per source and target: the default strategies (ablations compare the others per target).
    etts = [p for p in points if p.method == "ett" and p.strategy in DEFAULT_STRATEGIES]
    if not etts:
        return ""
    targets = targets_of(points)
    sources = [t for t in targets if any(p.source == t for p in etts)]
    out = ["## Source × target\n",
           "Rows: the network IMP ran on; columns: the target. Off the diagonal, the accuracy of the "
           "transformed ticket (its actual sparsity in parentheses); on the diagonal, IMP on the target "
           "itself. The second table gives ETT − IMP with IMP read at the ETT ticket's sparsity.\n"]
    idx = {(p.target, p.method, p.source, p.level): p for p in points
           if p.method != "ett" or p.strategy in DEFAULT_STRATEGIES}

    for lv in levels:
        acc_rows, gap_rows = [], []
        for s in sources:
            acc_row, gap_row = [short_name(s)], [short_name(s)]
            for t in targets:
                p = idx.get((t, "imp", "", lv)) if s == t else idx.get((t, "ett", s, lv))
                acc_row.append(acc_cell(p) if p else "")
                if s == t or p is None:
                    gap_row.append("—" if s == t else "")
                else:
                    gap_row.append(delta(p.accuracy, read_at(imp_curve(points, t), p.sparsity)))
            acc_rows.append(acc_row)
            gap_rows.append(gap_row)
        header = ["source \\ target"] + [short_name(t) for t in targets]
        out.append(f"### Level {lv} (IMP sparsity {100 * nominal_sparsity(lv):.2f}%)\n")
        out.append(table(header, acc_rows))
        out.append("ETT − IMP at matched sparsity (points):\n")
        out.append(table(header, gap_rows))
    return "\n".join(out)


def _compute(points: list[Point], levels: list[int]) -> str:
    unit = dense_training_flops(points)
    out = ["## Compute\n",
           "FLOPs count multiply-adds × 2 of conv and linear layers over unpruned weights, 3 forward passes' "
           "worth per training example. *Training* is the ticket's own training from its rewind point to "
           "the end; *mask cost* is what finding the mask cost: for IMP and ETT tickets the dense training "
           "to the rewind point plus every IMP round before the ticket's level (on the source network for "
           "ETTs); for magnitude, SNIP, GraSP and SynFlow the dense training to the rewind point plus "
           "scoring; random and reinit tickets reuse the layerwise sparsities or mask of the target's IMP "
           "ticket, so they carry its mask cost; RigL and DPF find their masks while training, so all their "
           "cost is training (DPF computes dense gradients at every step, RigL at every mask update). "
           + (f"Normalised columns divide by one full dense training of the largest member ({flops(unit)}FLOP)." if unit else "")
           + "\n"]
    top = max(levels)
    rows = []
    for target in targets_of(points):
        for key, pts in curves(points, target).items():
            for p in pts:
                if p.level != top and key[0] != "dense":
                    continue
                rows.append([short_name(target), curve_label(key), str(p.level), f"{100 * p.sparsity:.1f}%",
                             f"{p.train_steps:.0f}", flops(p.train_flops), flops(p.mask_cost_flops),
                             flops(p.total_flops), f"{p.total_flops / unit:.2f}" if unit else ""])
    out.append(f"### Cost of each ticket at level {top} (dense for reference)\n")
    out.append(table(["target", "method", "level", "sparsity", "training steps", "training FLOPs",
                      "mask cost FLOPs", "total FLOPs", "total / dense"], rows))
    savings = elth_savings(points)
    if savings:
        out.append("### The E-LTH saving: tickets for k+1 networks from one IMP run\n")
        out.append("E-LTH: IMP on the source (mask cost and training of its own ticket) plus one training "
                   "of the transformed ticket on each of the k targets. IMP each: IMP (mask cost and ticket "
                   "training) on the source and on every target. Same level, same networks.\n")
        rows = [[short_name(s.source), ", ".join(short_name(t) for t in s.targets), str(s.level),
                 flops(s.elth_flops), flops(s.imp_each_flops), f"{s.ratio:.2f}x"] for s in savings]
        out.append(table(["source", "targets", "level", "E-LTH FLOPs", "IMP-each FLOPs", "saving (IMP-each / E-LTH)"], rows))
    for c in dst_comparisons(points):
        name = curve_label((c.method, "", ""))
        out.append(f"### E-LTH against {name} at level {c.level} (Section 4.5)\n")
        out.append(f"Per network: its E-LTH ticket (transferred to it, or IMP's own where it is only a source) and "
                   f"{name} trained from scratch on it. E-LTH's total counts IMP on every source used (mask cost "
                   f"and the source ticket's training) plus one training per transferred ticket.\n")
        rows = [[short_name(r.network), curve_label(r.elth.key), acc_cell(r.elth), acc_cell(r.dst),
                 flops(r.elth.train_flops), flops(r.dst.total_flops)] for r in c.rows]
        rows.append(["**total**", "", "", "", f"**{flops(c.elth_flops)}** (with IMP)", f"**{flops(c.dst_flops)}**"])
        out.append(table(["network", "E-LTH ticket", "E-LTH accuracy", f"{name} accuracy", "E-LTH training FLOPs",
                          f"{name} FLOPs"], rows))
    return "\n".join(out)


def _lmc_section(paths: list[dict], out: Path) -> str:
    """Figure 8's analysis: per target and level, every ticket's path between its two trained copies."""
    if not paths:
        return ""


    names = {f.name for f in fields(LMCResult)}
    text = ["## Linear mode connectivity\n",
            "Two copies of each ticket are trained from its rewind weights with different data orders and "
            "augmentation; the network (1 - α) W₁ + α W₂ is evaluated at evenly spaced α (BN statistics "
            "re-estimated on training batches at every point). Instability = the largest test error along "
            "the path minus the mean of the endpoints' errors, in points; mean ± std over seeds. Figures show "
            "the first seed.\n"]
    groups: dict[tuple, list[dict]] = {}
    for d in paths:
        groups.setdefault((d["target"], d["level"]), []).append(d)
    for (target, level), group in sorted(groups.items()):
        by_ticket: dict[str, list[dict]] = {}
        for d in group:
            by_ticket.setdefault(d["label"], []).append(d)
        rows = []
        for label, ds in by_ticket.items():
            inst = [100 * d["instability"] for d in ds]
            ends = [100 * statistics.fmean(d["endpoint_errors"]) for d in ds]
            peak = [100 * max(d["test_errors"]) for d in ds]
            spread = f" ± {statistics.stdev(inst):.2f}" if len(inst) > 1 else ""
            rows.append([label, f"{100 * statistics.fmean(d['sparsity'] for d in ds):.2f}%", str(len(ds)),
                         f"{statistics.fmean(ends):.2f}", f"{statistics.fmean(peak):.2f}",
                         f"{statistics.fmean(inst):.2f}{spread}"])
        first = min(d["seed"] for d in group)
        results = [LMCResult.from_dict({k: v for k, v in d.items() if k in names})
                   for d in group if d["seed"] == first]
        figure = f"lmc_{target}_level{level}.png"
        plot_lmc(results, out / figure, title=f"{short_name(target)}, IMP level {level} "
                                              f"({100 * nominal_sparsity(level):.2f}%)")
        text.append(f"### {short_name(target)}, level {level}\n")
        text.append(f"![Test error along the linear path, {short_name(target)} level {level}]({figure})\n")
        text.append(table(["ticket", "sparsity", "seeds", "endpoints' error (%)", "max error on the path (%)",
                           "instability (points)"], rows))
    return "\n".join(text)


def _claims_of_spec_file(meta: dict) -> None:
    """An experiment read from a spec file: its claims, from the file it recorded (when still there)."""
    path = meta.get("spec_file")
    if path and not claims_of(meta.get("name", "")) and Path(path).is_file():
        load_experiment_file(path)


def write_report(results_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 rows: list[Row] | None = None) -> Path:
    """Write `report.md` and its PNG figure; return the report's path.

    `results_dir` is an experiment's output directory or a results file in one; the report goes to
    `out_dir` (default: that directory). `rows`: its results table when the caller has read it already.
    """
    source = Path(results_dir)
    results_dir = source if source.is_dir() else source.parent
    out = Path(out_dir) if out_dir else results_dir
    if rows is None:
        rows = read_results(source)
    meta = read_meta(results_dir)
    _claims_of_spec_file(meta)
    datasets = sorted({r.dataset for r in rows})
    title = meta.get("title", "")
    lmc = read_lmc(results_dir)
    parts = [_header(meta, rows, aggregate(rows)), _failures_section(meta), _diverged_section(meta),
             verdict_section(meta.get("name", rows[0].experiment), rows, lmc)]
    if len(datasets) <= 1:
        parts += _sections(rows, out, ACCURACY_FIGURE, title)
    else:
        # Networks trained on different datasets never share a curve: one set of sections each.
        for ds in datasets:
            parts.append(f"# On `{ds}`\n")
            parts += _sections([r for r in rows if r.dataset == ds], out, f"accuracy_vs_sparsity_{ds}.png",
                               f"{title} ({ds})" if title else ds)
    parts += [
        _lmc_section(lmc, out),
        "The raw rows (one per trained ticket and seed) are in `results.csv` and `results.jsonl`.\n",
    ]
    return write_text_atomic(out / REPORT_FILE, "\n".join(p for p in parts if p))


def _failures_section(meta: dict) -> str:
    """The runs that failed (a diverged training, a skipped dependant, an error): never in the tables."""
    failures = meta.get("failures") or []
    return _runs_section("Failed runs", f"{len(failures)} run(s) did not finish; their tickets are missing from "
                         "every table and figure below.", "why", failures)


def _diverged_section(meta: dict) -> str:
    """Ticket runs whose training diverged and that the experiment kept (--keep-diverged)."""
    diverged = meta.get("diverged") or []
    return _runs_section("Diverged runs", f"{len(diverged)} ticket run(s) diverged (a non-finite loss) and were kept "
                         "as diverged: they have no accuracy and are left out of every table and figure below.",
                         "what happened", diverged)


def _runs_section(heading: str, intro: str, column: str, entries: list[dict]) -> str:
    """A section listing runs of experiment.json (each a `run` and its `error`); empty when there are none."""
    if not entries:
        return ""
    rows = [[e["run"], e["error"].replace("|", "/")] for e in entries]
    return f"## {heading}\n\n{intro}\n\n" + table(["run", column], rows)


def _sections(rows: list[Row], out: Path, figure: str, title: str) -> list[str]:
    """The figure and tables of one dataset's rows."""
    points = aggregate(rows)
    levels = evaluated_levels(points)
    if len(levels) == 1:
        plot_single_level(points, out / figure, title)
        caption = f"Test accuracy at IMP level {levels[0]} per target network (mean ± std over seeds; bar labels give each ticket's actual sparsity; pruning baselines hatched)."
    else:
        plot_accuracy_vs_sparsity(points, out / figure, title)
        caption = "Test accuracy against actual sparsity per target network (mean ± std over seeds; pruning baselines dashed; dense network dotted)."
    return [
        f"![{caption}]({figure})\n\n*{caption}*\n",
        _key_findings(compare_ett(points)),
        paired_section(rows),
        _matrix(points, sorted({p.level for p in points if p.method == "ett"})),
        _per_target_tables(points, levels),
        _imp_all_levels(points),
        _compute(points, levels),
    ]


def summary_text(rows: list[Row]) -> str:
    """A plain-text table for the terminal: every target, method and compared level (and dense)."""
    datasets = sorted({r.dataset for r in rows})
    if len(datasets) > 1:
        return "\n\n".join(f"on {ds}:\n" + summary_text([r for r in rows if r.dataset == ds]) for ds in datasets)
    points = aggregate(rows)
    levels = set(evaluated_levels(points))
    entries = []
    for target in targets_of(points):
        for key, pts in curves(points, target).items():
            for p in pts:
                if p.level not in levels and key[0] != "dense":
                    continue
                acc = f"{100 * p.accuracy:.2f}" + (f" ± {100 * p.accuracy_std:.2f}" if p.n > 1 else "")
                entries.append((short_name(target), curve_label(key), p, acc))
    tw = max([len("target")] + [len(e[0]) for e in entries])
    mw = max([len("method")] + [len(e[1]) for e in entries])
    lines = [f"{'target':<{tw}}  {'method':<{mw}} {'level':>5} {'sparsity':>9} {'accuracy (%)':>15} {'seeds':>5}"]
    lines += [f"{t:<{tw}}  {m:<{mw}} {p.level:>5} {100 * p.sparsity:>8.2f}% {acc:>15} {p.n:>5}"
              for t, m, p, acc in entries]
    return "\n".join(lines)


def report_figures(report: str | os.PathLike) -> list[Path]:
    """The PNG figures a written report shows, in order."""
    path = Path(report)
    return [path.parent / name for name in dict.fromkeys(re.findall(r"\]\(([^)\s]+\.png)\)", path.read_text()))]
