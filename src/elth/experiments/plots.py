"""Figures like the paper's: test accuracy vs sparsity, one panel per target network.

IMP is a solid black line, ETTs from each source solid lines with their own marker and colour,
pruning baselines dashed, the dense network a dotted horizontal line with its seed spread shaded.
Every point sits at its tickets' actual mean sparsity; error bars are one standard deviation over
seeds. The x axis is density on a log scale, decreasing to the right (sparsity increasing), labelled
in sparsity, so IMP's levels fall evenly spaced. With a single sparsity level (Table 5) a panel is a
bar chart instead.
"""
from __future__ import annotations

import math
import os
import textwrap
import warnings
from pathlib import Path

from elth.experiments.aggregate import Point, curves, targets_of
from elth.methods import (
    BASELINES,
    DEFAULT_STRATEGIES,
    METHODS,
    CurveKey,
    curve_label,
    short_name,
)
from elth.files import atomic_path

_ETT_STYLES = [("tab:blue", "s"), ("tab:orange", "^"), ("tab:green", "D"), ("tab:red", "v"),
               ("tab:purple", "P"), ("tab:brown", "X"), ("tab:cyan", "<"), ("tab:olive", ">")]


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shown(strategy: str) -> str:
    """The strategy as curve labels show it ("" for the default ones: a source keeps one colour
    whether it is stretched or squeezed)."""
    return "" if strategy in DEFAULT_STRATEGIES else strategy


def _ett_curves(points: list[Point], targets: list[str]) -> list[tuple[str, str]]:
    """Every (source, shown strategy) of the ETT curves, shallow sources first: one colour each, in every panel."""
    keys = {(p.source, _shown(p.strategy)) for p in points if p.method == "ett"}
    return sorted(keys, key=lambda k: (targets.index(k[0]) if k[0] in targets else 99, k[0], k[1]))


def _style(key: CurveKey, sources: list[tuple[str, str]]) -> dict:
    method, source, strategy = key
    if method == "imp":
        return dict(color="black", marker="o", linestyle="-", linewidth=2.2, markersize=6, zorder=5)
    if method == "ett":
        color, marker = _ETT_STYLES[sources.index((source, _shown(strategy))) % len(_ETT_STYLES)]
        return dict(color=color, marker=marker, linestyle="-", linewidth=1.8, markersize=6, zorder=4)
    m = METHODS.get(method)
    color, marker = (m.color, m.marker) if m is not None else ("#555555", ".")
    return dict(color=color, marker=marker, linestyle="--", linewidth=1.3, markersize=5, zorder=3)


