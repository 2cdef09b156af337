"""ImageNet-style folders: decoding, transforms, determinism independent of workers, resume."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from elth.data import DatasetFormatError, DatasetNotFoundError, dataset_info, load_dataset
from elth.data import imagenet
from elth.data.imagenet import IMAGENET_MEAN, IMAGENET_STD, random_resized_crop_box

CLASSES = ("n02_goldfish", "n01_tench", "n03_shark")  # deliberately not in sorted order


def save(path: Path, array: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array)
    if mode:
        img = img.convert(mode)
    img.save(path)


@pytest.fixture(scope="module")
def tiny_imagenet(tmp_path_factory) -> Path:
    """3 classes; 4 training images each (JPEG and PNG, several sizes and modes), 2 val each."""
    root = tmp_path_factory.mktemp("imagenet")
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (23, 61), (300, 200), (64, 64)]
    for c in CLASSES:
        for i, (w, h) in enumerate(sizes):
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            ext, mode = [("JPEG", None), ("png", None), ("jpg", "L"), ("png", "RGBA")][i]
            save(root / "train" / c / f"{c}_{i}.{ext}", arr, mode)
        for i in range(2):
            save(root / "val" / c / f"val_{c}_{i}.png", rng.integers(0, 256, (50 + 7 * i, 70, 3), dtype=np.uint8))
    (root / "train" / CLASSES[0] / "notes.txt").write_text("not an image")
    return root


def test_folders_classes_and_shapes(tiny_imagenet):
    ds = load_dataset("imagenet", data_dir=tiny_imagenet, num_workers=0)
    assert ds.classes == sorted(CLASSES)
    assert ds.info.input_shape == (3, 224, 224) and ds.info.num_classes == 3
    assert (ds.num_train, ds.num_test) == (12, 6)
    assert dataset_info("imagenet", data_dir=tiny_imagenet) == ds.info
    batches = list(ds.train_epoch(0, batch_size=5, seed=1))
    assert [x.shape[0] for x, _ in batches] == [5, 5, 2] == [5, 5, 2][: ds.iterations_per_epoch(5)]
    x, y = batches[0]
    assert x.shape[1:] == (3, 224, 224) and x.dtype == torch.float32 and y.dtype == torch.int64
    labels = torch.cat([y for _, y in batches])
    assert torch.bincount(labels).tolist() == [4, 4, 4]
    test_labels = torch.cat([y for _, y in ds.test_batches(4)])
    assert test_labels.tolist() == [0, 0, 1, 1, 2, 2]  # val in class order, files sorted


def test_same_batches_with_any_worker_count(tiny_imagenet):
    one = load_dataset("imagenet", data_dir=tiny_imagenet, num_workers=0)
    two = load_dataset("imagenet", data_dir=tiny_imagenet, num_workers=2)
    for (x1, y1), (x2, y2) in zip(one.train_epoch(3, 4, seed=9), two.train_epoch(3, 4, seed=9)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    for (x1, _), (x2, _) in zip(one.test_batches(4), two.test_batches(4)):
        assert torch.equal(x1, x2)
    a, b = one.scoring_examples(1, seed=2), two.scoring_examples(1, seed=2)
    assert torch.equal(a[0], b[0]) and a[1].tolist() == [0, 1, 2]
    # Another seed or epoch reorders and re-augments.
    first = next(iter(one.train_epoch(3, 12, seed=9)))
    assert not torch.equal(first[0], next(iter(one.train_epoch(4, 12, seed=9)))[0])


def test_resume_skips_batches_without_decoding(tiny_imagenet, monkeypatch):
    ds = load_dataset("imagenet", data_dir=tiny_imagenet, num_workers=0)
    full = list(ds.train_epoch(5, 5, seed=2))
    opened = []
    real_open = imagenet.open_rgb
    monkeypatch.setattr(imagenet, "open_rgb", lambda p: opened.append(p) or real_open(p))
    resumed = list(ds.train_epoch(5, 5, seed=2, start=2))
    assert len(resumed) == 1 and len(opened) == 2  # only the last batch's two images
    assert torch.equal(resumed[0][0], full[2][0]) and torch.equal(resumed[0][1], full[2][1])


def pixels(x: torch.Tensor) -> torch.Tensor:
    """Normalised [3, H, W] -> uint8 pixel values."""
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    return ((x * std + mean) * 255).round().to(torch.uint8)


def test_test_transform_is_resize_256_center_crop_224(tmp_path):
    root = tmp_path / "folders"
    wide = np.zeros((256, 512, 3), np.uint8)
    wide[:, :256] = (255, 0, 0)
    wide[:, 256:] = (0, 0, 255)
    tall = np.zeros((1024, 256, 3), np.uint8)
    tall[:512] = 255
    save(root / "train" / "a" / "x.png", wide)
    save(root / "train" / "b" / "x.png", wide)
    save(root / "val" / "a" / "wide.png", wide)
    save(root / "val" / "a" / "zsolid.png", np.full((600, 300, 3), (10, 200, 30), np.uint8))
    save(root / "val" / "b" / "tall.png", tall)
    ds = load_dataset("imagenet", data_dir=root, num_workers=0)
    x = torch.cat([x for x, _ in ds.test_batches(8)])
    wide_out, solid_out, tall_out = (pixels(v) for v in x)
    # 512x256 keeps its size; the central 224 columns start at 144: 112 red then 112 blue.
    assert (wide_out[:, :, :112] == torch.tensor([255, 0, 0])[:, None, None]).all()
    assert (wide_out[:, :, 112:] == torch.tensor([0, 0, 255])[:, None, None]).all()
    # 256x1024: rows 400..623 are kept, the colour changes at row 512.
    assert (tall_out[:, :112] == 255).all() and (tall_out[:, 112:] == 0).all()
    # 300x600 is resized to 256x512; a solid colour stays exactly that colour.
    assert (solid_out == torch.tensor([10, 200, 30])[:, None, None]).all()
    normalised = (torch.tensor([10, 200, 30]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[1, :, 100, 100], normalised, atol=1e-5)


def test_train_transform_crops_scales_and_flips(tmp_path):
    """A ramp image (red = column, green = row) shows each crop's window and orientation."""
    root = tmp_path / "ramp"
    ramp = np.zeros((256, 256, 3), np.uint8)
    ramp[..., 0] = np.arange(256)[None, :]
    ramp[..., 1] = np.arange(256)[:, None]
    save(root / "train" / "a" / "ramp.png", ramp)
    save(root / "val" / "a" / "ramp.png", ramp)
    ds = load_dataset("imagenet", data_dir=root, num_workers=0)
    flipped = 0
    for epoch in range(24):
        (x, _), = list(ds.train_epoch(epoch, 1, seed=0))
        out = pixels(x[0]).int()
        red, green = out[0], out[1]
        rows_down = (green[1:] >= green[:-1]).all()
        left_to_right = (red[:, 1:] >= red[:, :-1]).all()
        right_to_left = (red[:, 1:] <= red[:, :-1]).all()
        assert rows_down and (left_to_right or right_to_left)
        flipped += int(right_to_left and not left_to_right)
        width = int(red.max() - red.min()) + 1
        height = int(green.max() - green.min()) + 1
        # The crop covers 8%..100% of the image with aspect ratio in [3/4, 4/3] (rounding aside).
        assert 0.07 <= width * height / 256**2 <= 1.0
        assert 0.7 <= width / height <= 1.4
    assert 4 <= flipped <= 20


