"""Experiment specs: expansion into runs, validation, and the shipped specs' consistency."""
import dataclasses
import functools

import pytest
import torch

from elth.elastic import PlanError, make_plan, validate_plan
from elth.errors import ElthError
from elth.experiments.shipped import EXPERIMENTS, get_experiment
from elth.experiments.spec import (
    ALL_PAIRS,
    Setup,
    SpecError,
    Transfer,
    expand,
    is_stretch,
    is_width_change,
)
from elth.models import build_model


def _setup(**kw) -> Setup:
    base = dict(dataset="synthetic_1x8x8", members=("mlp_1", "mlp_2", "mlp_3"), levels=(1, 2), seeds=2)
    base.update(kw)
    return Setup(**base)


def test_expansion_counts_all_pairs():
    s = _setup(sources=("mlp_2", "mlp_3"), baselines=("snip", "random", "reinit"))
    plan = expand(s)
    # IMP per (member, seed), one level past the deepest compared level.
    assert len(plan.imp) == 3 * 2
    assert {r.levels for r in plan.imp} == {3}
    transfers = s.expand_transfers()
    assert {(t.source, t.target) for t in transfers} == {
        ("mlp_2", "mlp_1"), ("mlp_2", "mlp_3"), ("mlp_3", "mlp_1"), ("mlp_3", "mlp_2")}
    etts = [r for r in plan.tickets if r.method == "ett"]
    baselines = [r for r in plan.tickets if r.method != "ett"]
    assert len(etts) == 4 * 2 * 2  # transfers x levels x seeds
    assert len(baselines) == 3 * 3 * 2 * 2  # members x methods x levels x seeds
    assert plan.total == 6 + 16 + 36
    assert len(set(plan.tickets)) == len(plan.tickets)


def test_baselines_at_their_own_levels():
    s = _setup(sources=("mlp_2",), levels=(2,), baseline_levels=(1, 2, 3), baselines=("snip",), seeds=1,
               imp_beyond=0)
    plan = expand(s)
    assert {r.levels for r in plan.imp} == {3}  # deep enough for every baseline level
    assert sorted({r.level for r in plan.tickets if r.method == "ett"}) == [2]
    assert sorted(r.level for r in plan.tickets if r.method == "snip" and r.target == "mlp_1") == [1, 2, 3]
    with pytest.raises(ElthError, match="baseline levels"):
        expand(_setup(baseline_levels=(0,)))


def test_explicit_transfers_and_strategies():
    s = _setup(transfers=(Transfer("mlp_3", "mlp_1", squeeze_mode="interval"),), seeds=1)
    plan = expand(s)
    etts = [r for r in plan.tickets if r.method == "ett"]
    assert [(r.source, r.target, r.squeeze_mode, r.level) for r in etts] == [
        ("mlp_3", "mlp_1", "interval", 1), ("mlp_3", "mlp_1", "interval", 2)]


def test_snip_extra_only_for_stretched_targets():
    s = _setup(sources=("mlp_2",), baselines=("snip-extra",), seeds=1, levels=(1,))
    runs = [r for r in expand(s).tickets if r.method == "snip-extra"]
    assert [(r.source, r.target) for r in runs] == [("mlp_2", "mlp_3")]
    assert is_stretch("mlp_2", "mlp_3") and not is_stretch("mlp_2", "mlp_1")


@pytest.mark.parametrize("changes, message", [
    (dict(members=()), "at least one member"),
    (dict(levels=(0,)), "positive"),
    (dict(seeds=0), "seeds"),
    (dict(sources=("mlp_9",)), "not a member"),
    (dict(baselines=("lottery",)), "unknown baseline"),
    (dict(transfers=(Transfer("mlp_2", "mlp_4"),)), "not a member"),
    (dict(transfers=(Transfer("mlp_2", "mlp_3", order="sideways"),)), "stretch order"),
    (dict(transfers="some"), "transfers must be"),
    (dict(members=("resnet_7",)), "unknown model"),
])
def test_invalid_setups_are_clear_errors(changes, message):
    with pytest.raises(ElthError, match=message):
        expand(_setup(**changes))


