"""Width transformations: plans per group of coupled units, applied to weights and masks (MLPs, CIFAR ResNets, VGGs)."""
import pytest
import torch

from elth.cli import main
from elth.data.base import synthetic
from elth.elastic.plan import PlanError
from elth.elastic.width import apply_width_plan, make_width_plan, transform_width
from elth.models import build_model, parse_model_name
from elth.open_lth.reading import lenet_name, model_names
from elth.tickets import from_model, save_ticket

SHAPE = (1, 1, 3)  # three inputs


def _ticket(name: str, seed: int = 0, density: float = 0.7, shape=SHAPE):
    data = synthetic(input_shape=shape, num_classes=2, num_train=16, num_test=4, seed=0)
    model = build_model(name, shape, 2, seed=seed)
    g = torch.Generator().manual_seed(seed)
    mask = {n: torch.rand(p.shape, generator=g) < density if n != "fc.weight" else torch.ones_like(p, dtype=torch.bool)
            for n, p in model.named_parameters() if n.endswith("weight")}
    return from_model(model, data.info, mask)


def test_mlp_names_take_a_width_and_the_default_is_the_paper_s():
    assert parse_model_name("mlp_2").width == 300 and parse_model_name("mlp_2_600").width == 600
    assert build_model("mlp_2", (1, 8, 8), 10, seed=0).hidden[1].weight.shape == (300, 300)
    assert build_model("mlp_2_7", (1, 8, 8), 10, seed=0).bottleneck.weight.shape == (100, 7)
    assert parse_model_name("mlp_2").family == "mlp" and parse_model_name("mlp_2_600").family == "mlp (width 600)"
    assert lenet_name(2, 600) == "mnist_lenet_600_600_100" and model_names(lenet_name(2, 600))[0] == "mlp_2_600"


def test_a_stretch_copies_rows_and_masks_and_divides_the_copied_columns_by_hand():
    t = _ticket("mlp_1_2")
    s = apply_width_plan(t, "mlp_1_3", {"hidden.0": (0, 1, 0)})
    w, b, m = t.state["hidden.0.weight"], t.state["hidden.0.bias"], t.mask["hidden.0.weight"]
    assert torch.equal(s.state["hidden.0.weight"], torch.stack([w[0], w[1], w[0]]))
    assert torch.equal(s.state["hidden.0.bias"], torch.stack([b[0], b[1], b[0]]))
    assert torch.equal(s.mask["hidden.0.weight"], torch.stack([m[0], m[1], m[0]]))
    c, mc = t.state["bottleneck.weight"], t.mask["bottleneck.weight"]
    assert torch.equal(s.state["bottleneck.weight"], torch.stack([c[:, 0] / 2, c[:, 1], c[:, 0] / 2], 1))
    assert torch.equal(s.mask["bottleneck.weight"], torch.stack([mc[:, 0], mc[:, 1], mc[:, 0]], 1))
    assert torch.equal(s.dense["bottleneck.weight"][:, 0], t.dense["bottleneck.weight"][:, 0] / 2)
    assert torch.equal(s.state["fc.weight"], t.state["fc.weight"])  # after the bottleneck: untouched
    plain = apply_width_plan(t, "mlp_1_3", {"hidden.0": (0, 1, 0)}, rescale=False)
    assert torch.equal(plain.state["bottleneck.weight"], torch.stack([c[:, 0], c[:, 1], c[:, 0]], 1))


def test_a_squeeze_keeps_the_units_ranked_highest_or_the_first_ones():
    t = _ticket("mlp_1_4", density=1.0)
    t.state["hidden.0.weight"][:] = torch.tensor([[1.0] * 3, [9.0] * 3, [0.1] * 3, [5.0] * 3])
    t.state["bottleneck.weight"][:] = 0.0
    assert make_width_plan(t, "mlp_1_2") == {"hidden.0": (1, 3)}  # by norm, kept in their order
    assert make_width_plan(t, "mlp_1_2", "first") == {"hidden.0": (0, 1)}
    t.mask["hidden.0.weight"][1] = False  # unit 1 keeps nothing now
    t.mask["bottleneck.weight"][:, 1] = False
    assert make_width_plan(t, "mlp_1_2", "density") == {"hidden.0": (0, 2)}  # ties: earlier unit first
    s = transform_width(t, "mlp_1_2", criterion="first")
    assert torch.equal(s.state["hidden.0.weight"], t.state["hidden.0.weight"][:2])
    assert s.state["bottleneck.weight"].shape == (100, 2)


