"""The method registry and the pricing of mask making."""
import pytest

from elth.experiments.compute import mask_cost_flops
from elth.experiments.spec import SpecError, Setup
from elth.flops import training_flops
from elth.methods import (
    BASELINES,
    DST_METHODS,
    METHODS,
    PRUNING_METHODS,
    TRANSFER_BASELINES,
    curve_label,
    method_rank,
)
from elth.workflows.baseline_tickets import LIKE_METHODS

PRICES = dict(dense_macs=1000, rewind_step=20, batch_size=8, source_cost=5e6, like_cost=7e6)


def test_the_lists_every_module_reads_come_from_the_registry():
    assert PRUNING_METHODS == ("magnitude", "snip", "grasp", "synflow", "random", "reinit", "snip-extra")
    assert BASELINES == PRUNING_METHODS + ("ett-reinit", "ett-random", "ett-random-reinit", "rigl", "rigl-5x", "dpf")
    assert TRANSFER_BASELINES == ("snip-extra", "ett-reinit", "ett-random", "ett-random-reinit")
    assert DST_METHODS == ("rigl", "rigl-5x", "dpf") and METHODS["rigl-5x"].dst == ("rigl", 5)
    assert LIKE_METHODS == ("reinit", "snip-extra")
    assert [method_rank(m) for m in ("dense", "imp", "ett", "magnitude", "dpf", "unknown")] == [0, 1, 2, 3, 15, 16]
    assert len({(METHODS[b].color, METHODS[b].marker) for b in BASELINES}) == len(BASELINES)


def test_a_setup_takes_only_registered_baselines():
    Setup(dataset="digits", members=("mlp_1",), levels=(1,), baselines=("snip", "dpf")).validate()
    with pytest.raises(SpecError, match="unknown baseline 'lottery'"):
        Setup(dataset="digits", members=("mlp_1",), levels=(1,), baselines=("lottery",)).validate()


def test_curve_labels():
    assert curve_label(("ett", "cifar_resnet_20", "interpolation")) == "ETT \u2190 ResNet-20 (interpolation)"
    assert curve_label(("ett", "mlp_2", "appending")) == "ETT \u2190 MLP-2"
    assert curve_label(("ett-random", "", "")) == "ETT weights, random mask"


def test_mask_cost_reads_the_scoring_settings_the_ticket_was_made_with():
    rewind = training_flops(1000, 20, 8)
    snip = mask_cost_flops("snip", **PRICES, score_examples=40, synflow_rounds=0)
    assert snip == rewind + training_flops(1000, 1, 40)
    assert mask_cost_flops("snip", **PRICES, score_examples=80, synflow_rounds=0) > snip
    assert mask_cost_flops("grasp", **PRICES, score_examples=40, synflow_rounds=0) == rewind + training_flops(1000, 3, 40)
    assert mask_cost_flops("magnitude", **PRICES, score_examples=0, synflow_rounds=0) == rewind
    assert mask_cost_flops("synflow", **PRICES, score_examples=0, synflow_rounds=50) == rewind + training_flops(1000, 50, 1)
    assert mask_cost_flops("snip-extra", **PRICES, score_examples=40, synflow_rounds=0) == 5e6 + training_flops(1000, 1, 40)
    assert mask_cost_flops("random", **PRICES, score_examples=0, synflow_rounds=0) == 7e6
    assert mask_cost_flops("ett-reinit", **PRICES, score_examples=0, synflow_rounds=0) == 5e6
    assert mask_cost_flops("rigl", **PRICES, score_examples=0, synflow_rounds=0) == 0.0
