"""Model definitions: parameter counts, names, and the exact elastic structure of every family."""
import pytest
import torch

from elth.models import UnknownModelError, build_model, parse_model_name

SMALL = (3, 32, 32)


@pytest.mark.parametrize(
    "name,shape,classes,params",
    [
        ("cifar_resnet_20", SMALL, 10, 272_474),
        ("cifar_resnet_56", SMALL, 10, 855_770),
        ("imagenet_resnet_18", (3, 224, 224), 1000, 11_689_512),
        ("imagenet_resnet_34", (3, 224, 224), 1000, 21_797_672),
    ],
)
def test_parameter_counts(name, shape, classes, params):
    model = build_model(name, shape, classes)
    assert sum(p.numel() for p in model.parameters()) == params


def test_imagenet_resnet_keys_match_torchvision_layout():
    keys = set(build_model("imagenet_resnet_18", (3, 64, 64), 10).state_dict())
    for k in [
        "conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer1.1.bn2.num_batches_tracked",
        "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var", "layer4.1.conv2.weight",
        "fc.weight", "fc.bias",
    ]:
        assert k in keys
    assert "layer1.0.downsample.0.weight" not in keys  # stage 1 keeps resolution and width


@pytest.mark.parametrize(
    "name,lengths",
    [
        ("cifar_resnet_8", (1, 1, 1)),
        ("cifar_resnet_20", (3, 3, 3)),
        ("cifar_resnet_56_8", (9, 9, 9)),
        ("imagenet_resnet_18", (2, 2, 2, 2)),
        ("imagenet_resnet_26", (2, 3, 4, 3)),
        ("imagenet_resnet_34", (3, 4, 6, 3)),
        ("cifar_vgg_11", (1, 1, 2, 2, 2)),
        ("cifar_vgg_13", (2, 2, 2, 2, 2)),
        ("cifar_vgg_16", (2, 2, 3, 3, 3)),
        ("cifar_vgg_19", (2, 2, 4, 4, 4)),
        ("cifar_vgg_13_fc2", (2, 2, 2, 2, 2, 1)),
        ("cifar_vgg_13_fc5", (2, 2, 2, 2, 2, 4)),
        ("mlp_2", (2,)),
        ("mlp_4", (4,)),
        ("vit_3", (3,)),
        ("vit_5_96", (5,)),
    ],
)
def test_elastic_structure_partitions_the_state(name, lengths):
    model = build_model(name, (3, 32, 32), 10)
    s = model.structure()
    assert s.stage_lengths == lengths
    owners: dict[str, list] = {}
    prefixes = [("stem", p) for p in s.stem] + [("head", p) for p in s.head]
    prefixes += [(("unit", i, j), p) for i, st in enumerate(s.stages) for j, p in enumerate(st)]
    for key in model.state_dict():
        owners[key] = [who for who, p in prefixes if key.startswith(p + ".")]
    assert all(len(v) == 1 for v in owners.values()), {k: v for k, v in owners.items() if len(v) != 1}
    # Every unit owns something, and units of one stage after the transition share their layout.
    for i, stage in enumerate(s.stages):
        layouts = []
        for j in range(len(stage)):
            keys = s.unit_keys(model.state_dict(), i, j)
            assert keys, (i, j)
            layouts.append([(s.relative(k), model.state_dict()[k].shape) for k in keys])
        assert all(lay == layouts[1] for lay in layouts[1:])


def test_transitions_are_the_resolution_or_width_changes():
    m = build_model("cifar_resnet_20")
    sd = m.state_dict()
    assert "layer2.0.shortcut.0.weight" in sd and "layer2.1.shortcut.0.weight" not in sd
    assert m.layer2[0].conv1.stride == (2, 2) and m.layer2[1].conv1.stride == (1, 1)
    mlp = build_model("mlp_3", (1, 28, 28), 10)
    assert mlp.hidden[0].weight.shape == (300, 784) and mlp.hidden[1].weight.shape == (300, 300)
    assert mlp.bottleneck.weight.shape == (100, 300) and mlp.fc.weight.shape == (10, 100)


