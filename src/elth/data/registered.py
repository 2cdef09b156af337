"""Datasets of a user's own, registered by name next to the built-ins.

    from elth.data import InMemoryDataset, register_dataset

    def load_my_data(data_dir):  # the --data-dir given (or None); uint8 images [N, C, H, W]
        train_x, train_y, test_x, test_y = ...
        return InMemoryDataset("my_data", train_x, train_y, test_x, test_y, num_classes=10,
                               augment="crop_flip")

    register_dataset("my_data", load_my_data, input_shape=(1, 28, 28), num_classes=10,
                     description="my data: 60,000 + 10,000 grey 28x28 images")

The loader may return any object with the `Dataset` interface (`InMemoryDataset` is the usual one);
elth checks its shape and class count against the registration and names it by the registered name
(tickets and runs record that name). A module that registers datasets is found by the processes
elth starts as families' modules are (`elth.plugins`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from elth.data.base import DatasetInfo, is_input_shape
from elth.errors import ElthError
from elth.limits import is_int

_NAME = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")


class DatasetRegistrationError(ElthError, ValueError):
    """A dataset that cannot be registered."""


@dataclass(frozen=True)
class RegisteredDataset:
    load: Callable  # (data_dir, **options) -> Dataset
    info: DatasetInfo
    description: str


_DATASETS: dict[str, RegisteredDataset] = {}
#: Names (and name prefixes) of elth's own datasets (`registry` reserves them).
_reserved: set[str] = set()
_reserved_prefixes: set[str] = set()


def reserve(names, prefixes=()) -> None:
    _reserved.update(names)
    _reserved_prefixes.update(prefixes)


def register_dataset(name: str, load: Callable, *, input_shape: tuple[int, ...], num_classes: int,
                     description: str = "", replace: bool = False) -> RegisteredDataset:
    """Make `name` load as `load(data_dir)` (with the dataset options given, if any): a dataset of
    images `input_shape` (C, H, W) in `num_classes` classes."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DatasetRegistrationError(f"a dataset's name is lowercase words joined by '_' (e.g. 'my_data'), not {name!r}")
    if name in _reserved or name.startswith(tuple(_reserved_prefixes)):
        raise DatasetRegistrationError(f"{name!r} is one of elth's own dataset names ({', '.join(sorted(_reserved))})")
    if not callable(load):
        raise DatasetRegistrationError(f"dataset {name!r}: its loader must be callable, got {type(load).__name__}")
    if not is_input_shape(input_shape):
        raise DatasetRegistrationError(f"dataset {name!r}: input_shape must be three positive integers (C, H, W), "
                                       f"got {input_shape!r}")
    shape = tuple(input_shape)
    if not is_int(num_classes) or num_classes < 2:
        raise DatasetRegistrationError(f"dataset {name!r}: num_classes must be an integer of at least 2, got {num_classes!r}")
    if name in _DATASETS and not replace and _DATASETS[name].load is not load:
        raise DatasetRegistrationError(f"a dataset {name!r} is registered already (pass replace=True to register it again)")
    entry = RegisteredDataset(load, DatasetInfo(name, shape, num_classes),
                              description or f"a dataset of your own: {num_classes} classes of {'x'.join(map(str, shape))} images")
    _DATASETS[name] = entry
    return entry


def unregister_dataset(name: str) -> None:
    _DATASETS.pop(name, None)


def registered_dataset(name: str) -> RegisteredDataset | None:
    return _DATASETS.get(name)


def registered_datasets() -> dict[str, RegisteredDataset]:
    return dict(_DATASETS)


def loaders() -> list[Callable]:
    """The registered loaders (`plugins.propagate` carries their modules to other processes)."""
    return [d.load for d in _DATASETS.values()]
