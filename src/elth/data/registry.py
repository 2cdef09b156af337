"""Dataset names -> datasets.

`synthetic` takes its options in the name, `synthetic[_<C>x<H>x<W>][_c<classes>][_n<train size>]`
(defaults 3x32x32, 10 classes, 512 training and half as many test images), or as keyword arguments
`input_shape`, `num_classes`, `num_train`, `num_test`, `seed`, `augment`; the dataset's
`info.name` spells shape, classes and training size out, so `load_dataset(info.name)` rebuilds it.
"""
from __future__ import annotations

import dataclasses
import os
import re

import torch

from elth import plugins
from elth.data import registered
from elth.data.base import Dataset, DatasetInfo, synthetic
from elth.data.cifar10 import load_cifar10
from elth.data.digits import load_digits
from elth.data.errors import DatasetFormatError, UnknownDatasetError
from elth.data.idx import load_fashion_mnist, load_mnist
from elth.data.resize import Resized, resized_info, split_size
from elth.errors import ElthError

DATASETS: dict[str, str] = {
    "cifar10": "CIFAR-10: 50,000 + 10,000 colour 32x32 images, 10 classes (official python batches)",
    "svhn": "SVHN cropped digits: 73,257 + 26,032 colour 32x32 images (train_32x32.mat, test_32x32.mat)",
    "mnist": "MNIST: 60,000 + 10,000 grey 28x28 handwritten digits (IDX files, .gz or not)",
    "fashion_mnist": "Fashion-MNIST: 60,000 + 10,000 grey 28x28 clothing images (IDX files, .gz or not)",
    "imagenet": "ImageNet (ILSVRC2012): train/ and val/ with one folder per class, 3x224x224 crops",
    "digits": "scikit-learn's 8x8 handwritten digits, fixed 1,437 + 360 split, built in (no download)",
    "synthetic": "tiny random learnable images for tests: synthetic[_<C>x<H>x<W>][_c<classes>][_n<train size>]",
}
#: Any name may end in @SIZE: the dataset's batches resized to SIZE x SIZE (`elth.data.resize`).

_ALIASES = {
    "cifar_10": "cifar10",
    "fashionmnist": "fashion_mnist",
    "fmnist": "fashion_mnist",
    "ilsvrc2012": "imagenet",
}

_FIXED_INFO = {
    "cifar10": DatasetInfo("cifar10", (3, 32, 32), 10),
    "svhn": DatasetInfo("svhn", (3, 32, 32), 10),
    "mnist": DatasetInfo("mnist", (1, 28, 28), 10),
    "fashion_mnist": DatasetInfo("fashion_mnist", (1, 28, 28), 10),
    "digits": DatasetInfo("digits", (1, 8, 8), 10),
}

_SYNTHETIC = re.compile(r"synthetic(?:_([0-9]+)x([0-9]+)x([0-9]+))?(?:_c([0-9]+))?(?:_n([0-9]+))?")
_SYNTHETIC_DEFAULTS = {"input_shape": (3, 32, 32), "num_classes": 10, "num_train": 512}
_SYNTHETIC_OPTIONS = {"input_shape", "num_classes", "num_train", "num_test", "seed", "augment"}
_IMAGENET_OPTIONS = {"num_workers", "crop_size", "resize_size"}
#: accepted by every dataset; in-memory datasets have no loader workers and ignore it
_COMMON_OPTIONS = {"num_workers"}


registered.reserve(set(DATASETS) | set(_ALIASES), prefixes=("synthetic",))


def _unknown(name: str) -> UnknownDatasetError:
    every = {**DATASETS, **{n: d.description for n, d in registered.registered_datasets().items()}}
    listing = "\n  ".join(f"{n:<14} {d}" for n, d in every.items())
    return UnknownDatasetError(f"unknown dataset {name!r}; the datasets are:\n  {listing}\n(datasets of your own: "
                               f"`elth.data.register_dataset`, in {plugins.HOW_TO_ADD})")


def canonical_name(name: str) -> str:
    """The registry key for `name` (case and '-' vs '_' do not matter; an @SIZE suffix is left out);
    raises for unknown names (after loading the plugins once)."""
    key = split_size(name)[0].strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if _known(key) or (plugins.load() and _known(key)):
        return key
    raise _unknown(name)


def _known(key: str) -> bool:
    return key in DATASETS or bool(_SYNTHETIC.fullmatch(key)) or registered.registered_dataset(key) is not None


def _load_registered(key: str, own: registered.RegisteredDataset, data_dir, device, options: dict) -> Dataset:
    """A registered dataset from its loader, checked against its registration and named by its key."""
    try:
        ds = own.load(data_dir, **options)
    except ElthError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's loader: one error that names the dataset
        raise DatasetFormatError(f"dataset {key!r}: its loader failed ({type(e).__name__}: {e})") from e
    info = getattr(ds, "info", None)
    if not isinstance(info, DatasetInfo):
        raise DatasetFormatError(f"dataset {key!r}: its loader must return a dataset (e.g. elth.data.InMemoryDataset), "
                                 f"got {type(ds).__name__}")
    if (tuple(info.input_shape), info.num_classes) != (own.info.input_shape, own.info.num_classes):
        raise DatasetFormatError(
            f"dataset {key!r}: its loader gave {info.num_classes} classes of {'x'.join(map(str, info.input_shape))} "
            f"images, registered as {own.info.num_classes} classes of {'x'.join(map(str, own.info.input_shape))}")
    ds.info = own.info
    return ds.to(device) if hasattr(ds, "to") else ds


