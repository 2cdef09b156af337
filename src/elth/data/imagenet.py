"""ImageNet (or any image-folder dataset): train/ and val/ with one sub-folder of images per class.

Images are decoded with Pillow in DataLoader worker processes and sent to the main process as
uint8; normalisation happens on the training device. Training images get RandomResizedCrop
(scale 0.08..1, aspect ratio 3/4..4/3, bilinear) and a horizontal flip with probability 1/2; test
and scoring images are resized so the shorter side is 256 and center-cropped to 224.

Determinism: the order of epoch e is a permutation seeded by (seed, e), and the augmentation of
image i in epoch e draws from a generator seeded by (seed, e, i), so batches do not depend on the
number of workers, and resuming at batch `start` decodes nothing before it. The official val/ is
one flat folder; sort it into class folders named as in train/ first.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from elth.data.base import Batch, DatasetInfo, Part, _generator, part_slice
from elth.data.errors import DatasetFormatError
from elth.data.paths import Wanted, find_files
from elth.errors import ElthError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")
IMAGENET_FOLDERS = (Wanted("train", ("train",), "train/"), Wanted("val", ("val",), "val/"))

_RESAMPLE = getattr(Image, "Resampling", Image).BILINEAR
_FLIP = getattr(Image, "Transpose", Image).FLIP_LEFT_RIGHT


def default_num_workers() -> int:
    return min(8, os.cpu_count() or 1)


# -- scanning -------------------------------------------------------------------------------------
def class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the sub-folders of `split_dir` (hidden ones skipped)."""
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def scan_split(split_dir: Path, classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Relative paths (as file-system bytes) and labels of every image under the class folders."""
    paths: list[bytes] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        folder = split_dir / cls
        if not folder.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames.sort()
            rel = os.path.relpath(dirpath, split_dir)
            for f in sorted(filenames):
                if _is_image(f):
                    paths.append(os.fsencode(os.path.join(rel, f)))
                    labels.append(label)
    # Fixed-width bytes keep millions of paths in one buffer (cheap to share with workers).
    return np.array(paths, dtype=np.bytes_), np.array(labels, dtype=np.int64)


def _flat_images(split_dir: Path) -> bool:
    return any(e.is_file() and _is_image(e.name) for e in os.scandir(split_dir))


# -- transforms -----------------------------------------------------------------------------------
def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height): a random area fraction in `scale` and aspect ratio in
    `ratio` (log-uniform); after 10 failed tries, the largest central crop within `ratio`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def resize_center_crop(img: Image.Image, resize: int, crop: int) -> Image.Image:
    """Shorter side to `resize` (bilinear), then the central `crop` x `crop` window."""
    w, h = img.size
    if w <= h:
        new_w, new_h = resize, int(resize * h / w)
    else:
        new_w, new_h = int(resize * w / h), resize
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _RESAMPLE)
    top = int(round((new_h - crop) / 2.0))
    left = int(round((new_w - crop) / 2.0))
    return img.crop((left, top, left + crop, top + crop))


class TrainTransform:
    """RandomResizedCrop + horizontal flip, seeded by (seed, epoch, index)."""

    def __init__(self, size: int, seed: int, epoch: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size, self.seed, self.epoch, self.scale, self.ratio = size, seed, epoch, scale, ratio

    def __call__(self, img: Image.Image, index: int) -> Image.Image:
        mask = (1 << 64) - 1
        rng = np.random.default_rng([self.seed & mask, self.epoch & mask, index & mask])
        left, top, w, h = random_resized_crop_box(img.width, img.height, rng, self.scale, self.ratio)
        img = img.resize((self.size, self.size), _RESAMPLE, box=(left, top, left + w, top + h))
        if rng.random() < 0.5:
            img = img.transpose(_FLIP)
        return img


class TestTransform:
    def __init__(self, resize: int, crop: int):
        self.resize, self.crop = resize, crop

    def __call__(self, img: Image.Image, index: int) -> Image.Image:
        return resize_center_crop(img, self.resize, self.crop)


def open_rgb(path: str | os.PathLike) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


# -- decoding in workers ----------------------------------------------------------------------------
class _Decoded(torch.utils.data.Dataset):
    """Image `i` of a split, transformed: (uint8 [3, S, S], label, error message or "")."""

    def __init__(self, root: Path, paths: np.ndarray, labels: np.ndarray, transform, size: int):
        self.root, self.paths, self.labels, self.transform, self.size = root, paths, labels, transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        path = self.root / os.fsdecode(self.paths[i])
        try:
            img = self.transform(open_rgb(path), int(i))
            x = torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)
            error = ""
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            x, error = torch.zeros((3, self.size, self.size), dtype=torch.uint8), f"cannot decode {path}: {e}"
        return x, int(self.labels[i]), error


def _collate(items):
    xs, ys, errors = zip(*items)
    return torch.stack(xs), torch.tensor(ys, dtype=torch.int64), [e for e in errors if e]


class _BatchList(torch.utils.data.Sampler):
    """Batches `start`, `start`+1, ... of `order` cut into `batch_size` pieces.

    With `part`, one rank's share of each batch (`part_slice`); with `every` = (r, n), only batches
    r, r + n, r + 2n, ... after `start` (a rank's test batches). Ranks decode only what they use.
    """

    def __init__(self, order: torch.Tensor, batch_size: int, start: int = 0, part: Part | None = None,
                 every: Part = (0, 1)):
        self.order, self.batch_size, self.part = order, batch_size, part
        self.numbers = range(start + every[0], math.ceil(len(order) / batch_size), every[1])

    def __len__(self) -> int:
        return len(self.numbers)

    def __iter__(self):
        for b in self.numbers:
            idx = self.order[b * self.batch_size : (b + 1) * self.batch_size]
            yield idx[part_slice(len(idx), self.part)].tolist()


# -- the dataset ------------------------------------------------------------------------------------
class ImageFolderDataset:
    """train/ and val/ class folders decoded on the fly; implements `elth.data.base.Dataset`."""

    def __init__(
        self,
        root: str | os.PathLike,
        name: str = "imagenet",
        device: torch.device | str = "cpu",
        num_workers: int | None = None,
        crop_size: int = 224,
        resize_size: int = 256,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
    ):
        if crop_size < 1 or resize_size < crop_size:
            raise ElthError(f"image sizes need 1 <= crop size <= resize size, got {crop_size} and {resize_size}")
        if num_workers is not None and num_workers < 0:
            raise ElthError(f"the number of data loading workers must be >= 0, got {num_workers}")
        self.root = Path(root)
        train_dir, val_dir = self.root / "train", self.root / "val"
        self.classes = class_folders(train_dir)
        if not self.classes:
            raise DatasetFormatError(f"{train_dir} has no class folders (expected one folder of images per class)")
        unknown = sorted(set(class_folders(val_dir)) - set(self.classes))
        if unknown:
            raise DatasetFormatError(
                f"{val_dir} has class folders missing from {train_dir}: {', '.join(unknown[:5])}"
                + (" ..." if len(unknown) > 5 else "")
            )
        self.train_paths, self.train_labels = scan_split(train_dir, self.classes)
        self.test_paths, self.test_labels = scan_split(val_dir, self.classes)
        if len(self.train_paths) == 0:
            raise DatasetFormatError(f"{train_dir} has no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
        if len(self.test_paths) == 0:
            why = " (its images lie directly in it: sort them into class folders as in train/)" if _flat_images(val_dir) else ""
            raise DatasetFormatError(f"{val_dir} has no images in class folders{why}")
        self.crop_size, self.resize_size = crop_size, resize_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.mean, self.std = tuple(mean), tuple(std)
        self.info = DatasetInfo(name, (3, crop_size, crop_size), len(self.classes))
        self.to(device)

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def num_train(self) -> int:
        return len(self.train_paths)

    @property
    def num_test(self) -> int:
        return len(self.test_paths)

    def to(self, device: torch.device | str) -> "ImageFolderDataset":
        self.device = torch.device(device)
        std = torch.tensor(self.std, device=self.device)
        self._scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self._shift = (-torch.tensor(self.mean, device=self.device) / std).view(1, -1, 1, 1)
        return self

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, 3, H, W] (any device) -> normalised float32 on the dataset's device."""
        x = x.to(self.device, non_blocking=True)
        return torch.addcmul(self._shift, x.float(), self._scale)

    def iterations_per_epoch(self, batch_size: int) -> int:
        return math.ceil(self.num_train / batch_size)

    def _batches(self, decoded: _Decoded, sampler: _BatchList, loader_seed: int) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(
            decoded,
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_collate,
            pin_memory=self.device.type == "cuda",
            # Seeds the workers without touching the global torch generator.
            generator=torch.Generator().manual_seed(loader_seed % 2**63),
        )
        for x, y, errors in loader:
            if errors:
                raise DatasetFormatError(errors[0])
            yield self.normalize(x), y.to(self.device, non_blocking=True)

    # -- the Dataset interface --------------------------------------------------------------
    def train_epoch(
        self, epoch: int, batch_size: int, seed: int, start: int = 0, augment: bool = True,
        part: Part | None = None,
    ) -> Iterator[Batch]:
        order = torch.randperm(self.num_train, generator=_generator(torch.device("cpu"), seed, epoch))
        if augment:
            transform = TrainTransform(self.crop_size, seed, epoch)
        else:
            transform = TestTransform(self.resize_size, self.crop_size)
        decoded = _Decoded(self.root / "train", self.train_paths, self.train_labels, transform, self.crop_size)
        yield from self._batches(decoded, _BatchList(order, batch_size, start, part), loader_seed=seed * 7919 + epoch)

    def test_batches(self, batch_size: int, part: Part | None = None) -> Iterator[Batch]:
        transform = TestTransform(self.resize_size, self.crop_size)
        decoded = _Decoded(self.root / "val", self.test_paths, self.test_labels, transform, self.crop_size)
        yield from self._batches(decoded, _BatchList(torch.arange(self.num_test), batch_size, every=part or (0, 1)),
                                 loader_seed=0)

    def scoring_examples(self, per_class: int, seed: int) -> Batch:
        order = torch.randperm(self.num_train, generator=_generator(torch.device("cpu"), seed, 7919))
        labels = torch.from_numpy(self.train_labels)[order]
        idx = torch.cat([order[labels == c][:per_class] for c in range(self.info.num_classes)])
        if len(idx) == 0:
            empty = torch.empty((0, *self.info.input_shape), device=self.device)
            return empty, torch.empty(0, dtype=torch.int64, device=self.device)
        transform = TestTransform(self.resize_size, self.crop_size)
        decoded = _Decoded(self.root / "train", self.train_paths, self.train_labels, transform, self.crop_size)
        parts = list(self._batches(decoded, _BatchList(idx, 256), loader_seed=seed))
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])


def locate_imagenet(data_dir: str | os.PathLike | None = None) -> Path:
    """The directory holding train/ and val/."""
    files = find_files(
        "imagenet", IMAGENET_FOLDERS, data_dir,
        hint="ILSVRC2012 with train/ and val/ each sorted into one folder per class",
    )
    return files["train"].parent


def load_imagenet(
    data_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu", **options
) -> ImageFolderDataset:
    """Options: num_workers (default min(8, CPUs)), crop_size (224), resize_size (256)."""
    return ImageFolderDataset(locate_imagenet(data_dir), "imagenet", device=device, **options)
