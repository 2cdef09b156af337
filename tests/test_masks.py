"""Masks: which layers prune, the IMP counting rule and its sparsity sequence, global magnitude pruning."""
import math

import pytest
import torch

from elth.errors import ElthError
from elth.masks import (
    PruningError,
    apply_mask,
    count,
    eligible_names,
    excluded_names,
    full_mask,
    imp_kept_counts,
    magnitude_prune,
    prune_lowest,
    sparsity,
)
from elth.models import build_model

MNIST = (1, 8, 8)


def test_default_exclusions_follow_the_paper_framework():
    mlp = build_model("mlp_2", MNIST, 10)
    assert excluded_names(mlp) == ["fc.weight"]
    assert "fc.weight" not in eligible_names(mlp)
    resnet = build_model("cifar_resnet_8")
    assert excluded_names(resnet) == []
    assert eligible_names(resnet) == resnet.prunable_names()
    assert "conv.weight" in eligible_names(resnet) and "fc.weight" in eligible_names(resnet)


def test_explicit_exclusions_replace_the_defaults():
    mlp = build_model("mlp_2", MNIST, 10)
    assert excluded_names(mlp, []) == []
    assert excluded_names(mlp, ["hidden.0", "fc.weight"]) == ["hidden.0.weight", "fc.weight"]
    with pytest.raises(ElthError, match="no such prunable weight"):
        excluded_names(mlp, ["hidden.7"])


@pytest.mark.parametrize("total", [266_200, 272_474, 1_000_003])
def test_imp_sparsity_sequence(total):
    kept = imp_kept_counts(total, 0.2, 10)
    for level, k in enumerate(kept):
        assert abs((1 - k / total) - (1 - 0.8**level)) <= level / total
    assert round(100 * (1 - kept[6] / total), 2) == 73.79
    assert round(100 * (1 - kept[10] / total), 2) == 89.26
    assert kept[1] == total - math.ceil(0.2 * total)


def test_magnitude_prune_counts_excluded_layers_in_remaining():
    model = build_model("mlp_2", MNIST, 10, seed=1)
    weights = dict(model.named_parameters())
    names = eligible_names(model)
    mask = full_mask(model)
    _, total = count(mask)
    expected = imp_kept_counts(total, 0.2, 10)
    for level in range(1, 11):
        mask = magnitude_prune(weights, mask, 0.2, names)
        assert count(mask)[0] == expected[level]
        assert bool(mask["fc.weight"].all())
    assert abs(sparsity(mask) - (1 - 0.8**10)) < 1e-4


def test_magnitude_prune_removes_the_smallest_magnitudes_globally():
    model = build_model("mlp_2", MNIST, 10, seed=2)
    weights = {k: v.detach() for k, v in model.named_parameters()}
    names = eligible_names(model)
    mask = magnitude_prune(weights, full_mask(model), 0.3, names)
    pruned = torch.cat([weights[n][~mask[n]].abs() for n in names])
    kept = torch.cat([weights[n][mask[n]].abs() for n in names])
    assert pruned.max() <= kept.min()
    # Global, not per layer: layers end up with different sparsities.
    per_layer = {n: 1 - mask[n].float().mean().item() for n in names}
    assert max(per_layer.values()) - min(per_layer.values()) > 0.01


def test_pruned_weights_stay_pruned_at_the_next_level():
    model = build_model("mlp_1", MNIST, 10, seed=0)
    weights = {k: v.detach().clone() for k, v in model.named_parameters()}
    names = eligible_names(model)
    first = magnitude_prune(weights, full_mask(model), 0.2, names)
    # Make the pruned weights large: they must not come back.
    for n in names:
        weights[n][~first[n]] = 100.0
    second = magnitude_prune(weights, first, 0.2, names)
    for n in names:
        assert not bool((second[n] & ~first[n]).any())


def test_pruning_more_than_remains_eligible_is_a_clear_error():
    model = build_model("mlp_1", MNIST, 10)
    weights = dict(model.named_parameters())
    with pytest.raises(PruningError, match="remain outside the excluded layers"):
        magnitude_prune(weights, full_mask(model), 0.5, ["fc.weight"])


def test_ties_are_broken_by_position():
    mask = {"a": torch.ones(4, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)}
    scores = {"a": torch.ones(4), "b": torch.ones(4)}
    new = prune_lowest(scores, mask, 5, ["a", "b"])
    assert new["a"].tolist() == [False] * 4 and new["b"].tolist() == [False, True, True, True]


def test_apply_mask_zeroes_pruned_weights():
    model = build_model("mlp_1", MNIST, 10)
    mask = magnitude_prune(dict(model.named_parameters()), full_mask(model), 0.5, eligible_names(model))
    apply_mask(model, mask)
    params = dict(model.named_parameters())
    for n, m in mask.items():
        assert bool((params[n][~m] == 0).all())
        assert int((params[n] != 0).sum()) == int(m.sum())
