"""Datasets seen at another image size: `NAME@SIZE` (e.g. `cifar10@224`, the paper's Table 7).

The images stay in memory at their own size; every batch is resized on the device after
augmentation and normalisation (bilinear, as torchvision's Resize does for tensors), so a
CIFAR-10 upsampled to ImageNet's 224x224 costs no more memory than CIFAR-10.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterator

import torch
import torch.nn.functional as F

from elth.data.base import DatasetInfo, Part
from elth.errors import ElthError

_RESIZED = re.compile(r"(.+)@([0-9]+)")


def split_size(name: str) -> tuple[str, int | None]:
    """'cifar10@224' -> ('cifar10', 224); 'cifar10' -> ('cifar10', None)."""
    m = _RESIZED.fullmatch(name.strip())
    if m is None:
        if "@" in name:
            raise ElthError(f"dataset {name!r}: a resized dataset is NAME@SIZE with SIZE in pixels, e.g. cifar10@224")
        return name, None
    size = int(m.group(2))
    if not 1 <= size <= 4096:
        raise ElthError(f"dataset {name!r}: the image size must be between 1 and 4096 pixels, got {size}")
    return m.group(1), size


def resized_info(info: DatasetInfo, size: int) -> DatasetInfo:
    return dataclasses.replace(info, name=f"{info.name}@{size}", input_shape=(info.input_shape[0], size, size))


class Resized:
    """`dataset` with every batch resized to `size` x `size`."""

    def __init__(self, dataset, size: int):
        self.dataset, self.size = dataset, int(size)
        self.info = resized_info(dataset.info, self.size)

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.size, self.size):
            return x
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=False)

    def iterations_per_epoch(self, batch_size: int) -> int:
        return self.dataset.iterations_per_epoch(batch_size)

    def train_epoch(self, epoch: int, batch_size: int, seed: int, start: int = 0,
                    augment: bool = True, part: Part | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.dataset.train_epoch(epoch, batch_size, seed, start=start, augment=augment, part=part):
            yield self._resize(x), y

    def test_batches(self, batch_size: int, part: Part | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.dataset.test_batches(batch_size, part=part):
            yield self._resize(x), y

    def scoring_examples(self, per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.dataset.scoring_examples(per_class, seed)
        return self._resize(x), y

    def to(self, device) -> "Resized":
        self.dataset = self.dataset.to(device)
        return self

    def __getattr__(self, name: str):
        # num_train, device, ...: the underlying dataset's
        return getattr(self.__dict__["dataset"], name)
