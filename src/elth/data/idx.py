"""MNIST and Fashion-MNIST from their IDX files (gzip-compressed or not).

An IDX file is two zero bytes, a type code (0x08: unsigned byte), the number of dimensions, the
dimensions as big-endian 32-bit integers, then the values in row-major order.
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from elth.data.base import InMemoryDataset
from elth.data.errors import DatasetFormatError
from elth.data.paths import Wanted, find_files

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)

_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _wanted(key: str, stem: str) -> Wanted:
    dotted = stem.replace("-idx", ".idx")  # some mirrors name them train-images.idx3-ubyte
    return Wanted(key, (stem, stem + ".gz", dotted, dotted + ".gz"), label=f"{stem}[.gz]")


IDX_FILES = tuple(_wanted(k, v) for k, v in _FILES.items())


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array stored in an IDX file; gzip compression is recognised by its magic bytes."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DatasetFormatError(f"{path} is a damaged gzip file ({e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _TYPES:
        raise DatasetFormatError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"{path} is truncated (incomplete IDX header)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_TYPES[raw[2]])
    count = int(np.prod(dims, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise DatasetFormatError(
            f"{path} holds {len(raw) - header} data bytes but its header {list(dims)} needs "
            f"{count * dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)


def _images(path: Path) -> torch.Tensor:
    a = read_idx(path)
    if a.dtype != np.uint8 or a.ndim != 3:
        raise DatasetFormatError(f"{path} should hold uint8 images [N, H, W], not {a.dtype} {list(a.shape)}")
    return torch.tensor(a).unsqueeze(1)  # copies: frombuffer's array is read-only


def _labels(path: Path, count: int, num_classes: int) -> torch.Tensor:
    a = read_idx(path)
    if a.ndim != 1 or a.shape[0] != count:
        raise DatasetFormatError(f"{path} should hold {count} labels, not an array of shape {list(a.shape)}")
    if a.size and int(a.max()) >= num_classes:
        raise DatasetFormatError(f"{path} has label {int(a.max())}, outside 0..{num_classes - 1}")
    return torch.tensor(a.astype(np.int64))


def load_idx_dataset(
    name: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    data_dir: str | os.PathLike | None = None,
    hint: str = "",
    num_classes: int = 10,
) -> InMemoryDataset:
    files = find_files(name, IDX_FILES, data_dir, hint=hint)
    train_x, test_x = _images(files["train_images"]), _images(files["test_images"])
    train_y = _labels(files["train_labels"], train_x.shape[0], num_classes)
    test_y = _labels(files["test_labels"], test_x.shape[0], num_classes)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetFormatError(
            f"{name}: train images are {list(train_x.shape[2:])} but test images {list(test_x.shape[2:])}"
        )
    return InMemoryDataset(name, train_x, train_y, test_x, test_y, num_classes, mean, std, augment="none")


def load_mnist(data_dir: str | os.PathLike | None = None) -> InMemoryDataset:
    return load_idx_dataset(
        "mnist", MNIST_MEAN, MNIST_STD, data_dir, hint="the MNIST IDX files"
    )


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> InMemoryDataset:
    return load_idx_dataset(
        "fashion_mnist", FASHION_MNIST_MEAN, FASHION_MNIST_STD, data_dir,
        hint="the Fashion-MNIST IDX files; on Debian and Ubuntu: apt-get install dataset-fashion-mnist",
    )
