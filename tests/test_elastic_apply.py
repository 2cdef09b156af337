"""Applying ETT plans: every target tensor is exactly the source tensor the plan names.

Source tickets carry values unique to every key and unit (random weights, BN affine parameters and
running statistics, a distinct `num_batches_tracked` per key, random masks with the weights zeroed
where pruned, and the dense weights before masking), so a tensor copied from the wrong unit cannot pass.
"""
import dataclasses

import pytest
import torch

from elth.data.base import DatasetInfo
from elth.elastic import PlanError, apply_plan, make_plan, transform, validate_plan
from elth.elastic.plan import model_view, skeleton_model
from elth.errors import ElthError
from elth.masks import eligible_names, full_mask, magnitude_prune
from elth.models import build_model
from elth.tickets import Ticket, TicketError, from_model, validate

CIFAR = (3, 32, 32)
SMALL = (3, 8, 8)
MNIST = (1, 28, 28)


def distinct_ticket(name: str, shape=CIFAR, classes: int = 10, seed: int = 0, density: float = 0.5) -> Ticket:
    view = model_view(name, shape, classes)
    g = torch.Generator().manual_seed(seed)
    state = {}
    for index, (key, key_shape) in enumerate(view.shapes):
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(1000 + index)
        else:
            value = torch.randn(key_shape, generator=g)
            state[key] = value.abs() + 0.1 if key.endswith("running_var") else value
    mask = {k: torch.rand(state[k].shape, generator=g) < density for k in view.prunable}
    dense = {k: state[k] for k in mask}
    for k, m in mask.items():
        state[k] = state[k] * m
    return Ticket(
        name, DatasetInfo("synthetic", shape, classes), state, mask, rewind_step=7, rewind="7it",
        protocol={"length": "10it"}, provenance={"method": "test source"}, warnings=["a source warning"],
        dense=dense,
    )


def unit_map(ticket: Ticket, target_model: str, plan) -> dict[str, str]:
    """Target key -> the source key it must equal, written out from the structures and the plan."""
    shape, classes = ticket.dataset.input_shape, ticket.dataset.num_classes
    src = model_view(ticket.model, shape, classes).structure
    tgt_view = model_view(target_model, shape, classes)
    tgt = tgt_view.structure
    out = {}
    for key, _ in tgt_view.shapes:
        out[key] = key
        for s, units in enumerate(tgt.stages):
            for j, prefix in enumerate(units):
                if key.startswith(prefix + "."):
                    out[key] = src.stages[s][plan[s][j]] + key[len(prefix):]
    return out


def assert_follows_plan(source: Ticket, result: Ticket, target_model: str, plan, full_check: bool = True) -> None:
    """Every target tensor and mask is the source's the plan names; `full_check` also runs the
    ticket validator (slow for the big models, which the small ones already cover)."""
    expected = unit_map(source, target_model, plan)
    assert set(result.state) == set(expected)
    for key, src_key in expected.items():
        a, b = result.state[key], source.state[src_key]
        assert a.dtype == b.dtype and torch.equal(a, b), f"{key} should equal source {src_key}"
    target = skeleton_model(target_model, source.dataset.input_shape, source.dataset.num_classes)
    assert set(result.mask) == set(target.prunable_names()) and set(result.state) == set(target.state_dict())
    for key, m in result.mask.items():
        assert torch.equal(m, source.mask[expected[key]]), f"mask of {key} should be that of {expected[key]}"
        assert torch.equal(result.dense[key], source.dense[expected[key]]), f"dense {key} should be {expected[key]}'s"
    assert list(result.dense) == list(result.mask)
    if full_check:
        validate(result)
    assert result.model == target_model and result.dataset == source.dataset
    assert (result.rewind_step, result.rewind, result.protocol) == (source.rewind_step, source.rewind, source.protocol)


def assert_identical(a: Ticket, b: Ticket) -> None:
    assert a.model == b.model and set(a.state) == set(b.state) and set(a.mask) == set(b.mask)
    for k in a.state:
        assert a.state[k].dtype == b.state[k].dtype and torch.equal(a.state[k], b.state[k])
    for k in a.mask:
        assert torch.equal(a.mask[k], b.mask[k]) and torch.equal(a.dense[k], b.dense[k])
    assert a.checksum() == b.checksum()


