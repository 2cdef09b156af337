"""The stacked fused layout (the members' forwards under vmap) against lone runs.

It holds what the grouped layout cannot: ViTs (LayerNorm, attention), a user's network whose
forward mixes channels (found by the probe batch), tied weights; and BN nets when asked for. After
a few steps the members agree with lone runs to rounding (vmap's batched matmuls sum in another
order: ~1e-6 relative after 40 steps of vit_2), with masks identical.
"""
import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from test_training_fused import (
    DATA_SEEDS,
    K,
    assert_same_pruned_weights,
    make_members,
    relative_distance,
    train_separately,
    train_together,
)
from torch import nn

import elth.training.fused.engine as fused_engine
from elth.data import load_dataset
from elth.masks import count
from elth.models import build_model
from elth.sparsity.dst import DPF, RigL
from elth.training import Member, Protocol, train, train_group
from elth.training.fused import FusedNetwork, FusionError
from elth.training.fused.network import GROUPED, STACKED
from elth.training.fused.sizing import cpu_members_at_once

PROTOCOL = Protocol(length="40it", batch_size=16, lr=0.02, milestones=("20it",), warmup="5it")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class NormalisedMLP(nn.Module):
    """A user's network with a parameter-free normalisation over features: per member in a lone
    run, across all members' features in a grouped copy."""

    name = "normalised_mlp"

    def __init__(self, input_shape, num_classes: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.input_shape = tuple(input_shape)
        self.fc1 = nn.Linear(int(torch.tensor(input_shape).prod()), 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x):
        h = self.fc1(x.flatten(1))
        return self.fc2(F.relu(F.layer_norm(h, h.shape[-1:])))


class TiedMLP(nn.Module):
    """One weight used twice (as weight tying in language models)."""

    name = "tied_mlp"

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.input_shape = (1, 8, 8)
        self.a = nn.Linear(64, 64)
        self.b = nn.Linear(64, 64)
        self.b.weight = self.a.weight
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(F.relu(self.b(F.relu(self.a(x.flatten(1))))))


def test_vit_members_train_stacked_as_their_lone_runs(digits, tmp_path):
    models, masks = make_members("vit_2", digits)
    assert FusedNetwork(models).layout == STACKED
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    train_separately(lone, masks, digits, PROTOCOL)
    train_together(fused, masks, digits, PROTOCOL)
    for i in range(K):
        assert relative_distance(fused[i], lone[i]) < 1e-4
        assert_same_pruned_weights(fused[i], lone[i], masks[i])
    # Half fused, then member 0 resumes alone from its fused checkpoint: where its lone run ends.
    half = copy.deepcopy(models)
    train_together(half, masks, digits, PROTOCOL, tmp_path, end_step=20)
    again = copy.deepcopy(models[0])
    train(again, digits, PROTOCOL, data_seed=DATA_SEEDS[0], mask=masks[0], out_dir=tmp_path / "m0", progress=False,
          device="cpu")
    assert relative_distance(again, lone[0]) < 1e-4


def test_a_group_of_one_stacked_member_is_its_lone_run_bit_for_bit(digits):
    models, masks = make_members("vit_2", digits)
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    train_separately(lone, masks, digits, PROTOCOL.replace(length="10it"))
    train_together(fused, masks, digits, PROTOCOL.replace(length="10it"), members_at_once=1)
    for i in range(K):
        for key, value in lone[i].state_dict().items():
            assert torch.equal(value, fused[i].state_dict()[key]), (i, key)


def test_a_forward_that_mixes_members_is_caught_by_the_probe_and_trained_stacked(digits):
    models = [NormalisedMLP(digits.info.input_shape, digits.info.num_classes, seed=i) for i in range(K)]
    x = torch.randn(K, 5, *digits.info.input_shape)
    lone_logits = torch.stack([m(x[i]) for i, m in enumerate(models)])
    # Grouped, the normalisation would run over all members' features at once: wrong logits.
    grouped = FusedNetwork(models, layout=GROUPED)
    assert not torch.allclose(grouped(x), lone_logits, atol=1e-3)
    net = FusedNetwork(models)
    assert net.layout == STACKED
    torch.testing.assert_close(net(x), lone_logits)
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    masks = [None] * K
    train_separately(lone, masks, digits, PROTOCOL)
    train_together(fused, masks, digits, PROTOCOL)
    for i in range(K):
        assert relative_distance(fused[i], lone[i]) < 1e-4


def test_batchnorm_members_keep_their_own_statistics_in_the_stacked_layout(digits, monkeypatch):
    monkeypatch.setattr(fused_engine, "FusedNetwork", functools.partial(FusedNetwork, layout=STACKED))
    models, masks = make_members("cifar_resnet_8_8", digits)
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    protocol = PROTOCOL.replace(length="10it", batch_size=8)
    train_separately(lone, masks, digits, protocol)
    train_together(fused, masks, digits, protocol)
    for i in range(K):
        # relative_distance covers the running means and variances; the step counters exactly.
        assert relative_distance(fused[i], lone[i]) < 1e-4
        assert_same_pruned_weights(fused[i], lone[i], masks[i])
        counters = [k for k in lone[i].state_dict() if k.endswith("num_batches_tracked")]
        assert counters and all(int(fused[i].state_dict()[k]) == int(lone[i].state_dict()[k]) == 10 for k in counters)


def test_tied_weights_stay_tied_in_the_stacked_layout(digits):
    models = [TiedMLP(seed=i) for i in range(K)]
    net = FusedNetwork(models)
    assert net.layout == STACKED and net.net.a.weight is net.net.b.weight
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    train_separately(lone, [None] * K, digits, PROTOCOL)
    train_together(fused, [None] * K, digits, PROTOCOL)
    for i in range(K):
        assert fused[i].a.weight is fused[i].b.weight
        assert relative_distance(fused[i], lone[i]) < 1e-4


def test_frozen_parameters_stay_frozen_in_a_fused_group(digits):
    models, masks = make_members("mlp_2", digits)
    for m in models:
        m.hidden[0].weight.requires_grad_(False)  # e.g. a fixed random projection
    assert FusedNetwork(models).layout == STACKED
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    train_separately(lone, masks, digits, PROTOCOL)
    train_together(fused, masks, digits, PROTOCOL)
    for i in range(K):
        assert torch.equal(fused[i].hidden[0].weight, models[i].hidden[0].weight * masks[i]["hidden.0.weight"])
        assert not fused[i].hidden[0].weight.requires_grad
        assert relative_distance(fused[i], lone[i]) < 1e-4


@pytest.mark.parametrize("method", [DPF, RigL])
def test_dst_members_of_a_vit_train_stacked_as_their_lone_runs(digits, method):
    protocol = PROTOCOL.replace(length="12it", milestones=(), warmup="2it")
    models = [build_model("vit_2", digits.info.input_shape, digits.info.num_classes, seed=i) for i in range(K)]
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    lone_c, fused_c = ([method(s, 12, update_every=3, end_fraction=0.75) for s in (0.5, 0.7, 0.9)] for _ in range(2))
    for i in range(K):
        train(lone[i], digits, protocol, data_seed=DATA_SEEDS[i], controller=lone_c[i], progress=False, device="cpu")
    train_group([Member(m, DATA_SEEDS[i], controller=c) for i, (m, c) in enumerate(zip(fused, fused_c))],
                digits, protocol, progress=False, device="cpu", members_at_once=K)
    for i in range(K):
        assert relative_distance(fused[i], lone[i]) < 1e-4
        # the same masks (RigL's growth ranks gradients: a tie broken otherwise by rounding may move a weight)
        agree = sum(int((a == b).sum()) for a, b in zip(fused_c[i].masks, lone_c[i].masks))
        assert agree >= 0.999 * sum(m.numel() for m in lone_c[i].masks)
        assert count(fused_c[i].mask())[0] == count(lone_c[i].mask())[0]


def test_layouts_are_checked_and_cpus_train_stacked_models_one_at_a_time(digits):
    vits = [build_model("vit_2", digits.info.input_shape, digits.info.num_classes, seed=i) for i in range(2)]
    with pytest.raises(FusionError, match="PatchEmbedding"):
        FusedNetwork(vits, layout=GROUPED)
    with pytest.raises(FusionError, match="unknown fused layout"):
        FusedNetwork(vits, layout="diagonal")
    mlp = build_model("mlp_2", digits.info.input_shape, digits.info.num_classes, seed=0)
    assert FusedNetwork([mlp, copy.deepcopy(mlp)]).layout == GROUPED
    # No convolution wider than 32 channels, yet only the stacked layout holds them: 1 on a CPU.
    assert cpu_members_at_once(TiedMLP(seed=0)) == 1
    layer_norm_net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.LayerNorm(16), nn.Linear(16, 10))
    assert cpu_members_at_once(layer_norm_net) == 1
    assert cpu_members_at_once(vits[0]) == 1


