"""CIFAR-10 from the official python-pickle batches (data_batch_1..5, test_batch).

Each batch is a pickled dict with b"data" (uint8 [N, 3072]: the red, green and blue 32x32 planes
of each image, row-major) and b"labels" (N ints). The unpickler only admits what such a batch
needs (numpy arrays), so a hostile file cannot run code.
"""
from __future__ import annotations

import codecs
import importlib
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from elth.data.base import InMemoryDataset
from elth.data.errors import DatasetFormatError
from elth.data.paths import Wanted, find_files

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CIFAR10_FILES = tuple(Wanted(n, (n,)) for n in (*TRAIN_BATCHES, TEST_BATCH))


def _numpy_function(name: str):
    for module in ("numpy._core.multiarray", "numpy.core.multiarray", "numpy._core.numeric", "numpy.core.numeric"):
        try:
            fn = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if fn is not None:
            return fn
    raise pickle.UnpicklingError(f"numpy has no {name}")


_ALLOWED = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("_codecs", "encode"): lambda: codecs.encode,
    **{
        (module, fn): (lambda fn=fn: _numpy_function(fn))
        for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric", "numpy._core.numeric")
        for fn in ("_reconstruct", "scalar", "_frombuffer")
    },
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        make = _ALLOWED.get((module, name))
        if make is None:
            raise pickle.UnpicklingError(f"a CIFAR batch does not refer to {module}.{name}")
        return make()


def _field(batch: dict, key: str):
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise KeyError(key)


def read_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and labels int64 [N] of one batch file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _BatchUnpickler(f, encoding="bytes").load()
        data = np.asarray(_field(batch, "data"))
        labels = np.asarray(_field(batch, "labels"), dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise DatasetFormatError(f"{path} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(f"{path}: b'data' should be uint8 [N, 3072], not {data.dtype} {list(data.shape)}")
    if labels.shape != (data.shape[0],):
        raise DatasetFormatError(f"{path} has {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetFormatError(f"{path} has labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(data_dir: str | os.PathLike | None = None) -> InMemoryDataset:
    """CIFAR-10 with the usual recipe: random crop (4-pixel zero padding) + horizontal flip."""
    files = find_files(
        "cifar10", CIFAR10_FILES, data_dir,
        hint="the CIFAR-10 python version, cifar-10-python.tar.gz unpacked",
    )
    parts = [read_batch(files[n]) for n in TRAIN_BATCHES]
    train_x = torch.from_numpy(np.concatenate([x for x, _ in parts]))
    train_y = torch.from_numpy(np.concatenate([y for _, y in parts]))
    test_x, test_y = (torch.from_numpy(np.array(a)) for a in read_batch(files[TEST_BATCH]))  # writable copies
    return InMemoryDataset(
        "cifar10", train_x, train_y, test_x, test_y, 10, CIFAR10_MEAN, CIFAR10_STD, augment="crop_flip", pad=4
    )