@pytest.mark.parametrize(
    "name,shape", [("cifar_resnet_14", (1, 28, 28)), ("cifar_vgg_13", (1, 8, 8)), ("mlp_2", (3, 32, 32)),
                   ("cifar_vgg_16_fc3", (3, 32, 32)), ("imagenet_resnet_18", (3, 32, 32)), ("vit_2", (1, 28, 28)),
                   ("vit_2_32", (1, 8, 8)), ("vit_1", (3, 64, 64))]
)
def test_any_input_shape_and_class_count(name, shape):
    model = build_model(name, shape, 7).eval()
    assert model(torch.randn(2, *shape)).shape == (2, 7)


def test_initialisation_is_seeded_and_follows_the_framework():
    a, b = build_model("cifar_resnet_8", seed=3), build_model("cifar_resnet_8", seed=3)
    c = build_model("cifar_resnet_8", seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.conv.weight, c.conv.weight)
    bn = a.layer1[0].bn1.weight.detach(), a.layer1[0].bn1.bias.detach()
    assert float(bn[0].min()) >= 0 and float(bn[0].max()) < 1 and float(bn[1].abs().max()) == 0
    w = build_model("cifar_resnet_56", seed=0).layer3[1].conv1.weight.detach()  # Kaiming normal, fan_in
    assert abs(float(w.std()) - (2 / (64 * 9)) ** 0.5) < 0.005


def test_prunable_and_excluded_defaults():
    r = build_model("cifar_resnet_20")
    assert "conv.weight" in r.prunable_names() and "layer2.0.shortcut.0.weight" in r.prunable_names()
    assert r.default_excluded() == []
    assert build_model("cifar_vgg_13").default_excluded() == ["fc.weight"]
    assert build_model("mlp_2", (1, 28, 28)).default_excluded() == ["fc.weight"]


@pytest.mark.parametrize(
    "bad", ["cifar_resnet_21", "cifar_resnet_2", "imagenet_resnet_50", "cifar_vgg_12", "mlp_0", "resnet20", "", "vit_0", "vit_2_0",
            "vit"]
)
def test_bad_names_give_clear_errors(bad):
    with pytest.raises(UnknownModelError, match="Model names have the forms"):
        parse_model_name(bad)


def test_families():
    assert parse_model_name("cifar_resnet_20").family == parse_model_name("cifar_resnet_56").family
    assert parse_model_name("cifar_resnet_20").family != parse_model_name("cifar_resnet_20_32").family
    assert parse_model_name("cifar_vgg_13_fc2").family == parse_model_name("cifar_vgg_19_fc5").family
    assert parse_model_name("cifar_vgg_13").family != parse_model_name("cifar_vgg_13_fc2").family
    assert parse_model_name("vit_4").family == parse_model_name("vit_12_64").family == "vit (width 64)"
    assert parse_model_name("vit_4").family != parse_model_name("vit_4_96").family


def test_vit_layout():
    m = build_model("vit_2", (1, 28, 28), 10)
    assert m.embed.pos.shape == (1, 17, 64)  # 4x4 patches of 7x7 pixels and the class token
    assert m.embed.proj.weight.shape == (64, 1, 7, 7)
    assert build_model("vit_2", (3, 32, 32), 10).embed.pos.shape == (1, 65, 64)  # 8x8 patches of 4x4 pixels
    assert m.blocks[0].attn.heads == 2 and m.blocks[0].fc1.weight.shape == (128, 64)
    assert m.prunable_names() == ["embed.proj.weight"] + [
        f"blocks.{i}.{k}.weight" for i in (0, 1) for k in ("attn.qkv", "attn.out", "fc1", "fc2")] + ["fc.weight"]
    assert m.default_excluded() == ["fc.weight"]
    with pytest.raises(Exception, match="at least 4x4 pixels"):
        build_model("vit_1", (1, 3, 3), 10)