@pytest.fixture(scope="module")
def r20():
    return distinct_ticket("cifar_resnet_20")


@pytest.fixture(scope="module")
def r32():
    return distinct_ticket("cifar_resnet_32", seed=1)


@pytest.fixture(scope="module")
def r56():
    return distinct_ticket("cifar_resnet_56", seed=2)


def test_source_tickets_really_are_distinct_per_unit(r20):
    # The checks below mean something only if units do not share values.
    for suffix in ("conv1.weight", "bn1.weight", "bn2.running_mean", "bn1.num_batches_tracked"):
        values = [r20.state[f"layer1.{u}.{suffix}"] for u in range(3)]
        assert not torch.equal(values[0], values[1]) and not torch.equal(values[1], values[2])
    masks = [r20.mask[f"layer3.{u}.conv2.weight"] for u in range(3)]
    assert not torch.equal(masks[1], masks[2])
    dense = [r20.dense[f"layer3.{u}.conv2.weight"] for u in range(3)]
    assert not torch.equal(dense[1], dense[2])


def test_resnet20_to_32_appending(r20):
    result = transform(r20, "cifar_resnet_32")
    plan = ((0, 1, 2, 1, 2),) * 3
    assert result.provenance["plan"] == "0,1,2,1,2;0,1,2,1,2;0,1,2,1,2"
    assert_follows_plan(r20, result, "cifar_resnet_32", plan)
    assert torch.equal(result.state["layer2.3.conv1.weight"], r20.state["layer2.1.conv1.weight"])
    assert torch.equal(result.state["layer3.4.bn2.running_var"], r20.state["layer3.2.bn2.running_var"])
    assert torch.equal(result.mask["layer1.3.conv2.weight"], r20.mask["layer1.1.conv2.weight"])
    assert torch.equal(result.state["layer2.0.shortcut.1.running_mean"], r20.state["layer2.0.shortcut.1.running_mean"])


def test_resnet20_to_32_interpolation(r20):
    result = transform(r20, "cifar_resnet_32", order="interpolation")
    assert_follows_plan(r20, result, "cifar_resnet_32", ((0, 1, 1, 2, 2),) * 3)
    assert torch.equal(result.state["layer2.2.conv1.weight"], r20.state["layer2.1.conv1.weight"])
    assert torch.equal(
        result.state["layer3.3.bn1.num_batches_tracked"], r20.state["layer3.2.bn1.num_batches_tracked"]
    )


def test_resnet32_to_56(r32):
    result = transform(r32, "cifar_resnet_56")
    assert_follows_plan(r32, result, "cifar_resnet_56", ((0, 1, 2, 3, 4, 1, 2, 3, 4),) * 3)


@pytest.mark.parametrize(
    "kwargs, stage_plan",
    [({}, (0, 1, 2, 3, 4)), (dict(squeeze_mode="interval"), (0, 1, 3, 5, 7)),
     (dict(drop=[1, 3, 5, 7]), (0, 2, 4, 6, 8))],
)
def test_resnet56_to_32_squeezes(r56, kwargs, stage_plan):
    result = transform(r56, "cifar_resnet_32", **kwargs)
    assert_follows_plan(r56, result, "cifar_resnet_32", (stage_plan,) * 3)


def test_identity_plan_reproduces_the_ticket_bit_for_bit(r20):
    assert_identical(transform(r20, "cifar_resnet_20"), r20)
    assert_identical(apply_plan(r20, "cifar_resnet_20", ((0, 1, 2),) * 3), r20)


def test_result_does_not_share_memory_with_the_source(r20):
    result = transform(r20, "cifar_resnet_20")
    result.state["conv.weight"].add_(1.0)
    assert not torch.equal(result.state["conv.weight"], r20.state["conv.weight"])


@pytest.mark.parametrize("order, mode", [("appending", "consecutive"), ("interpolation", "interval")])
def test_stretch_then_inverse_squeeze_returns_the_original(r20, order, mode):
    for deeper in ("cifar_resnet_32", "cifar_resnet_56", "cifar_resnet_110"):
        stretched = transform(r20, deeper, order=order)
        assert_identical(transform(stretched, "cifar_resnet_20", squeeze_mode=mode), r20)


