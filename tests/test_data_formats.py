"""Loaders read small files written here in the real formats: CIFAR-10 pickles, SVHN .mat, IDX."""
from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from elth.data import DatasetFormatError, DatasetNotFoundError, load_dataset
from elth.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from elth.data.errors import UnknownDatasetError
from elth.data.idx import read_idx
from elth.errors import ElthError


@pytest.fixture(autouse=True)
def no_ambient_data(monkeypatch, tmp_path):
    """Only the directories a test names hold data: no $ELTH_DATA, empty home and working dir."""
    monkeypatch.delenv("ELTH_DATA", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)


# -- CIFAR-10 ---------------------------------------------------------------------------------------
def write_cifar10(directory: Path, per_batch: int = 7, seed: int = 0) -> dict[str, tuple[np.ndarray, list]]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"img{i}.png".encode() for i in range(per_batch)],
        }
        with open(directory / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (data, labels)
    return written


def test_cifar10_pixels_labels_and_layout(tmp_path):
    written = write_cifar10(tmp_path / "cifar-10-batches-py")
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.info.input_shape == (3, 32, 32) and ds.info.num_classes == 10
    assert (ds.num_train, ds.num_test) == (35, 7)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    # Batches are concatenated in order 1..5; a row holds the R, G, B planes, each row-major.
    data3, labels3 = written["data_batch_3"]
    k = 2 * 7 + 4  # image 4 of batch 3
    for channel, row, col in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert ds.train_x[k, channel, row, col] == data3[4, channel * 1024 + row * 32 + col]
    assert ds.train_y[k] == labels3[4]
    test_data, test_labels = written["test_batch"]
    assert torch.equal(ds.test_x, torch.from_numpy(test_data.reshape(-1, 3, 32, 32)))
    assert ds.test_y.tolist() == test_labels
    assert ds.augment == "crop_flip" and ds.pad == 4
    assert ds.mean == CIFAR10_MEAN and ds.std == CIFAR10_STD


def test_cifar10_files_directly_in_the_directory_and_any_pickle_protocol(tmp_path):
    write_cifar10(tmp_path)
    # Re-pickle one batch with the newest protocol (numpy's out-of-band buffers, other globals).
    with open(tmp_path / "test_batch", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=pickle.HIGHEST_PROTOCOL)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert torch.equal(ds.test_x.reshape(7, -1), torch.from_numpy(batch[b"data"]))


class _Payload:
    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return os.makedirs, (self.target,)


def test_cifar10_refuses_code_in_a_pickle(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "code-ran"
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _Payload(str(marker)), b"labels": []}, f, protocol=2)
    with pytest.raises(DatasetFormatError, match="data_batch_2"):
        load_dataset("cifar10", data_dir=tmp_path)
    assert not marker.exists()


def test_cifar10_wrong_content_is_a_clear_error(tmp_path):
    write_cifar10(tmp_path)
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, f, protocol=2)
    with pytest.raises(DatasetFormatError, match=r"uint8 \[N, 3072\]"):
        load_dataset("cifar10", data_dir=tmp_path)
    (tmp_path / "data_batch_1").write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetFormatError, match="not a CIFAR-10 python batch"):
        load_dataset("cifar10", data_dir=tmp_path)