def test_random_resized_crop_box_bounds():
    rng = np.random.default_rng(0)
    for width, height in [(500, 375), (64, 64), (1000, 40), (40, 1000)]:
        for _ in range(200):
            left, top, w, h = random_resized_crop_box(width, height, rng)
            assert 0 <= left and left + w <= width and 0 <= top and top + h <= height and w > 0 and h > 0
    # An extreme aspect ratio falls back to the largest central crop within the ratio range.
    assert random_resized_crop_box(1000, 40, np.random.default_rng(1)) == (473, 0, 53, 40)
    assert math.isclose(53 / 40, 4 / 3, rel_tol=0.01)


def test_val_must_be_sorted_into_class_folders(tmp_path):
    root = tmp_path / "flat"
    save(root / "train" / "a" / "x.png", np.zeros((8, 8, 3), np.uint8))
    save(root / "val" / "ILSVRC2012_val_00000001.JPEG", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetFormatError, match="sort them into class folders"):
        load_dataset("imagenet", data_dir=root)
    save(root / "val" / "zebra" / "y.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetFormatError, match=r"has class folders missing from .*: zebra"):
        load_dataset("imagenet", data_dir=root)


def test_broken_image_is_a_clear_error(tmp_path):
    root = tmp_path / "broken"
    save(root / "train" / "a" / "x.png", np.zeros((8, 8, 3), np.uint8))
    save(root / "val" / "a" / "y.png", np.zeros((8, 8, 3), np.uint8))
    (root / "train" / "a" / "z.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ds = load_dataset("imagenet", data_dir=root, num_workers=1)
    with pytest.raises(DatasetFormatError, match="cannot decode .*z.jpg"):
        list(ds.train_epoch(0, 2, seed=0))


def test_missing_imagenet(tmp_path, monkeypatch):
    monkeypatch.delenv("ELTH_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"expected train/, val/"):
        load_dataset("imagenet", data_dir=tmp_path / "nope")


def test_ranks_decode_only_their_share(tiny_imagenet):
    """Two ranks' shares of every batch, side by side, are the whole batch (decoded and augmented alike)."""
    ds = load_dataset("imagenet", data_dir=tiny_imagenet, num_workers=0)
    whole = list(ds.train_epoch(2, 5, seed=4, start=1))
    shares = [list(ds.train_epoch(2, 5, seed=4, start=1, part=(r, 2))) for r in range(2)]
    assert [x.shape[0] for x, _ in shares[0]] == [2, 1] and [x.shape[0] for x, _ in shares[1]] == [3, 1]
    for (x, y), (x0, y0), (x1, y1) in zip(whole, *shares):
        assert torch.equal(x, torch.cat([x0, x1])) and torch.equal(y, torch.cat([y0, y1]))
    test = [y for _, y in ds.test_batches(2)]
    test_shares = [[y for _, y in ds.test_batches(2, part=(r, 2))] for r in range(2)]
    assert [len(t) for t in test_shares] == [2, 1]  # 6 val images in batches of 2: rank 0 has 0 and 2, rank 1 has 1
    for got, want in zip(test_shares[0] + test_shares[1], [test[0], test[2], test[1]]):
        assert torch.equal(got, want)
