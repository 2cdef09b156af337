"""The experiments elth ships: the paper's Figure 6 and Table 5, a smoke test and the demo.

At `cpu` scale the runs are sized for a 2-core CPU on Fashion-MNIST (a few hours at most); each
setup's `note` says what differs from the paper. Lengths there are in iterations at batch 128
(469 iterations = one Fashion-MNIST epoch).
"""
from __future__ import annotations

from elth.experiments.spec import Experiment, Setup, SpecError

RESNETS_PAPER = tuple(f"cifar_resnet_{d}" for d in (14, 20, 32, 44, 56))
FIG6_BASELINES = ("magnitude", "snip", "grasp", "random", "reinit")

RESNET_FAMILY = Experiment(
    name="resnet_family",
    title="ResNet family: ETTs between depths vs IMP and pruning baselines",
    paper="Figure 6 (Section 4.2)",
    description=(
        "IMP with rewinding on every ResNet of the family; each IMP ticket is stretched (appending) or "
        "squeezed (dropping the latest blocks) to every other depth and trained, and compared with IMP on "
        "that depth and with SNIP, GraSP, one-shot magnitude, random (IMP's layerwise sparsities, shuffled) "
        "and reinit (IMP's mask, fresh weights), all matched to the sparsity of the target's IMP ticket."
    ),
    scales=(
        ("paper", (Setup(
            dataset="cifar10", members=RESNETS_PAPER, levels=tuple(range(1, 11)), preset="paper",
            baselines=FIG6_BASELINES, seeds=3,
            note="CIFAR-10, Table 4 protocol (160 epochs, rewind to iteration 1000), IMP levels 1-10 "
                 "(20% to 89.26% sparsity), three seeds.",
        ),)),
        ("cpu", (Setup(
            dataset="fashion_mnist",
            members=("cifar_resnet_8_8", "cifar_resnet_14_8", "cifar_resnet_20_8"),
            sources=("cifar_resnet_14_8", "cifar_resnet_20_8"),
            levels=(2, 4, 6), preset="paper",
            protocol=(("length", "300it"), ("milestones", ("225it",))),
            rewind="30it", baselines=FIG6_BASELINES, seeds=2,
            note="Fashion-MNIST instead of CIFAR-10; ResNet-8/14/20 at width 8 instead of ResNet-14...56 at "
                 "width 16; 300 iterations per training (LR x0.1 at 225) instead of 160 epochs, rewinding to "
                 "iteration 30 (10% of training, as 1000 of 62,560 iterations is an early point); tickets "
                 "compared at IMP levels 2, 4, 6 (up to 73.8%); two seeds. ResNet-8 has one block "
                 "per stage, which cannot be stretched (a stage's only block is its downsampling "
                 "transition), so it is a target only.",
        ),)),
        ("smoke", (Setup(
            dataset="synthetic_3x8x8_n128",
            members=("cifar_resnet_8_8", "cifar_resnet_14_8"), sources=("cifar_resnet_14_8",),
            levels=(1, 2), preset="smoke", rewind="2it", baselines=FIG6_BASELINES, seeds=1,
            note="Synthetic 8x8 images, width-8 ResNets, 12 iterations per training: a plumbing check only.",
        ),)),
    ),
)

MLPS = ("mlp_2", "mlp_3", "mlp_4")
VGG_FC = ("cifar_vgg_13_fc2", "cifar_vgg_13_fc3", "cifar_vgg_13_fc5")
TABLE5_BASELINES = ("magnitude", "snip", "grasp", "random", "reinit")

#: Table 5 compares at level 10 only; transformed MLP tickets land several points of sparsity away
#: from it (stretching copies the denser 300x300 layers, squeezing drops them), so the baselines are
#: also made at levels 9-12 and IMP runs to level 12: every ETT ticket is then compared with IMP and
#: the baselines at its own sparsity, by interpolation.
TABLE5_LEVELS = dict(levels=(10,), baseline_levels=(9, 10, 11, 12), imp_beyond=0)