def _check_options(name: str, options: dict, allowed: set[str]) -> None:
    extra = sorted(set(options) - allowed - _COMMON_OPTIONS)
    if extra:
        takes = f"takes only {', '.join(sorted(allowed))}" if allowed else "takes no options"
        raise ElthError(f"dataset {name!r} {takes}, not {', '.join(extra)}")


def _synthetic_options(key: str, options: dict) -> dict:
    m = _SYNTHETIC.fullmatch(key)
    opts = dict(_SYNTHETIC_DEFAULTS)
    if m.group(1):
        opts["input_shape"] = (int(m.group(1)), int(m.group(2)), int(m.group(3)))
    if m.group(4):
        opts["num_classes"] = int(m.group(4))
    if m.group(5):
        opts["num_train"] = int(m.group(5))
    opts.update({k: v for k, v in options.items() if k in _SYNTHETIC_OPTIONS})
    opts["input_shape"] = tuple(int(v) for v in opts["input_shape"])
    opts.setdefault("num_test", max(1, opts["num_train"] // 2))
    if min(opts["input_shape"]) < 1 or opts["num_classes"] < 1 or opts["num_train"] < 1 or opts["num_test"] < 1:
        raise ElthError(f"dataset {key!r}: shape, classes and sizes must be positive")
    return opts


def _synthetic_name(opts: dict) -> str:
    name = "synthetic"
    if opts["input_shape"] != _SYNTHETIC_DEFAULTS["input_shape"]:
        name += "_" + "x".join(str(d) for d in opts["input_shape"])
    if opts["num_classes"] != _SYNTHETIC_DEFAULTS["num_classes"]:
        name += f"_c{opts['num_classes']}"
    if opts["num_train"] != _SYNTHETIC_DEFAULTS["num_train"]:
        name += f"_n{opts['num_train']}"
    return name


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    **options,
) -> Dataset:
    """The dataset `name` (see `DATASETS`) with its tensors or its decoding on `device`.

    Files are looked for as `elth.data.paths` describes; a missing dataset raises
    `DatasetNotFoundError`, an unknown name `UnknownDatasetError` (both `ElthError`s).
    Options: `imagenet` takes num_workers, crop_size, resize_size; `synthetic` see the module doc;
    a registered dataset's loader gets those given (`elth.data.registered`).
    """
    base, size = split_size(name)
    if size is not None:
        return Resized(load_dataset(base, data_dir, device, **options), size)
    key = canonical_name(name)
    own = registered.registered_dataset(key)
    if own is not None:
        return _load_registered(key, own, data_dir, device, options)
    if key == "imagenet":
        from elth.data.imagenet import load_imagenet  # PIL loads only for ImageNet

        _check_options(key, options, _IMAGENET_OPTIONS)
        return load_imagenet(data_dir, device=device, **options)
    if _SYNTHETIC.fullmatch(key):
        _check_options(key, options, _SYNTHETIC_OPTIONS)
        opts = _synthetic_options(key, options)
        ds = synthetic(**opts)
        ds.info = dataclasses.replace(ds.info, name=_synthetic_name(opts))
        return ds.to(device)
    _check_options(key, options, set())
    if key == "svhn":
        from elth.data.svhn import (
            load_svhn,  # scipy (its .mat reader) loads only for SVHN
        )

        return load_svhn(data_dir).to(device)
    if key == "digits":
        return load_digits().to(device)
    load = {"cifar10": load_cifar10, "mnist": load_mnist, "fashion_mnist": load_fashion_mnist}[key]
    return load(data_dir).to(device)


def dataset_info(name: str, data_dir: str | os.PathLike | None = None, **options) -> DatasetInfo:
    """Shape and class count without loading images (ImageNet counts its class folders)."""
    base, size = split_size(name)
    if size is not None:
        return resized_info(dataset_info(base, data_dir, **options), size)
    key = canonical_name(name)
    if key in _FIXED_INFO:
        return _FIXED_INFO[key]
    own = registered.registered_dataset(key)
    if own is not None:
        return own.info
    if key == "imagenet":
        from elth.data.imagenet import (  # PIL loads only for ImageNet
            class_folders,
            locate_imagenet,
        )

        _check_options(key, options, _IMAGENET_OPTIONS)
        crop = int(options.get("crop_size", 224))
        return DatasetInfo("imagenet", (3, crop, crop), len(class_folders(locate_imagenet(data_dir) / "train")))
    _check_options(key, options, _SYNTHETIC_OPTIONS)
    opts = _synthetic_options(key, options)
    return DatasetInfo(_synthetic_name(opts), opts["input_shape"], opts["num_classes"])
