"""Every method a ticket or a trained sparse network can come from, in one registry.

A `Method` says what the rest of elth needs to know about it: its name (in specs, results and on
the command line), its label and plot style, its kind, what it needs, and how the cost of finding
its mask is priced (`experiments.compute.mask_cost_flops`). Adding a method is one entry here plus
its algorithm (a scorer in `sparsity`, a controller in `sparsity.dst`, a branch in
`workflows.baseline_tickets`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from elth.elastic.strategies import ORDERS, SQUEEZE_MODES
from elth.models import families, parse_model_name

Kind = Literal["dense", "imp", "ett", "ett-control", "pruning", "dst"]
#: The kinds of method compared with ETTs (drawn dashed, listed in a setup's `baselines`).
BASELINE_KINDS: tuple[Kind, ...] = ("pruning", "ett-control", "dst")

#: How the FLOPs of finding a method's mask are counted:
#: "imp"             dense training to the rewind point plus every earlier IMP round (IMP's own levels);
#: "source"          those of the IMP ticket it was transformed from (ETTs and their controls);
#: "like"            those of the target's IMP ticket, whose layerwise sparsities or mask it reuses;
#: "rewind+scoring"  dense training to the rewind point plus the scoring passes;
#: "source+scoring"  the source IMP ticket's cost plus the scoring passes (SNIP on the extra units);
#: "training"        none apart from training: the mask is found while training (DST).
MaskCost = Literal["imp", "source", "like", "rewind+scoring", "source+scoring", "training"]


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    kind: Kind
    mask_cost: MaskCost
    #: forward+backward passes per scoring example (estimates: SNIP one gradient; GraSP a gradient,
    #: then a Hessian-gradient product by double back-propagation); SynFlow: per round, on one input
    scoring_passes: int = 0
    #: SynFlow: `synflow_rounds` rounds on a single all-ones input instead of the scoring examples
    scores_all_ones: bool = False
    #: scores on scoring examples drawn from the training set
    needs_examples: bool = False
    #: made from a `--like` ticket (its mask, or the source ticket it stretches)
    needs_like: bool = False
    #: made from each transfer (an ETT's source ticket) rather than from the target's IMP ticket
    from_transfer: bool = False
    #: (DST algorithm, training length multiplier) of the dynamic sparse training methods
    dst: tuple[str, int] | None = None
    #: colour and marker of its curve (IMP and the ETTs have styles of their own)
    color: str = "#555555"
    marker: str = "."

    @property
    def is_baseline(self) -> bool:
        """Compared with ETTs: drawn dashed, listed in a setup's `baselines`."""
        return self.kind in BASELINE_KINDS


_REGISTRY = (
    Method("dense", "Dense", "dense", "imp"),
    Method("imp", "IMP", "imp", "imp"),
    Method("ett", "ETT", "ett", "source", from_transfer=True),
    Method("magnitude", "Magnitude", "pruning", "rewind+scoring", color="#7f7f7f", marker="o"),
    Method("snip", "SNIP", "pruning", "rewind+scoring", scoring_passes=1, needs_examples=True,
           color="#e377c2", marker="^"),
    Method("grasp", "GraSP", "pruning", "rewind+scoring", scoring_passes=3, needs_examples=True,
           color="#bcbd22", marker="v"),
    Method("synflow", "SynFlow", "pruning", "rewind+scoring", scoring_passes=1, scores_all_ones=True,
           color="#17becf", marker="D"),
    Method("random", "Random", "pruning", "like", color="#8c564b", marker="x"),
    Method("reinit", "Reinit", "pruning", "like", needs_like=True, color="#9467bd", marker="+"),
    Method("snip-extra", "SNIP-extra", "pruning", "source+scoring", scoring_passes=1, needs_examples=True,
           needs_like=True, from_transfer=True, color="#d62728", marker="*"),
    # hues of their own, apart from the ETT curves' (tab10) that share their panels
    Method("ett-reinit", "ETT mask, reinit", "ett-control", "source", from_transfer=True,
           color="#5254a3", marker="1"),
    Method("ett-random", "ETT weights, random mask", "ett-control", "source", from_transfer=True,
           color="#d6616b", marker="2"),
    Method("ett-random-reinit", "Random mask, reinit", "ett-control", "source", from_transfer=True,
           color="#8ca252", marker="3"),
    Method("rigl", "RigL", "dst", "training", dst=("rigl", 1), color="#7b4173", marker="h"),
    Method("rigl-5x", "RigL-5x", "dst", "training", dst=("rigl", 5), color="#637939", marker="H"),
    Method("dpf", "DPF", "dst", "training", dst=("dpf", 1), color="#843c39", marker="p"),
)
METHODS: dict[str, Method] = {m.name: m for m in _REGISTRY}


def method(name: str) -> Method:
    """The registered method `name` (KeyError for an unknown one: callers validate user input first)."""
    return METHODS[name]


def names(*kinds: Kind, from_transfer: bool | None = None) -> tuple[str, ...]:
    """Names of the methods of the given kinds (all kinds if none), in registry order."""
    return tuple(m.name for m in _REGISTRY if (not kinds or m.kind in kinds)
                 and (from_transfer is None or m.from_transfer == from_transfer))


#: Methods a setup may list as baselines, in the order results and plots list them.
BASELINES = names(*BASELINE_KINDS)
#: The methods of `elth prune` (`workflows.baseline_tickets.prune_ticket`).
PRUNING_METHODS = names("pruning")
#: Dynamic sparse training methods: trained from scratch, no ticket to start from.
DST_METHODS = names("dst")
#: Baselines made from each transfer (paper's Figure 3) rather than from the target's IMP ticket.
TRANSFER_BASELINES = tuple(n for n in BASELINES if METHODS[n].from_transfer)

#: (method, source, strategy): one curve of a results panel.
CurveKey = tuple[str, str, str]
#: Strategies left out of curve labels (the defaults: appending stretches, consecutive squeezes).
DEFAULT_STRATEGIES = (ORDERS[0], SQUEEZE_MODES[0])


def method_rank(name: str) -> int:
    """Registry order (dense, IMP, ETT, then the baselines); unknown methods last."""
    order = list(METHODS)
    return order.index(name) if name in METHODS else len(order)


def curve_label(key: CurveKey) -> str:
    """'IMP', 'ETT ← ResNet-20 (interpolation)', 'SNIP', ..."""
    name, source, strategy = key
    label = METHODS[name].label if name in METHODS else name
    if source:
        label += f" \u2190 {short_name(source)}"
    if strategy and strategy not in DEFAULT_STRATEGIES:
        label += f" ({strategy})"
    return label


def short_name(model: str) -> str:
    """'cifar_resnet_20_8' -> 'ResNet-20 (w8)', 'mlp_3' -> 'MLP-3', 'cifar_vgg_13_fc5' -> 'VGG-13-5',
    'vit_4_32' -> 'ViT-4 (w32)'; other families' names as they are."""
    try:
        spec = parse_model_name(model)
    except Exception:
        return model
    return families.family(spec.kind).short_name(spec, model)