def test_provenance_records_source_and_plan(r20):
    result = transform(r20, "cifar_resnet_56", source_path="r20.safetensors")
    p = result.provenance
    assert p["source"]["model"] == "cifar_resnet_20" and p["source"]["path"] == "r20.safetensors"
    assert p["source"]["checksum"] == r20.checksum()
    assert p["source"]["provenance"] == {"method": "test source"}
    assert p["plan"] == ";".join(["0,1,2,1,2,1,2,1,2"] * 3)
    assert p["sparsity"] == {"source": r20.sparsity, "target": result.sparsity}
    assert p["strategy"]["order"] == "appending" and p["random_replicas"] is False
    assert result.warnings == ["source ticket: a source warning"]
    assert "data_seed" not in p


def test_source_data_seed_is_kept_for_training(r20):
    source = dataclasses.replace(r20, provenance={"method": "imp", "data_seed": 3})
    assert transform(source, "cifar_resnet_32").provenance["data_seed"] == 3


# --- other families ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def imagenet18():
    return distinct_ticket("imagenet_resnet_18", shape=SMALL, classes=5, density=0.3)


def test_imagenet_resnet18_to_34_and_back(imagenet18):
    result = transform(imagenet18, "imagenet_resnet_34")
    plan = ((0, 1, 1), (0, 1, 1, 1), (0, 1, 1, 1, 1, 1), (0, 1, 1))
    assert_follows_plan(imagenet18, result, "imagenet_resnet_34", plan, full_check=False)
    assert torch.equal(result.state["layer3.5.bn2.running_mean"], imagenet18.state["layer3.1.bn2.running_mean"])
    assert torch.equal(result.state["layer2.0.downsample.0.weight"], imagenet18.state["layer2.0.downsample.0.weight"])
    assert_identical(transform(result, "imagenet_resnet_18"), imagenet18)


def test_imagenet_stages_of_different_lengths(imagenet18):
    result = transform(imagenet18, "imagenet_resnet_26", order="interpolation")
    assert result.provenance["plan"] == "0,1;0,1,1;0,1,1,1;0,1,1"
    plan = ((0, 1), (0, 1, 1), (0, 1, 1, 1), (0, 1, 1))
    assert_follows_plan(imagenet18, result, "imagenet_resnet_26", plan, full_check=False)


def test_vgg13_to_19_and_back():
    vgg13 = distinct_ticket("cifar_vgg_13", shape=SMALL, seed=3)
    up = transform(vgg13, "cifar_vgg_19", order="interpolation")
    plan = ((0, 1), (0, 1), (0, 1, 1, 1), (0, 1, 1, 1), (0, 1, 1, 1))
    assert_follows_plan(vgg13, up, "cifar_vgg_19", plan, full_check=False)
    assert torch.equal(up.state["layer4.3.conv.bias"], vgg13.state["layer4.1.conv.bias"])
    assert torch.equal(up.state["layer5.2.bn.running_var"], vgg13.state["layer5.1.bn.running_var"])
    assert_identical(transform(up, "cifar_vgg_13", squeeze_mode="interval"), vgg13)
    del up, vgg13
    vgg19 = distinct_ticket("cifar_vgg_19", shape=SMALL, seed=4)
    down = transform(vgg19, "cifar_vgg_13", drop=[1, 2])
    assert_follows_plan(vgg19, down, "cifar_vgg_13", ((0, 1), (0, 1), (0, 3), (0, 3), (0, 3)), full_check=False)


def test_vgg_fc2_to_fc5_and_back():
    fc2 = distinct_ticket("cifar_vgg_13_fc2", shape=SMALL, seed=5)
    up = transform(fc2, "cifar_vgg_13_fc5")
    assert up.provenance["plan"].endswith(";0,0,0,0")
    assert_follows_plan(fc2, up, "cifar_vgg_13_fc5", ((0, 1),) * 5 + ((0, 0, 0, 0),), full_check=False)
    assert torch.equal(up.state["classifier.3.linear.weight"], fc2.state["classifier.0.linear.weight"])
    assert_identical(transform(up, "cifar_vgg_13_fc2"), fc2)
    fc5 = distinct_ticket("cifar_vgg_13_fc5", shape=SMALL, seed=6)
    down = transform(fc5, "cifar_vgg_13_fc2")
    assert_follows_plan(fc5, down, "cifar_vgg_13_fc2", ((0, 1),) * 5 + ((0,),), full_check=False)