FC_TABLE5 = Experiment(
    name="fc_table5",
    title="E-LTH on fully connected layers: MLP-2/3/4 and VGG-13 with 2/3/5 FC layers",
    paper="Appendix C, Table 5",
    description=(
        "IMP tickets at level 10 (89.26% sparsity) on each network; every network's ticket is transformed "
        "to every other one (hidden layers replicated by appending or dropped from the end) and trained. "
        "The paper's Table 5 reports the source x target matrix with IMP on the diagonal; the pruning "
        "baselines, matched to the sparsity of the target's IMP tickets at levels 9 to 12 (around the "
        "transformed tickets' sparsities), are added for reference."
    ),
    scales=(
        ("paper", (
            Setup(dataset="mnist", members=MLPS, preset="paper", baselines=TABLE5_BASELINES, seeds=3,
                  note="MLP part: MNIST with the MLP preset (40 epochs, no rewinding).", **TABLE5_LEVELS),
            Setup(dataset="cifar10", members=VGG_FC, preset="paper", baselines=TABLE5_BASELINES, seeds=3,
                  note="VGG part: CIFAR-10 with Table 4's protocol (160 epochs, rewind to iteration 200).",
                  **TABLE5_LEVELS),
        )),
        ("cpu", (Setup(
            dataset="fashion_mnist", members=MLPS, preset="paper",
            protocol=(("length", "3ep"), ("milestones", ("2ep",))), baselines=TABLE5_BASELINES, seeds=3,
            note="MLP part only (the VGG-13 part needs a GPU: run it at paper scale); Fashion-MNIST instead "
                 "of MNIST; 3 epochs per training instead of 40, with the LR divided by 10 for the last "
                 "one (the paper's 40 constant-LR epochs converge; 3 would end mid-descent and leave "
                 "seed-to-seed noise of a point or more); otherwise the MLP preset (plain SGD, LR 0.1, "
                 "batch 128, no rewinding).",
            **TABLE5_LEVELS,
        ),)),
        ("smoke", (Setup(
            dataset="synthetic_1x8x8_n128", members=MLPS, levels=(2,), preset="smoke",
            baselines=("snip", "random"), seeds=1,
            note="MLP part only, on synthetic 8x8 images with 12 iterations per training.",
        ),)),
    ),
)

SMOKE = Experiment(
    name="smoke",
    title="Smoke test: IMP, ETTs and two baselines on tiny MLPs",
    paper="none (a quick end-to-end check of the pipeline)",
    description="IMP on MLP-1/2/3, MLP-2's tickets squeezed to MLP-1 and stretched to MLP-3, SNIP and random baselines.",
    scales=(
        ("smoke", (Setup(
            dataset="synthetic_1x8x8_n128", members=("mlp_1", "mlp_2", "mlp_3"), sources=("mlp_2",),
            levels=(1, 2), preset="smoke", baselines=("snip", "random"), seeds=2,
            note="Synthetic 8x8 images, 12 iterations per training.",
        ),)),
    ),
)

#: the demo's setup; `elth demo` swaps the dataset (Fashion-MNIST when installed, else digits)
DEMO = Experiment(
    name="demo",
    title="Demo: one IMP run, its tickets stretched and squeezed to other depths",
    paper="Section 4 and Appendix C in miniature",
    description=(
        "IMP with rewinding on MLP-2; its tickets squeezed to MLP-1 and stretched to MLP-3, each trained "
        "and compared with IMP run on that depth itself and with random and SNIP tickets of the same "
        "sparsity."
    ),
    scales=(
        ("cpu", (Setup(
            dataset="fashion_mnist", members=("mlp_1", "mlp_2", "mlp_3"), sources=("mlp_2",),
            levels=(3, 6), preset="paper", protocol=(("length", "300it"),), rewind="30it",
            baselines=("snip", "random"), seeds=1,
            note="300 iterations per training (plain SGD, LR 0.1, batch 128), rewinding to iteration 30, "
                 "tickets compared at IMP levels 3 and 6 (48.8% and 73.8%), one seed: minutes on a CPU.",
        ),)),
        ("smoke", (Setup(
            dataset="synthetic_1x8x8_n128", members=("mlp_1", "mlp_2", "mlp_3"), sources=("mlp_2",),
            levels=(1, 2), preset="smoke", rewind="2it", baselines=("snip", "random"), seeds=1,
            note="Synthetic 8x8 images, 12 iterations per training.",
        ),)),
    ),
)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (RESNET_FAMILY, FC_TABLE5, SMOKE, DEMO)}


def get_experiment(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise SpecError(f"unknown experiment {name!r}; the experiments are: {', '.join(EXPERIMENTS)} "
                        "(`elth experiment --list` describes them)") from None