def _sparsity_ticks(ax, lo: float, hi: float) -> None:
    """Ticks at IMP's nominal densities 0.8^k inside [lo, hi], labelled as sparsity (%)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ticks = [0.8 ** k for k in range(0, 80) if lo <= 0.8 ** k <= hi]
    if len(ticks) > 10:
        ticks = ticks[:: math.ceil(len(ticks) / 10)]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda d, _: f"{100 * (1 - d):.1f}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.tick_params(axis="x", labelsize=8, labelrotation=45)


def _panel_grid(n: int):
    ncols = 2 if n == 4 else min(3, n)
    nrows = math.ceil(n / ncols)
    return nrows, ncols


def plot_accuracy_vs_sparsity(points: list[Point], path: str | os.PathLike, title: str = "") -> Path:
    """One panel per target, accuracy (%) against sparsity; writes a PNG and returns its path."""
    plt = _matplotlib()
    targets = targets_of(points)
    sources = _ett_curves(points, targets)
    nrows, ncols = _panel_grid(len(targets))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.2 * nrows), squeeze=False)
    handles: dict[str, object] = {}
    for i, target in enumerate(targets):
        ax = axes[i // ncols][i % ncols]
        cs = curves(points, target)
        densities = []
        for key, pts in cs.items():
            if key[0] == "dense":
                p = pts[0]
                line = ax.axhline(100 * p.accuracy, color="0.35", linestyle=":", linewidth=1.5, zorder=1)
                if p.accuracy_std > 0:
                    ax.axhspan(100 * (p.accuracy - p.accuracy_std), 100 * (p.accuracy + p.accuracy_std),
                               color="0.5", alpha=0.12, zorder=0)
                handles.setdefault("Dense", line)
                continue
            x = [1 - p.sparsity for p in pts]
            densities += x
            y = [100 * p.accuracy for p in pts]
            err = [100 * p.accuracy_std for p in pts]
            cont = ax.errorbar(x, y, yerr=err, capsize=3, label=curve_label(key), **_style(key, sources))
            handles.setdefault(curve_label(key), cont)
        ax.set_xscale("log")
        if densities:
            hi, lo = max(densities) * 1.12, min(densities) / 1.12
            ax.set_xlim(hi, lo)
            _sparsity_ticks(ax, lo, hi)
        ax.set_title(short_name(target), fontsize=11)
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
    for j in range(len(targets), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    bottom = _legend(fig, handles, ncols, _legend_order(sources))
    fig.tight_layout(rect=(0, bottom, 1, 0.95 if title else 1))
    return _save(fig, path, plt)


def _legend(fig, handles: dict, ncols: int, order: list[str]) -> float:
    """A figure legend under the panels, in the order dense, IMP, ETTs, baselines; returns its height."""
    labels = sorted(handles, key=lambda k: order.index(k) if k in order else len(order))
    # As many columns as the widest label allows across the figure (about 0.07 in per character at
    # font size 9, plus the marker), at most two per panel column.
    widest = max((len(k) for k in labels), default=1)
    fits = int(fig.get_figwidth() / (0.07 * widest + 0.6))
    per_row = max(1, min(max(3, 2 * ncols), fits))
    rows = math.ceil(len(labels) / per_row)
    # The legend gets room of its own below the panels (the figure grows), so that many curves
    # do not squash the panels.
    room = 0.28 * rows + 0.15
    fig.set_figheight(fig.get_figheight() + room)
    height = room / fig.get_figheight()
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=min(per_row, len(labels)),
               fontsize=9, frameon=False)
    return height


def _legend_order(sources: list[tuple[str, str]]) -> list[str]:
    keys = [("dense", "", ""), ("imp", "", "")] + [("ett", s, strategy) for s, strategy in sources]
    keys += [(m, "", "") for m in BASELINES]
    return [curve_label(k) for k in keys]


def plot_single_level(points: list[Point], path: str | os.PathLike, title: str = "") -> Path:
    """One bar chart per target: every method's accuracy (mean +- std) at the one sparsity level.

    Each bar's label gives its tickets' actual sparsity; pruning baselines are hatched.
    """
    plt = _matplotlib()
    targets = targets_of(points)
    sources = _ett_curves(points, targets)
    # Networks that are only sources (IMP alone) get no panel when others have tickets to compare.
    compared = [t for t in targets if any(p.target == t and p.method not in ("imp", "dense") for p in points)]
    targets = compared or targets
    nrows, ncols = _panel_grid(len(targets))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 5.0 * nrows), squeeze=False)
    level = max((p.level for p in points if p.method == "ett" or p.method in BASELINES), default=None)
    label_lines = 0
    for i, target in enumerate(targets):
        ax = axes[i // ncols][i % ncols]
        cs = curves(points, target)
        labels, values, errs, colors, hatches, spars = [], [], [], [], [], []
        dense = None
        for key, pts in cs.items():
            if key[0] == "dense":
                dense = pts[0]
                continue
            chosen = [p for p in pts if p.level == level]
            if not chosen:
                continue
            p = chosen[0]
            style = _style(key, sources)
            labels.append(curve_label(key))
            values.append(100 * p.accuracy)
            errs.append(100 * p.accuracy_std)
            colors.append(style["color"])
            hatches.append("//" if style["linestyle"] == "--" else "")
            spars.append(p.sparsity)
        xs = list(range(len(values)))
        bars = ax.bar(xs, values, yerr=errs, capsize=3, color=colors, edgecolor="black", linewidth=0.6)
        for b, h in zip(bars, hatches):
            b.set_hatch(h)
        tops = [v + e for v, e in zip(values, errs)]
        # A bar far below the others (e.g. a method that collapsed on some seed) would squash the
        # axis: the axis spans the others and that bar runs off its bottom, its value written there.
        low = _far_below(values)
        if dense is not None:
            ax.axhline(100 * dense.accuracy, color="0.2", linestyle=":", linewidth=1.5)
            ax.annotate(f"dense {100 * dense.accuracy:.2f}", (1.0, 100 * dense.accuracy), xycoords=("axes fraction", "data"),
                        xytext=(-2, 2), textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.2",
                        annotation_clip=True)  # not drawn when the dense line is off the axis
        bottom = None
        if values:
            kept = [i for i in xs if i not in low]
            lo = min(values[i] - errs[i] for i in kept)
            hi = max([tops[i] for i in kept] + ([100 * dense.accuracy] if dense else []))
            pad = max(0.5, 0.15 * (hi - lo))
            bottom = lo - pad
            ax.set_ylim(bottom, hi + pad)
        for x, v, top in zip(xs, values, tops):
            if x in low:
                ax.annotate(f"{v:.2f}\n\u2193 below\nthe axis", (x, bottom), xytext=(0, 3), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7, color=colors[x], fontweight="bold")
            else:
                ax.annotate(f"{v:.2f}", (x, top), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(xs)
        ticks = [textwrap.fill(lab, 16) + f"\n{100 * sp:.1f}%" for lab, sp in zip(labels, spars)]
        label_lines = max([label_lines] + [t.count("\n") + 1 for t in ticks])
        ax.set_xticklabels(ticks, rotation=35, ha="right", rotation_mode="anchor", fontsize=8)
        ax.set_title(short_name(target), fontsize=11)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, axis="y", alpha=0.3)
    for j in range(len(targets), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    # Each row: the panel, plus room for the rotated, wrapped bar labels under it.
    fig.set_size_inches(fig.get_figwidth(), nrows * (3.6 + 0.75 + 0.16 * label_lines) + (0.4 if title else 0))
    with warnings.catch_warnings():
        # Very long labels can defeat tight_layout; the saved image is cropped to its contents anyway.
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout(rect=(0, 0, 1, 0.95 if title else 1))
    return _save(fig, path, plt, crop=True)


def _far_below(values: list[float], points: float = 15.0) -> set[int]:
    """Indices of values more than `points` below the median (never all of them)."""
    if len(values) < 3:
        return set()
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    low = {i for i, v in enumerate(values) if v < median - points}
    return low if len(low) < len(values) else set()


def _save(fig, path, plt, crop: bool = False) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:  # one writer when several ranks run this
        fig.savefig(tmp, dpi=110, format=path.suffix.lstrip(".") or "png",
                    **({"bbox_inches": "tight", "pad_inches": 0.15} if crop else {}))
    plt.close(fig)
    return path