def test_an_experiment_on_vits_trains_fused_groups_with_the_results_of_training_alone(tmp_path):
    """IMP runs of two seeds and their ETT tickets (vit_1 -> vit_2) in fused groups (stacked layout):
    the same rows as one by one, accuracies to rounding (at most one test example of 128 apart)."""
    from elth.experiments import get_experiment, run_experiment
    from elth.experiments.spec import Setup, Transfer

    setup = Setup(dataset="synthetic_1x8x8_n128", members=("vit_1", "vit_2"), levels=(1,), preset="smoke",
                  rewind="2it", transfers=(Transfer("vit_1", "vit_2"),), seeds=2)
    runs = {fuse: run_experiment(get_experiment("smoke"), "smoke", root=tmp_path / f"store-{fuse}",
                                 out_dir=tmp_path / f"out-{fuse}", setups=(setup,), threads=1, progress=False, fuse=fuse)
            for fuse in (2, 1)}
    assert runs[2].fused >= 6 and runs[1].fused == 0  # 4 IMP runs (2 networks x 2 seeds) and 2 ETT tickets at least
    key = lambda r: (r.method, r.target, r.source, r.level, r.seed)
    alone = {key(r): r for r in runs[1].rows}
    assert {key(r) for r in runs[2].rows} == set(alone) and any(k[0] == "ett" for k in alone)
    for r in runs[2].rows:
        assert r.sparsity == alone[key(r)].sparsity
        assert abs(r.accuracy - alone[key(r)].accuracy) <= 1 / 128 + 1e-9, key(r)
