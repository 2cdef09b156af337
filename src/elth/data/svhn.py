"""SVHN (cropped digits) from the official train_32x32.mat and test_32x32.mat.

Each file holds X, uint8 [32, 32, 3, N], and y, [N, 1] with labels 1..10 where 10 stands for the
digit 0. Training augmentation is a random crop with 4-pixel zero padding and no flip: a mirrored
digit is not the same digit.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io
import torch

from elth.data.base import InMemoryDataset
from elth.data.errors import DatasetFormatError
from elth.data.paths import Wanted, find_files

SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)

SVHN_FILES = (Wanted("train", ("train_32x32.mat",)), Wanted("test", ("test_32x32.mat",)))


def read_mat(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 [N, 3, H, W] and labels int64 in 0..9 of one SVHN .mat file."""
    path = Path(path)
    try:
        hdf5 = scipy.io.matlab.matfile_version(path)[0] == 2
        mat = {} if hdf5 else scipy.io.loadmat(path, variable_names=["X", "y"])
    except (ValueError, OSError, TypeError, scipy.io.matlab.MatReadError) as e:
        raise DatasetFormatError(f"{path} is not a readable SVHN .mat file ({e})") from None
    if hdf5:
        raise DatasetFormatError(f"{path} is a MATLAB 7.3 (HDF5) file; the official SVHN files are MATLAB 5")
    if "X" not in mat or "y" not in mat:
        raise DatasetFormatError(f"{path} lacks the variables X and y of an SVHN .mat file")
    x, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise DatasetFormatError(f"{path}: X should be uint8 [H, W, 3, N], not {x.dtype} {list(x.shape)}")
    if y.shape[0] != x.shape[3]:
        raise DatasetFormatError(f"{path} has {x.shape[3]} images but {y.shape[0]} labels")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() > 10):
        raise DatasetFormatError(f"{path} has labels outside 1..10")
    y[y == 10] = 0
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # [H, W, C, N] -> [N, C, H, W]
    return torch.from_numpy(images), torch.from_numpy(y)


def load_svhn(data_dir: str | os.PathLike | None = None) -> InMemoryDataset:
    files = find_files(
        "svhn", SVHN_FILES, data_dir, hint="the SVHN cropped-digits format 2 files"
    )
    train_x, train_y = read_mat(files["train"])
    test_x, test_y = read_mat(files["test"])
    return InMemoryDataset("svhn", train_x, train_y, test_x, test_y, 10, SVHN_MEAN, SVHN_STD, augment="crop", pad=4)