def test_mlp2_to_4_and_back():
    mlp2 = distinct_ticket("mlp_2", shape=MNIST, seed=7)
    up = transform(mlp2, "mlp_4")
    assert_follows_plan(mlp2, up, "mlp_4", ((0, 1, 1, 1),))
    assert torch.equal(up.state["hidden.3.bias"], mlp2.state["hidden.1.bias"])
    assert torch.equal(up.state["bottleneck.weight"], mlp2.state["bottleneck.weight"])
    mlp4 = distinct_ticket("mlp_4", shape=MNIST, seed=8)
    for kwargs, plan in (({}, ((0, 1),)), (dict(drop=[1, 2]), ((0, 3),))):
        assert_follows_plan(mlp4, transform(mlp4, "mlp_2", **kwargs), "mlp_2", plan)


def test_explicit_plan_text(r20):
    result = transform(r20, "cifar_resnet_32", plan="0,2,2,1,1;0,1,2,2,2;0,1,1,1,2")
    assert_follows_plan(r20, result, "cifar_resnet_32", ((0, 2, 2, 1, 1), (0, 1, 2, 2, 2), (0, 1, 1, 1, 2)))
    assert result.provenance["strategy"] == {"kind": "explicit plan"}


# --- random replicas ------------------------------------------------------------------------------

def test_random_replicas_keep_layerwise_sparsity_and_differ_from_plain_copy(r20):
    plain = transform(r20, "cifar_resnet_56", order="interpolation")
    rand = transform(r20, "cifar_resnet_56", order="interpolation", random_replicas=True, seed=3)
    assert rand.provenance["random_replicas"] is True and rand.provenance["replica_seed"] == 3
    replicas = {f"layer{s}.{u}" for s in (1, 2, 3) for u in (2, 3, 4, 6, 7, 8)}
    for key, m in rand.mask.items():
        assert int(m.sum()) == int(plain.mask[key].sum()), key
        unit = ".".join(key.split(".")[:2])
        assert torch.equal(rand.dense[key], plain.dense[key])
        if unit in replicas:
            assert not torch.equal(m, plain.mask[key]), f"{key} is a replica and should get a new mask"
            # the copied dense rewind weights where the new mask keeps them, zero where it prunes
            assert torch.equal(rand.state[key], plain.dense[key] * m)
        else:
            assert torch.equal(m, plain.mask[key]) and torch.equal(rand.state[key], plain.state[key])
    for key in rand.state:
        if key not in rand.mask:
            assert torch.equal(rand.state[key], plain.state[key])
    assert rand.sparsity == pytest.approx(plain.sparsity, abs=0)
    validate(rand)


def test_random_replicas_are_seeded(r20):
    a = transform(r20, "cifar_resnet_32", random_replicas=True, seed=0)
    b = transform(r20, "cifar_resnet_32", random_replicas=True, seed=0)
    c = transform(r20, "cifar_resnet_32", random_replicas=True, seed=1)
    assert a.checksum() == b.checksum() != c.checksum()


def test_random_replicas_of_a_single_unit_stage():
    mlp2 = distinct_ticket("mlp_2", shape=MNIST, seed=9)
    plain = transform(mlp2, "mlp_4")
    rand = transform(mlp2, "mlp_4", random_replicas=True)
    assert torch.equal(rand.mask["hidden.1.weight"], plain.mask["hidden.1.weight"])  # first occurrence kept
    for u in (2, 3):
        key = f"hidden.{u}.weight"
        assert not torch.equal(rand.mask[key], plain.mask[key])
        assert int(rand.mask[key].sum()) == int(plain.mask[key].sum())


