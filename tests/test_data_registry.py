"""Dataset names, options, `dataset_info`, and the real Fashion-MNIST files when installed."""
from __future__ import annotations

import pytest
import torch

from elth.data import (
    DATASETS,
    DatasetInfo,
    DatasetNotFoundError,
    UnknownDatasetError,
    canonical_name,
    dataset_info,
    load_dataset,
)
from elth.data.paths import find_files
from elth.data.idx import IDX_FILES
from elth.errors import ElthError


def test_every_name_has_a_description():
    assert set(DATASETS) == {"cifar10", "svhn", "mnist", "fashion_mnist", "imagenet", "digits", "synthetic"}
    assert all(d and "\n" not in d for d in DATASETS.values())


@pytest.mark.parametrize(
    "given, key",
    [("CIFAR-10", "cifar10"), ("cifar10", "cifar10"), ("Fashion-MNIST", "fashion_mnist"),
     ("fashionmnist", "fashion_mnist"), ("synthetic_1x28x28", "synthetic_1x28x28")],
)
def test_canonical_names(given, key):
    assert canonical_name(given) == key


@pytest.mark.parametrize("bad", ["cifar", "synthetic_3x32", "mnist2", ""])
def test_unknown_names(bad):
    with pytest.raises(UnknownDatasetError, match="the datasets are"):
        canonical_name(bad)


def test_synthetic_options_in_the_name_round_trip():
    ds = load_dataset("synthetic_1x12x12_c3_n30")
    assert ds.info == DatasetInfo("synthetic_1x12x12_c3_n30", (1, 12, 12), 3)
    assert (ds.num_train, ds.num_test) == (30, 15)
    again = load_dataset(ds.info.name)
    assert torch.equal(again.train_x, ds.train_x)
    assert dataset_info(ds.info.name) == ds.info
    by_kwargs = load_dataset("synthetic", input_shape=(1, 12, 12), num_classes=3, num_train=30)
    assert by_kwargs.info == ds.info and torch.equal(by_kwargs.train_x, ds.train_x)
    default = load_dataset("synthetic")
    assert default.info == DatasetInfo("synthetic", (3, 32, 32), 10) and default.num_train == 512


def test_options_are_checked():
    with pytest.raises(ElthError, match="takes no options, not crop_size"):
        load_dataset("digits", crop_size=3)
    with pytest.raises(ElthError, match="must be positive"):
        load_dataset("synthetic_c0")
    load_dataset("digits", num_workers=4)  # accepted by every dataset; no workers for in-memory data


def test_fixed_infos_need_no_files():
    assert dataset_info("cifar10") == DatasetInfo("cifar10", (3, 32, 32), 10)
    assert dataset_info("svhn") == DatasetInfo("svhn", (3, 32, 32), 10)
    assert dataset_info("mnist") == DatasetInfo("mnist", (1, 28, 28), 10)
    assert dataset_info("fashion-mnist") == DatasetInfo("fashion_mnist", (1, 28, 28), 10)
    assert dataset_info("digits") == load_dataset("digits").info


def test_device_argument():
    ds = load_dataset("digits", device="cpu")
    assert ds.train_x.device.type == "cpu"
    if torch.cuda.is_available():
        gpu = load_dataset("digits", device="cuda")
        x, y = next(iter(gpu.train_epoch(0, 64, seed=0)))
        assert x.is_cuda and y.is_cuda


@pytest.mark.real_data
def test_real_fashion_mnist():
    try:
        find_files("fashion_mnist", IDX_FILES)
    except DatasetNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")
    ds = load_dataset("fashion_mnist")
    assert ds.info == DatasetInfo("fashion_mnist", (1, 28, 28), 10)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8
    assert torch.bincount(ds.train_y).tolist() == [6000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert int(ds.train_y[0]) == 9 and int(ds.test_y[0]) == 9  # both sets start with an ankle boot
    mean = ds.train_x.float().mean() / 255
    assert abs(float(mean) - ds.mean[0]) < 1e-3
