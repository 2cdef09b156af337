"""Datasets as tensors, with batching and augmentation vectorised over the batch.

Every dataset offers the same small interface (`Dataset`): deterministic epochs (the order and the
augmentation of epoch e depend only on (seed, e), so training can resume mid-epoch), test batches,
and a fixed set of scoring examples for pruning-at-initialisation methods.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Protocol

import torch
import torch.nn.functional as F

from elth.limits import is_int

Batch = tuple[torch.Tensor, torch.Tensor]
#: (rank, number of ranks): the share of every batch one data-parallel rank loads (None: all of it)
Part = tuple[int, int]

#: augmentation recipes of `InMemoryDataset`
AUGMENTATIONS = ("crop_flip", "crop", "none")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a ticket need to know about a dataset."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int

    def to_dict(self) -> dict:
        return {"name": self.name, "input_shape": list(self.input_shape), "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, d: dict) -> "DatasetInfo":
        """From `to_dict`'s form; a ValueError names the first field that is not of it."""
        if not isinstance(d, dict):
            raise ValueError(f"a dataset is an object with name, input_shape and num_classes, not {d!r}")
        name, shape, classes = d.get("name"), d.get("input_shape"), d.get("num_classes")
        if not isinstance(name, str) or not name:
            raise ValueError(f"a dataset's name must be a non-empty string, not {name!r}")
        if not is_input_shape(shape):
            raise ValueError(f"a dataset's input_shape must be three positive integers (C, H, W), not {shape!r}")
        if not (is_int(classes) and classes > 0):
            raise ValueError(f"a dataset's num_classes must be a positive integer, not {classes!r}")
        return cls(name, tuple(shape), classes)


def is_input_shape(value) -> bool:
    """Three positive integers (C, H, W), as a list or a tuple."""
    return isinstance(value, (list, tuple)) and len(value) == 3 and all(is_int(v) and v > 0 for v in value)


class Dataset(Protocol):
    info: DatasetInfo
    num_train: int
    num_test: int

    def iterations_per_epoch(self, batch_size: int) -> int: ...

    def train_epoch(
        self, epoch: int, batch_size: int, seed: int, start: int = 0, augment: bool = True,
        part: Part | None = None,
    ) -> Iterator[Batch]:
        """Batches `start`, `start`+1, ... of epoch `epoch` (normalised float inputs, int64 labels).

        With `part`, only that rank's contiguous share of each batch (`part_slice`), decoded and
        augmented exactly as in the whole batch.
        """
        ...

    def test_batches(self, batch_size: int, part: Part | None = None) -> Iterator[Batch]:
        """The test set in batches; with `part` = (r, n), only batches r, r + n, r + 2n, ..."""
        ...

    def scoring_examples(self, per_class: int, seed: int) -> Batch:
        """A fixed, seeded, class-balanced set of un-augmented training examples."""
        ...

    def to(self, device: torch.device | str) -> "Dataset": ...


