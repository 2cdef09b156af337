"""Draws docs/figures/width_plan.png: one width plan of elth, a tiny MLP ticket widened and narrowed.

    python docs/figures/width_plan.py

The plans come from `elth.elastic.width.make_width_plan` on a ticket of `mlp_1_4` (one hidden layer
of 4 units, 3 inputs): widened to 6 units (units copied in order; the copies' outgoing weights
divided by their copy count) and narrowed to 2 (the units of largest kept-weight norm kept), for
the first initialisation seed whose best-ranked units are not simply the first ones.
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from elth.data.base import synthetic  # noqa: E402
from elth.elastic.width import make_width_plan  # noqa: E402
from elth.models import build_model  # noqa: E402
from elth.tickets import from_model  # noqa: E402


def ticket(seed: int):
    data = synthetic(input_shape=(1, 1, 3), num_classes=2, num_train=8, num_test=2, seed=0)
    model = build_model("mlp_1_4", (1, 1, 3), 2, seed=seed)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(1)
    mask = {n: torch.rand(params[n].shape, generator=g) < 0.6 for n in model.prunable_names()}
    return from_model(model, data.info, mask)


def draw(ax, source_units: int, plan: tuple[int, ...], title: str, note) -> None:
    ys = lambda n: [i - (n - 1) / 2 for i in range(n)]
    src, tgt = ys(source_units), ys(len(plan))
    copies = {u: plan.count(u) for u in set(plan)}
    for j, u in enumerate(plan):
        ax.plot([0, 1], [src[u], tgt[j]], color="#1f77b4" if plan.index(u) == j else "#ff7f0e", lw=1.5)
        ax.text(1.08, tgt[j], note(j, u, copies[u]), va="center", fontsize=8)
    ax.scatter([0] * source_units, src, s=120, color="#555555", zorder=3)
    ax.scatter([1] * len(plan), tgt, s=120, color="#2ca02c", zorder=3)
    for i, y in enumerate(src):
        ax.text(-0.08, y, f"unit {i}", ha="right", va="center", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-0.5, 1.9)
    ax.axis("off")


def main() -> None:
    # the first initialisation whose best-ranked units are not simply the first ones (an illustration)
    t = next(t for t in map(ticket, range(100)) if make_width_plan(t, "mlp_1_2")["hidden.0"] != (0, 1))
    wide, narrow = make_width_plan(t, "mlp_1_6")["hidden.0"], make_width_plan(t, "mlp_1_2")["hidden.0"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    draw(axes[0], 4, wide, "widen mlp_1_4 -> mlp_1_6:\ntarget unit j <- source unit j mod 4",
         lambda j, u, c: f"<- {u}: rows + mask copied, outgoing x 1/{c}" if c > 1 else f"<- {u}")
    draw(axes[1], 4, narrow, "narrow mlp_1_4 -> mlp_1_2:\nthe units of largest kept-weight norm",
         lambda j, u, c: f"<- {u}")
    fig.tight_layout()
    out = Path(__file__).with_suffix(".png")
    fig.savefig(out, dpi=130)
    print(f"wrote {out} (widen {wide}, narrow {narrow})")


if __name__ == "__main__":
    main()
