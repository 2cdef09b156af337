"""Datasets at another image size (NAME@SIZE), as the paper's Table 7 upsamples CIFAR-10."""
import pytest
import torch
import torch.nn.functional as F

from elth.data import canonical_name, dataset_info, load_dataset
from elth.errors import ElthError
from elth.experiments import get_experiment
from elth.experiments.spec import expand


def test_names_info_and_batches():
    base, big = load_dataset("synthetic_3x8x8_n64"), load_dataset("synthetic_3x8x8_n64@16")
    assert canonical_name("synthetic_3x8x8_n64@16") == "synthetic_3x8x8_n64"
    assert big.info.name == "synthetic_3x8x8_n64@16" and big.info.input_shape == (3, 16, 16)
    assert dataset_info("cifar10@224").input_shape == (3, 224, 224)
    assert big.iterations_per_epoch(16) == base.iterations_per_epoch(16) and big.num_train == base.num_train
    # the same examples, order and augmentation as the base dataset, each batch resized bilinearly
    for (xb, yb), (xs, ys) in zip(big.train_epoch(1, 16, seed=3), base.train_epoch(1, 16, seed=3)):
        assert xb.shape == (xs.shape[0], 3, 16, 16) and torch.equal(yb, ys)
        assert torch.allclose(xb, F.interpolate(xs, size=(16, 16), mode="bilinear", align_corners=False))
    (xt, _), = list(big.test_batches(1000))
    assert xt.shape[-2:] == (16, 16)
    xe, ye = big.scoring_examples(2, seed=0)
    assert xe.shape[-2:] == (16, 16) and len(ye) == len(base.scoring_examples(2, seed=0)[1])


@pytest.mark.parametrize("name", ["digits@", "digits@x", "digits@0", "nothing@32"])
def test_bad_names_are_clear_errors(name):
    with pytest.raises(ElthError):
        load_dataset(name)


def test_table7_moves_imagenet_tickets_to_upsampled_cifar():
    setup = get_experiment("imagenet_table7").setups("paper")[0]
    plan = expand(setup)
    assert sorted((r.model, r.dataset) for r in plan.imp) == [
        ("imagenet_resnet_18", ""), ("imagenet_resnet_18", "imagenet"), ("imagenet_resnet_26", "imagenet")]
    assert {(r.source, r.target, r.source_dataset) for r in plan.tickets} == {
        ("imagenet_resnet_18", "imagenet_resnet_18", "imagenet"), ("imagenet_resnet_26", "imagenet_resnet_18", "imagenet")}
    assert dataset_info(setup.dataset).input_shape == (3, 224, 224)
