"""The 8x8 handwritten digits embedded in scikit-learn (1,797 images; nothing to download).

Pixel values 0..16 become 0..255 (v * 255 / 16, rounded half up). The train/test split is fixed:
360 test images, drawn per class in proportion to the class sizes from a permutation with seed 0
(numpy's legacy generator, whose stream never changes), so every install sees the same split.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from elth.data.base import InMemoryDataset

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0


def stratified_split(labels: np.ndarray, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices (ascending); each class gives its share of `num_test`, rounded by
    largest remainder, taken in the order of a seeded permutation."""
    labels = np.asarray(labels)
    order = np.random.RandomState(seed).permutation(labels.shape[0])
    counts = np.bincount(labels)
    exact = counts * num_test / labels.shape[0]
    quota = np.floor(exact).astype(np.int64)
    largest_remainders = np.argsort(-(exact - quota), kind="stable")
    quota[largest_remainders[: num_test - int(quota.sum())]] += 1
    is_test = np.zeros(labels.shape[0], dtype=bool)
    shuffled = labels[order]
    for c, q in enumerate(quota):
        is_test[order[shuffled == c][:q]] = True
    return np.flatnonzero(~is_test), np.flatnonzero(is_test)


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """Pixel values [1797, 8, 8] (integers 0..16) and labels [1797].

    Reads scikit-learn's CSV directly when it is where scikit-learn keeps it (importing
    sklearn.datasets takes seconds); otherwise asks scikit-learn.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is not None and spec.submodule_search_locations:
        csv = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
        if csv.is_file():
            with gzip.open(csv, "rt") as f:
                table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
            if table.shape == (1797, 65):
                return table[:, :64].reshape(-1, 8, 8), table[:, 64]
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return bunch.images.astype(np.int64), bunch.target.astype(np.int64)


def load_digits() -> InMemoryDataset:
    """Digits as 1x8x8 uint8 images; normalised with the training split's own mean and std."""
    values, labels = _read_digits()
    images = ((values * 255 + 8) // 16).astype(np.uint8)[:, None]
    train, test = stratified_split(labels, DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return InMemoryDataset("digits", x[train], y[train], x[test], y[test], 10, augment="none")
