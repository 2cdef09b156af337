"""Figure 8 of the paper: test error along the linear path between two trained copies of a ticket."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from elth.analysis.lmc import LMCResult
from elth.files import atomic_path

_COLORS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:cyan", "tab:olive"]
_MARKERS = ["s", "^", "D", "v", "P", "X", "<", ">"]


def plot_lmc(results: Sequence[LMCResult], path: str | os.PathLike, title: str | None = None) -> Path:
    """Test error (%) vs interpolation coefficient, one line per result, written as an image to `path`.

    IMP tickets are drawn in black, others in their own colour and marker; train errors on the fixed
    subset, where measured, are dashed lines of the same style. The legend gives each instability.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        raise ValueError("nothing to plot: no results")
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    others = 0
    for r in results:
        if r.label.startswith("IMP"):
            style = dict(color="black", marker="o", linewidth=2.2, zorder=5)
        else:
            style = dict(color=_COLORS[others % len(_COLORS)], marker=_MARKERS[others % len(_MARKERS)],
                         linewidth=1.8, zorder=4)
            others += 1
        markevery = max(1, len(r.alphas) // 10)
        ax.plot(r.alphas, [100 * e for e in r.test_errors], markersize=5, markevery=markevery,
                label=f"{r.label} (instability {100 * r.instability:.2f} pp)", **style)
        if r.train_errors:
            ax.plot(r.alphas, [100 * e for e in r.train_errors], linestyle="--", markersize=4,
                    markevery=markevery, alpha=0.7, label=f"{r.label}, train subset", **style)
    ax.set_xlabel("interpolation coefficient \u03b1")
    with_train = any(r.train_errors for r in results)
    ax.set_ylabel("error (%): test solid, train dashed" if with_train else "test error (%)")
    ax.set_xlim(0, 1)
    ax.grid(True, alpha=0.3)
    if title is None:
        models = sorted({r.model for r in results})
        bn = sorted({r.bn if r.bn_layers else "no BN" for r in results})
        title = f"Linear mode connectivity: {', '.join(models)} ({', '.join(bn)})"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:  # one writer when several ranks run this
        fig.savefig(tmp, dpi=150, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