@pytest.mark.parametrize("density", [1.0, 0.6])
def test_the_rescaled_stretch_computes_the_source_s_function_at_the_rewind_point(density):
    t = _ticket("mlp_2_5", seed=3, density=density, shape=(1, 4, 4))
    x = torch.randn(32, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    source = t.build().eval()
    wide = transform_width(t, "mlp_2_9").build().eval()
    assert torch.allclose(wide(x), source(x), atol=1e-5)
    assert not torch.allclose(transform_width(t, "mlp_2_9", rescale=False).build()(x), source(x), atol=1e-2)


def test_permuted_replica_masks_keep_each_copy_s_count_and_leave_first_copies_alone():
    t = _ticket("mlp_1_3", seed=2, density=0.5, shape=(1, 4, 4))
    plan = {"hidden.0": (0, 1, 2, 0, 1, 2)}
    s = apply_width_plan(t, "mlp_1_6", plan, permute_replicas=True, seed=5)
    m, src = s.mask["hidden.0.weight"], t.mask["hidden.0.weight"]
    assert torch.equal(m[:3], src)
    assert [int(r.sum()) for r in m[3:]] == [int(r.sum()) for r in src] and not torch.equal(m[3:], src)
    assert torch.equal(s.state["hidden.0.weight"][3:], s.dense["hidden.0.weight"][3:] * m[3:])
    no_dense = _ticket("mlp_1_3", shape=(1, 4, 4))
    no_dense = from_model(no_dense.build(), no_dense.dataset, no_dense.mask, keep_dense=False)
    with pytest.raises(PlanError, match="dense rewind weights"):
        apply_width_plan(no_dense, "mlp_1_6", plan, permute_replicas=True)


def test_width_transform_through_the_cli_and_its_errors(tmp_path, capsys):
    path = save_ticket(_ticket("mlp_2_4", shape=(1, 4, 4)), tmp_path / "t.safetensors")
    assert main(["transform", str(path), "--to", "mlp_2_6", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "mlp_2_4 -> mlp_2_6 (width)" in out and "hidden.0: 0, 1, 2, 3, 0, 1" in out
    assert main(["transform", str(path), "--to", "mlp_2_3", "--width-squeeze", "first", "-o",
                 str(tmp_path / "n.safetensors")]) == 0
    capsys.readouterr()
    # depth and width in one command: the width first (mlp_2_6), then the depth, with its options
    both = tmp_path / "both.safetensors"
    assert main(["transform", str(path), "--to", "mlp_3_6", "--order", "interpolation", "-o", str(both)]) == 0
    out = capsys.readouterr().out
    assert "mlp_2_4 -> mlp_2_6 (width)" in out and "mlp_2_6 -> mlp_3_6" in out and "plan: 0,1,1" in out
    from elth.tickets import load_ticket
    t = load_ticket(both)
    assert t.model == "mlp_3_6" and t.provenance["source"]["provenance"]["method"] == "width_transformation"
    for args, says in [
        (["--to", "mlp_2_6", "--order", "interpolation"], "do not apply to a change of width"),
        (["--to", "mlp_2_4", "--no-rescale"], "need --to a network of another width"),
        (["--to", "mlp_2_4", "--dataset", "digits", "--no-rescale"], "need --to a network of another width"),
    ]:
        assert main(["transform", str(path), *args, "--dry-run"]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    resnet = save_ticket(_conv_ticket("cifar_resnet_8_4"), tmp_path / "r.safetensors")
    assert main(["transform", str(resnet), "--to", "cifar_resnet_8_8", "--dry-run"]) == 0
    assert "layer3: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, ... (32 units)" in capsys.readouterr().out


def _conv_ticket(name: str, density: float = 0.6):
    shape = (3, 8, 8)
    data = synthetic(input_shape=shape, num_classes=3, num_train=16, num_test=4, seed=0)
    model = build_model(name, shape, 3, seed=1)
    for m in model.modules():  # BatchNorms as after training: statistics and affine parameters of their own
        if isinstance(m, torch.nn.BatchNorm2d):
            g = torch.Generator().manual_seed(m.num_features)
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    return from_model(model, data.info, {n: torch.rand(params[n].shape, generator=g) < density
                                         for n in model.prunable_names()})


def test_a_resnet_s_width_groups_couple_each_stage_s_residual_stream_and_each_block_s_inner_channels():
    groups = {g.name: g for g in build_model("cifar_resnet_14_4", (3, 8, 8), 3, seed=0).width_groups()}
    assert sorted(groups) == sorted(["layer1", "layer2", "layer3"] + [f"layer{s}.{u}.conv1" for s in (1, 2, 3)
                                                                      for u in (0, 1)])
    stream = groups["layer2"]
    assert ("layer2.0.shortcut.0.weight", 0) in stream.producers and ("layer2.1.bn2.running_var", 0) in stream.producers
    assert set(stream.consumers) == {("layer2.1.conv1.weight", 1), ("layer3.0.conv1.weight", 1),
                                     ("layer3.0.shortcut.0.weight", 1)}
    assert ("fc.weight", 1) in groups["layer3"].consumers and ("conv.weight", 0) in groups["layer1"].producers


@pytest.mark.parametrize("density", [1.0, 0.6])
@pytest.mark.parametrize("source,wider,narrower", [
    ("cifar_resnet_14_4", ("cifar_resnet_14_6", "cifar_resnet_14_8"), "cifar_resnet_14_2"),
    ("cifar_vgg_11_2_fc2", ("cifar_vgg_11_3_fc2", "cifar_vgg_11_4_fc2"), "cifar_vgg_11_1_fc2"),
])
def test_a_widened_conv_net_computes_the_source_s_function_at_the_rewind_point(source, wider, narrower, density):
    t = _conv_ticket(source, density)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    for target in wider:
        wide = transform_width(t, target)
        assert {k: m.shape for k, m in wide.mask.items()} == {k: p.shape for k, p in wide.build().named_parameters()
                                                              if k in wide.mask}
        assert torch.allclose(wide.build().eval()(x), t.build().eval()(x), atol=1e-5)
    narrow = transform_width(t, narrower).build().eval()
    assert narrow(x).shape == (4, 3) and torch.isfinite(narrow(x)).all()


def test_vgg_names_take_a_width_and_the_default_is_the_paper_s():
    assert parse_model_name("cifar_vgg_16").width == 64 and parse_model_name("cifar_vgg_16_32").width == 32
    spec = parse_model_name("cifar_vgg_13_16_fc3")
    assert (spec.depth, spec.width, spec.fc_layers) == (13, 16, 3)
    assert parse_model_name("cifar_vgg_16").family == "cifar_vgg"  # unchanged: stores and tickets keep their labels
    assert parse_model_name("cifar_vgg_16_32").family != parse_model_name("cifar_vgg_16").family
    vgg = build_model("cifar_vgg_11_4_fc2", (3, 8, 8), 3, seed=0)
    assert [u.conv.out_channels for s in range(5) for u in getattr(vgg, f"layer{s + 1}")] == [4, 8, 16, 16, 32, 32, 32, 32]
    assert vgg.classifier[0].linear.weight.shape == (32, 32) and vgg.fc.weight.shape == (3, 32)
    with pytest.raises(Exception, match="the width must be positive"):
        parse_model_name("cifar_vgg_16_0")


def test_a_vgg_s_width_groups_are_its_conv_layers_and_hidden_linear_layers():
    groups = {g.name: g for g in build_model("cifar_vgg_11_4_fc2", (3, 8, 8), 3, seed=0).width_groups()}
    assert list(groups) == ["layer1.0", "layer2.0", "layer3.0", "layer3.1", "layer4.0", "layer4.1", "layer5.0",
                            "layer5.1", "classifier.0.linear"]
    assert groups["layer3.1"].consumers == (("layer4.0.conv.weight", 1),)
    assert ("layer3.1.bn.running_var", 0) in groups["layer3.1"].producers
    assert groups["layer5.1"].consumers == (("classifier.0.linear.weight", 1),)
    assert groups["classifier.0.linear"].consumers == (("fc.weight", 1),)


def test_a_vgg_of_another_width_has_no_open_lth_counterpart():
    from elth.open_lth.writing import open_lth_model
    assert open_lth_model("cifar_vgg_16").name == "cifar_vgg_16"
    with pytest.raises(Exception, match="open_lth has no counterpart of cifar_vgg_16_32"):
        open_lth_model("cifar_vgg_16_32")