def test_unknown_experiment_and_scale():
    with pytest.raises(SpecError, match="unknown experiment") as e:
        get_experiment("xyz")
    assert "did you mean" not in str(e.value)
    with pytest.raises(SpecError, match="unknown experiment 'resnet_famly' \\(did you mean 'resnet_family'\\?\\)"):
        get_experiment("resnet_famly")
    with pytest.raises(SpecError, match="has no 'cpu' scale"):
        get_experiment("smoke").setups("cpu")


@functools.lru_cache(maxsize=None)
def _skeleton(model: str):
    with torch.device("meta"):
        return build_model(model, (3, 32, 32), 10, seed=None)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_shipped_specs_expand_and_every_transfer_has_a_plan(name):
    experiment = EXPERIMENTS[name]
    assert experiment.title and experiment.paper and experiment.description
    for scale, setups in experiment.scales:
        for setup in setups:
            plan = expand(setup)
            assert plan.imp and plan.total > len(plan.imp)
            for t in setup.expand_transfers():
                if is_width_change(t.source, t.target):  # a width plan: its groups must match
                    assert [g.name for g in _skeleton(t.source).width_groups()] == \
                        [g.name for g in _skeleton(t.target).width_groups()] != []
                    continue
                # Raises PlanError if the strategy cannot transform source into target.
                source, target = _skeleton(t.source), _skeleton(t.target)
                plan = make_plan(source.structure().stage_lengths, target.structure().stage_lengths,
                                 order=t.order, squeeze_mode=t.squeeze_mode)
                validate_plan(plan, source, target)


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_shipped_specs_schedules_take_effect(name):
    """No spec trains with an LR milestone past its end or a warmup longer than its training."""
    import math

    from elth.data import load_dataset
    from elth.training import preset

    # training-set sizes of the datasets not installed here (their loaders read the real files)
    sizes = {"cifar10": 50_000, "svhn": 73_257, "mnist": 60_000, "fashion_mnist": 60_000, "imagenet": 1_281_167}
    for scale, setups in EXPERIMENTS[name].scales:
        for setup in setups:
            base = setup.dataset.split("@")[0]  # "cifar10@224": CIFAR-10 resized, as many examples
            size = sizes.get(base) or load_dataset(base).num_train
            for model in setup.members:
                protocol = preset(setup.preset, setup.dataset, model).replace(**dict(setup.protocol))
                ipe = math.ceil(size / protocol.batch_size)
                assert protocol.schedule_warnings(ipe) == [], (scale, setup.dataset, model)


def test_a_resnet_with_one_block_per_stage_cannot_be_a_source():
    plan = make_plan((1, 1, 1), (2, 2, 2))
    with pytest.raises(PlanError):
        validate_plan(plan, "cifar_resnet_8_8", "cifar_resnet_14_8")


def test_paper_scale_follows_the_paper():
    fig6 = get_experiment("resnet_family").setups("paper")[0]
    assert fig6.dataset == "cifar10" and fig6.preset == "paper" and fig6.rewind is None and fig6.seeds == 3
    assert fig6.members == tuple(f"cifar_resnet_{d}" for d in (14, 20, 32, 44, 56))
    assert set(fig6.baselines) == {"snip", "grasp", "magnitude", "random", "reinit"}
    assert fig6.expand_transfers() and all(t.order == "appending" for t in fig6.expand_transfers())
    mlp, vgg = get_experiment("fc_table5").setups("paper")
    assert mlp.dataset == "mnist" and mlp.members == ("mlp_2", "mlp_3", "mlp_4") and mlp.levels == (10,)
    assert vgg.dataset == "cifar10" and vgg.members == ("cifar_vgg_13_fc2", "cifar_vgg_13_fc3", "cifar_vgg_13_fc5")
    assert len(mlp.expand_transfers()) == 6 and len(vgg.expand_transfers()) == 6
    cpu = get_experiment("fc_table5").setups("cpu")
    assert len(cpu) == 1 and cpu[0].dataset == "fashion_mnist" and cpu[0].seeds == 3 and "MLP part only" in cpu[0].note


def test_with_seeds_overrides_only_the_count():
    s = _setup()
    assert s.with_seeds(None) is s
    assert dataclasses.replace(s, seeds=5) == s.with_seeds(5)
    assert ALL_PAIRS == s.transfers