def test_random_replicas_select_real_rewind_values():
    """A ticket from a Kaiming-initialised model: the new masks of replicas select dense values, so
    (almost) no kept weight is zero; copying the pruned zeros instead would make ~74% of them zero."""
    model = build_model("cifar_resnet_20", CIFAR, 10, seed=0)
    mask = magnitude_prune(dict(model.named_parameters()), full_mask(model), 0.7379, eligible_names(model))
    ticket = from_model(model, DatasetInfo("cifar10", CIFAR, 10), mask)
    plain = transform(ticket, "cifar_resnet_56", order="interpolation")
    rand = transform(ticket, "cifar_resnet_56", order="interpolation", random_replicas=True, seed=1)
    replicas = {f"layer{s}.{u}" for s in (1, 2, 3) for u in (2, 3, 4, 6, 7, 8)}
    kept = zeros = masked_zeros = 0
    for key, m in rand.mask.items():
        if ".".join(key.split(".")[:2]) in replicas:
            kept += int(m.sum())
            zeros += int((rand.state[key][m] == 0).sum())
            masked_zeros += int((plain.state[key][m] == 0).sum())  # what the masked weights would give
        assert int(m.sum()) == int(plain.mask[key].sum()), key  # layerwise sparsity kept
    assert kept > 100_000 and zeros / kept < 1e-4 and masked_zeros / kept > 0.6
    assert ticket.sparsity == pytest.approx(0.7379, abs=1e-4)
    assert rand.sparsity == pytest.approx(plain.sparsity, abs=0)
    validate(rand)


def test_random_replicas_need_dense_weights(r20):
    no_dense = dataclasses.replace(r20, dense=None)
    with pytest.raises(TicketError, match="random replicas need a ticket with dense rewind weights"):
        transform(no_dense, "cifar_resnet_32", random_replicas=True)
    plain = transform(no_dense, "cifar_resnet_32")  # a plain copy does not need them
    assert plain.dense is None
    assert plain.content_hash() == transform(r20, "cifar_resnet_32").content_hash()


# --- errors -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "target, kwargs, fragment",
    [("cifar_vgg_13", {}, "one family and width"),
     ("cifar_resnet_32_32", {}, "one family and width"),
     ("cifar_resnet_32", dict(plan="0,1,2,1"), "leaving layer1.4 unfilled"),
     ("cifar_resnet_32", dict(plan="0,1,2,1,2,2"), "has 6 entries"),
     ("cifar_resnet_32", dict(plan="2,1,2,1,2"), "transition"),
     ("cifar_resnet_32", dict(plan="0,1,2,1,3"), "names source unit 3"),
     ("cifar_resnet_32", dict(plan="0,1,2,1,2;0,1,2,0,2;0,1,2,1,2"), "cannot take source unit layer2.0"),
     ("cifar_resnet_32", dict(plan="0,1,2,1,2", units=[1]), "not both"),
     ("cifar_resnet_32", dict(units=[3]), "cannot replicate unit 3"),
     ("cifar_resnet_32", dict(units=[0]), "cannot take source unit layer2.0"),
     ("cifar_resnet_14", dict(drop=[1, 2]), "drops 1, but 2 units"),
     ("cifar_resnet_14", dict(drop=[0]), "transition"),
     ("not_a_model", {}, "unknown model")],
)
def test_errors_are_one_clear_sentence(r20, target, kwargs, fragment):
    with pytest.raises(ElthError, match=fragment) as info:
        transform(r20, target, **kwargs)
    assert "\n" not in str(info.value) or target == "not_a_model"


def test_apply_plan_refuses_wrong_plans(r20):
    with pytest.raises(PlanError, match="2 stages"):
        apply_plan(r20, "cifar_resnet_32", ((0, 1, 2, 1, 2),) * 2)


def test_lone_transition_with_other_shapes_cannot_be_stretched():
    mlp1 = distinct_ticket("mlp_1", shape=MNIST, seed=10)
    with pytest.raises(PlanError, match=r"mlp_1 has no unit to replicate in stage 1: its only unit there, hidden\.0"):
        transform(mlp1, "mlp_2")
    vgg11 = skeleton_model("cifar_vgg_11", SMALL)
    with pytest.raises(PlanError, match=r"cifar_vgg_11 has no unit to replicate in stage 1: its only unit there, layer1\.0"):
        validate_plan(make_plan((1, 1, 2, 2, 2), (2, 2, 2, 2, 2)), vgg11, skeleton_model("cifar_vgg_13", SMALL))