def test_cifar10_missing_batch_names_it(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("cifar10", data_dir=tmp_path)
    assert f"{tmp_path} lacks data_batch_3" in str(e.value)


# -- SVHN -------------------------------------------------------------------------------------------
def write_svhn_mat(path: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # H x W x C x N as in the official files
    y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10, where 10 is the digit 0
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def test_svhn_layout_and_label_ten_is_zero(tmp_path):
    x, y = write_svhn_mat(tmp_path / "train_32x32.mat", 23, seed=1)
    tx, _ = write_svhn_mat(tmp_path / "test_32x32.mat", 11, seed=2)
    ds = load_dataset("svhn", data_dir=tmp_path)
    assert ds.info.input_shape == (3, 32, 32) and (ds.num_train, ds.num_test) == (23, 11)
    assert ds.train_x.dtype == torch.uint8
    for i, c, r, col in [(0, 0, 0, 0), (9, 2, 17, 3), (22, 1, 31, 31)]:
        assert ds.train_x[i, c, r, col] == x[r, col, c, i]
    assert torch.equal(ds.test_x[5], torch.from_numpy(tx[..., 5].transpose(2, 0, 1).copy()))
    expected = [v % 10 for v in y.ravel().tolist()]
    assert ds.train_y.tolist() == expected and 0 in expected and 10 not in ds.train_y.tolist()
    assert ds.augment == "crop"  # digits are cropped but never mirrored


def test_svhn_bad_mat_file(tmp_path):
    scipy.io.savemat(tmp_path / "train_32x32.mat", {"images": np.zeros((2, 2), np.uint8)})
    write_svhn_mat(tmp_path / "test_32x32.mat", 3, seed=0)
    with pytest.raises(DatasetFormatError, match="lacks the variables X and y"):
        load_dataset("svhn", data_dir=tmp_path)


# -- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------------------------
def write_idx_set(directory: Path, n_train: int = 9, n_test: int = 4, gz: bool = True, seed: int = 0) -> dict:
    """The four MNIST-style files; the headers use the published magic numbers 2051 and 2049."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        files = {
            f"{prefix}-images-idx3-ubyte": struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes(),
            f"{prefix}-labels-idx1-ubyte": struct.pack(">II", 2049, n) + labels.tobytes(),
        }
        for name, raw in files.items():
            if gz:
                (directory / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (directory / name).write_bytes(raw)
        out[prefix] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets(tmp_path, name, gz):
    written = write_idx_set(tmp_path, gz=gz)
    ds = load_dataset(name, data_dir=tmp_path)
    assert ds.info.name == name and ds.info.input_shape == (1, 28, 28) and ds.info.num_classes == 10
    assert ds.train_x.shape == (9, 1, 28, 28) and ds.test_x.shape == (4, 1, 28, 28)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    images, labels = written["train"]
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(images))
    assert ds.train_y.tolist() == labels.tolist()
    assert torch.equal(ds.test_x[:, 0], torch.from_numpy(written["t10k"][0]))
    assert ds.augment == "none"


def test_read_idx_rejects_damaged_files(tmp_path):
    good = struct.pack(">II", 2049, 3) + bytes([1, 2, 3])
    (tmp_path / "ok").write_bytes(good)
    assert read_idx(tmp_path / "ok").tolist() == [1, 2, 3]
    (tmp_path / "truncated").write_bytes(good[:-1])
    with pytest.raises(DatasetFormatError, match="needs 3"):
        read_idx(tmp_path / "truncated")
    (tmp_path / "magic").write_bytes(struct.pack(">II", 0x12345678, 3) + bytes(3))
    with pytest.raises(DatasetFormatError, match="bad magic number"):
        read_idx(tmp_path / "magic")
    (tmp_path / "gz").write_bytes(gzip.compress(good)[:-6])
    with pytest.raises(DatasetFormatError, match="damaged gzip"):
        read_idx(tmp_path / "gz")


def test_idx_label_count_mismatch(tmp_path):
    write_idx_set(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, 3) + bytes(3))
    with pytest.raises(DatasetFormatError, match="should hold 4 labels"):
        load_dataset("mnist", data_dir=tmp_path)


# -- digits (embedded) ------------------------------------------------------------------------------
def test_digits_split_values_and_determinism():
    from sklearn.datasets import load_digits as sklearn_digits

    ds = load_dataset("digits")
    assert ds.info.input_shape == (1, 8, 8) and ds.info.num_classes == 10
    assert (ds.num_train, ds.num_test) == (1437, 360)
    assert ds.train_x.dtype == torch.uint8 and int(ds.train_x.max()) == 255
    # Every class gives about a fifth of its images to the test split.
    assert all(34 <= c <= 38 for c in torch.bincount(ds.test_y, minlength=10).tolist())
    # train + test is exactly scikit-learn's set, values v scaled to round(v * 255 / 16).
    bunch = sklearn_digits()
    scaled = np.floor(bunch.images * 255 / 16 + 0.5).astype(np.uint8)
    ours = sorted(
        (bytes(x.flatten().tolist()), int(y))
        for xs, ys in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y))
        for x, y in zip(xs, ys)
    )
    theirs = sorted((bytes(x.flatten().tolist()), int(y)) for x, y in zip(scaled, bunch.target))
    assert ours == theirs
    again = load_dataset("digits")
    assert torch.equal(again.test_x, ds.test_x) and torch.equal(again.train_y, ds.train_y)


def test_errors_are_elth_errors():
    for cls in (DatasetFormatError, DatasetNotFoundError, UnknownDatasetError):
        assert issubclass(cls, ElthError)