def part_slice(n: int, part: Part | None) -> slice:
    """The share of a batch of `n` examples that `part` = (rank, ranks) loads: contiguous, in rank
    order, sizes differing by at most one."""
    if part is None:
        return slice(0, n)
    r, w = part
    return slice(n * r // w, n * (r + 1) // w)


def _generator(device: torch.device, *seeds: int) -> torch.Generator:
    g = torch.Generator(device=device)
    # Mix the seeds into one 63-bit integer (a fixed odd multiplier keeps nearby tuples apart).
    s = 0
    for v in seeds:
        s = (s * 1_000_003 + int(v) + 1) % (2**63 - 1)
    g.manual_seed(s)
    return g


class InMemoryDataset:
    """Train and test images as uint8 tensors [N, C, H, W] on one device, labels as int64.

    `augment` is "crop_flip" (random crop with `pad` pixels of zero padding + horizontal flip, the
    CIFAR recipe), "crop" (the same crop, never mirrored: for digits) or "none". Normalisation uses
    per-channel `mean` and `std` in [0, 1] units.
    """

    def __init__(
        self,
        name: str,
        train_x: torch.Tensor,
        train_y: torch.Tensor,
        test_x: torch.Tensor,
        test_y: torch.Tensor,
        num_classes: int,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        augment: str = "none",
        pad: int = 4,
    ):
        if train_x.dtype != torch.uint8 or test_x.dtype != torch.uint8:
            raise TypeError("images must be uint8 tensors [N, C, H, W]")
        if train_x.ndim != 4 or test_x.shape[1:] != train_x.shape[1:]:
            raise ValueError(f"bad image shapes: train {tuple(train_x.shape)}, test {tuple(test_x.shape)}")
        if augment not in AUGMENTATIONS:
            raise ValueError(f"augment must be one of {AUGMENTATIONS}, got {augment!r}")
        self.train_x, self.train_y = train_x, train_y.long()
        self.test_x, self.test_y = test_x, test_y.long()
        c = train_x.shape[1]
        if mean is None or std is None:
            xf = train_x.float().div_(255)
            mean = tuple(xf.mean(dim=(0, 2, 3)).tolist())
            std = tuple(xf.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
        self.mean, self.std = tuple(mean), tuple(std)
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError("mean and std need one value per channel")
        self.augment, self.pad = augment, pad
        self.info = DatasetInfo(name, tuple(train_x.shape[1:]), int(num_classes))
        self._perm_cache: tuple[tuple[int, int], torch.Tensor] | None = None
        self._set_affine()

    # -- plumbing ---------------------------------------------------------------------------
    def _set_affine(self) -> None:
        dev = self.train_x.device
        std = torch.tensor(self.std, device=dev)
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(self.mean, device=dev) / std).view(1, -1, 1, 1)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    @property
    def num_train(self) -> int:
        return self.train_x.shape[0]

    @property
    def num_test(self) -> int:
        return self.test_x.shape[0]

    def to(self, device: torch.device | str) -> "InMemoryDataset":
        device = torch.device(device)
        for k in ("train_x", "train_y", "test_x", "test_y"):
            setattr(self, k, getattr(self, k).to(device))
        self._perm_cache = None
        self._set_affine()
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, C, H, W] -> normalised float32."""
        return torch.addcmul(self._shift, x.float(), self._scale)

    # -- batches ----------------------------------------------------------------------------
    def iterations_per_epoch(self, batch_size: int) -> int:
        return math.ceil(self.num_train / batch_size)

    def _permutation(self, epoch: int, seed: int) -> torch.Tensor:
        key = (epoch, seed)
        if self._perm_cache is None or self._perm_cache[0] != key:
            # Random numbers come from CPU generators and move to the device: the same data order and
            # augmentation on every device, so a run continues on another device unchanged.
            g = _generator(torch.device("cpu"), seed, epoch)
            self._perm_cache = (key, torch.randperm(self.num_train, generator=g).to(self.device))
        return self._perm_cache[1]

    def train_epoch(
        self, epoch: int, batch_size: int, seed: int, start: int = 0, augment: bool = True,
        part: Part | None = None,
    ) -> Iterator[Batch]:
        perm = self._permutation(epoch, seed)
        for b in range(start, self.iterations_per_epoch(batch_size)):
            idx = perm[b * batch_size : (b + 1) * batch_size]
            share = part_slice(idx.shape[0], part)
            x = self.train_x[idx[share]]
            if augment and self.augment != "none":
                g = _generator(torch.device("cpu"), seed, epoch, b)
                x = self._crop_flip(x, g, flip=self.augment == "crop_flip", batch=idx.shape[0], share=share)
            yield self.normalize(x), self.train_y[idx[share]]

    def train_epoch_members(
        self, epoch: int, batch_size: int, seeds: list[int], start: int = 0, augment: bool = True,
        part: Part | None = None,
    ) -> Iterator[Batch]:
        """`train_epoch` for several data seeds at once (a fused group's members): x [K, N, ...] as a
        view of [N, K, ...] memory (the fused network's input layout), y [K, N]. Member k's batches
        equal `train_epoch(epoch, batch_size, seeds[k], start, augment, part)`'s, made by one gather,
        one augmentation and one normalisation for all members (no per-member work on the device)."""
        perms = torch.stack([self._permutation(epoch, s) for s in seeds], dim=1)  # [num_train, K]
        k = len(seeds)
        for b in range(start, self.iterations_per_epoch(batch_size)):
            idx = perms[b * batch_size : (b + 1) * batch_size]  # [N, K]
            share = part_slice(idx.shape[0], part)
            full, idx = idx.shape[0], idx[share]
            n = idx.shape[0]
            x = self.train_x[idx.flatten()]  # example (i, member) at row i * K + member
            if augment and self.augment != "none":
                # drawn for the whole batch (as train_epoch does), this rank's share kept
                draws = [self._draw_crop_flip(_generator(torch.device("cpu"), s, epoch, b), full) for s in seeds]
                offsets = torch.stack([d[0][:, share] for d in draws], dim=2).flatten(1)  # [2, n * K]
                flips = torch.stack([d[1][share] for d in draws], dim=1).flatten()
                x = self._apply_crop_flip(x, offsets, flips, flip=self.augment == "crop_flip")
            x = self.normalize(x)
            yield x.view(n, k, *x.shape[1:]).transpose(0, 1), self.train_y[idx].T.contiguous()

    def _draw_crop_flip(self, g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of `n` examples' crop offsets [2, n] and flips [n], on the CPU. Both recipes draw
        the same numbers, so "crop" is "crop_flip" without the mirror."""
        p = self.pad
        return torch.randint(0, 2 * p + 1, (2, n), generator=g), torch.rand(n, generator=g) < 0.5

    def _crop_flip(
        self, x: torch.Tensor, g: torch.Generator, flip: bool = True, batch: int | None = None,
        share: slice = slice(None),
    ) -> torch.Tensor:
        """Crop (and flip) `x`, the `share` of a batch of `batch` examples (default: all of `x`)."""
        # Drawn for the whole batch, so a rank's share is augmented as in the whole batch.
        offsets, flips = self._draw_crop_flip(g, x.shape[0] if batch is None else batch)
        return self._apply_crop_flip(x, offsets[:, share], flips[share], flip)

    def _apply_crop_flip(self, x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, flip: bool) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.pad
        offsets = offsets.to(x.device, non_blocking=True)
        flips = flips.to(x.device, non_blocking=True)
        padded = F.pad(x, (p, p, p, p))
        # Two gathers (rows, then columns) with broadcast index tensors: no per-image Python.
        rows = offsets[0, :, None] + torch.arange(h, device=x.device)
        x = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * p))
        cols = torch.arange(w, device=x.device).expand(n, w)
        if flip:
            # A flip reverses the column order of the crop window.
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        cols = cols + offsets[1, :, None]
        return x.gather(3, cols[:, None, None, :].expand(n, c, h, w))

    def test_batches(self, batch_size: int, part: Part | None = None) -> Iterator[Batch]:
        r, w = part or (0, 1)
        for i in range(r * batch_size, self.num_test, w * batch_size):
            yield self.normalize(self.test_x[i : i + batch_size]), self.test_y[i : i + batch_size]

    def scoring_examples(self, per_class: int, seed: int) -> Batch:
        g = _generator(torch.device("cpu"), seed, 7919)
        order = torch.randperm(self.num_train, generator=g).to(self.device)
        labels = self.train_y[order]
        chosen = []
        for c in range(self.info.num_classes):
            chosen.append(order[labels == c][:per_class])
        idx = torch.cat(chosen)
        return self.normalize(self.train_x[idx]), self.train_y[idx]


def synthetic(
    input_shape: tuple[int, int, int] = (3, 32, 32),
    num_classes: int = 10,
    num_train: int = 512,
    num_test: int = 256,
    seed: int = 0,
    augment: str = "crop_flip",
) -> InMemoryDataset:
    """A tiny learnable dataset: each class is a fixed random template plus noise."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand((num_classes, *input_shape), generator=g) * 255

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % num_classes
        y = y[torch.randperm(n, generator=g)]
        noise = torch.randn((n, *input_shape), generator=g) * 60
        x = (templates[y] + noise).clamp(0, 255).to(torch.uint8)
        return x, y

    tx, ty = split(num_train)
    vx, vy = split(num_test)
    return InMemoryDataset("synthetic", tx, ty, vx, vy, num_classes, augment=augment)
