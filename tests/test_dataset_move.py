"""Tickets moved to another dataset (the paper's Appendix D), alone or with a change of depth."""
import pytest
import torch

from elth.cli import main
from elth.data.base import DatasetInfo
from elth.dataset_move import DatasetMoveError, to_dataset
from elth.elastic.apply import METHOD
from elth.masks import full_mask, magnitude_prune
from elth.models import build_model
from elth.tickets import from_model, load_ticket, save_ticket

CIFAR = DatasetInfo("synthetic_3x8x8_n64", (3, 8, 8), 10)


def _ticket(model: str, info: DatasetInfo, sparsity: float = 0.5):
    m = build_model(model, info.input_shape, info.num_classes, seed=0)
    full = full_mask(m)
    mask = magnitude_prune(dict(m.named_parameters()), full, sparsity, list(full))
    return from_model(m, info, mask)


def test_same_shapes_keep_every_weight_and_mask():
    t = _ticket("cifar_resnet_8_4", CIFAR)
    svhn = DatasetInfo("synthetic_3x8x8_n32", (3, 8, 8), 10)
    r = to_dataset(t, svhn)
    assert r.dataset == svhn and r.provenance["method"] == "dataset transfer" and r.provenance["replaced"] == []
    assert all(torch.equal(r.state[k], t.state[k]) for k in t.state)
    assert all(torch.equal(r.mask[k], t.mask[k]) for k in t.mask)
    assert r.rewind_step == t.rewind_step


def test_a_conv_net_takes_any_image_size_and_a_new_head_for_new_classes():
    t = _ticket("cifar_resnet_8_4", CIFAR, sparsity=0.6)
    big = DatasetInfo("synthetic_3x16x16_c7", (3, 16, 16), 7)
    r = to_dataset(t, big, seed=1)
    assert sorted(r.provenance["replaced"]) == ["fc.bias", "fc.weight"]
    assert r.state["fc.weight"].shape == (7, 16) and r.mask["fc.weight"].shape == (7, 16)
    # the new output layer keeps the old one's density; pruned positions are zero
    old_density = t.mask["fc.weight"].float().mean().item()
    assert r.mask["fc.weight"].float().sum().item() == round(old_density * 7 * 16)
    assert torch.all(r.state["fc.weight"][~r.mask["fc.weight"].bool()] == 0)
    for k in t.mask:
        if not k.startswith("fc."):
            assert torch.equal(r.mask[k], t.mask[k]) and torch.equal(r.state[k], t.state[k])
    # seeded: the same head again, another with another seed
    assert torch.equal(to_dataset(t, big, seed=1).state["fc.weight"], r.state["fc.weight"])
    assert not torch.equal(to_dataset(t, big, seed=2).state["fc.weight"], r.state["fc.weight"])
    # the result is a working ticket of the new dataset
    model = r.build()
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 7)


def test_an_mlp_keeps_its_output_layer_dense():
    info = DatasetInfo("synthetic_1x8x8", (1, 8, 8), 10)
    t = _ticket("mlp_2", info)
    r = to_dataset(t, DatasetInfo("synthetic_1x8x8_c3", (1, 8, 8), 3))
    assert r.mask["fc.weight"].shape == (3, 100) and bool(r.mask["fc.weight"].all())


@pytest.mark.parametrize("model, source, target, message", [
    ("cifar_resnet_8_4", CIFAR, DatasetInfo("synthetic_1x8x8", (1, 8, 8), 10), "3-channel images"),
    ("mlp_2", DatasetInfo("synthetic_1x8x8", (1, 8, 8), 10), DatasetInfo("synthetic_1x6x6", (1, 6, 6), 10),
     "inputs fit the same weights"),
])
def test_inputs_that_do_not_fit_are_clear_errors(model, source, target, message):
    with pytest.raises(DatasetMoveError, match=message):
        to_dataset(_ticket(model, source), target)


def test_cli_moves_depth_and_dataset_at_once(tmp_path, capsys):
    src = save_ticket(_ticket("cifar_resnet_14_4", CIFAR), tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    code = main(["transform", str(src), "--to", "cifar_resnet_20_4", "--dataset", "synthetic_3x8x8_c4_n32",
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "cifar_resnet_14_4 -> cifar_resnet_20_4" in text and "output layer replaced" in text
    t = load_ticket(out)
    assert t.model == "cifar_resnet_20_4" and t.dataset.num_classes == 4
    # the dataset move wraps the depth transformation's record
    assert t.provenance["method"] == "dataset transfer" and t.provenance["from"]["method"] == METHOD
    assert main(["train-ticket", str(out), "--dataset", "synthetic_3x8x8_c4_n32", "--length", "2it",
                 "--root", str(tmp_path / "runs"), "--no-progress"]) == 0
    # errors: nothing to do, depth options without --to, a dataset the weights do not fit
    assert main(["transform", str(src), "-o", str(out)]) == 2
    assert main(["transform", str(src), "--dataset", "svhn", "--units", "1", "-o", str(out)]) == 2
    assert main(["transform", str(src), "--dataset", "fashion_mnist", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "3-channel" in capsys.readouterr().err and not (tmp_path / "x.safetensors").exists()
