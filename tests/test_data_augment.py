"""In-memory datasets: deterministic epochs, mid-epoch resume, and crop/flip that is exactly a padded
crop (possibly mirrored) of the source image."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from elth.data import InMemoryDataset, synthetic

PAD = 4


def raw_dataset(augment: str, n: int = 40, shape=(3, 8, 8)) -> InMemoryDataset:
    """Distinct random images; mean 0 and std 1/255 make the 'normalised' batches raw pixel values."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(1, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 5
    c = shape[0]
    return InMemoryDataset("raw", x, y, x[:10].clone(), y[:10].clone(), 5,
                           mean=(0.0,) * c, std=(1 / 255,) * c, augment=augment, pad=PAD)


def all_variants(x: torch.Tensor, flips: bool) -> torch.Tensor:
    """[V, N, C, H, W]: every padded crop (and mirror) of every image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD))
    out = []
    for dy in range(2 * PAD + 1):
        for dx in range(2 * PAD + 1):
            crop = padded[:, :, dy : dy + h, dx : dx + w]
            out.append(crop)
            if flips:
                out.append(crop.flip(-1))
    return torch.stack(out)


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return x.round().to(torch.uint8)


def match_sources(ds: InMemoryDataset, batch: torch.Tensor, flips: bool) -> tuple[list[int], list[int]]:
    """For each augmented image: the index of its source image and the variant it matches."""
    variants = all_variants(ds.train_x, flips)  # [V, N, C, H, W]
    sources, kinds = [], []
    for img in to_pixels(batch):
        hits = (variants == img).flatten(2).all(-1).nonzero()
        assert len(hits) >= 1, "an augmented image is no padded crop of any source image"
        kinds.append(int(hits[0, 0]))
        sources.append(int(hits[0, 1]))
    return sources, kinds


@pytest.mark.parametrize("augment", ["crop_flip", "crop"])
def test_augmented_images_are_padded_crops_of_their_sources(augment):
    ds = raw_dataset(augment)
    flips_allowed = augment == "crop_flip"
    mirrored, offsets = 0, set()
    for epoch in range(3):
        seen = []
        for x, y in ds.train_epoch(epoch, batch_size=16, seed=3):
            sources, kinds = match_sources(ds, x, flips=flips_allowed)
            assert y.tolist() == ds.train_y[sources].tolist()
            seen += sources
            if flips_allowed:
                mirrored += sum(k % 2 for k in kinds)
                offsets |= {k // 2 for k in kinds}
            else:
                offsets |= set(kinds)
        assert sorted(seen) == list(range(ds.num_train)), "each image exactly once per epoch"
    # 120 draws: flips happen about half of the time and offsets vary.
    if flips_allowed:
        assert 30 < mirrored < 90
    assert len(offsets) > 20


def test_crop_never_mirrors():
    """Under "crop", a mirrored-only match would fail `match_sources` with flips=False; check too
    that the crop offsets are the ones "crop_flip" draws (same random numbers, no mirror)."""
    a, b = raw_dataset("crop"), raw_dataset("crop_flip")
    for (xa, _), (xb, _) in zip(a.train_epoch(0, 16, 5), b.train_epoch(0, 16, 5)):
        same_or_mirror = (xa == xb).flatten(1).all(1) | (xa.flip(-1) == xb).flatten(1).all(1)
        assert bool(same_or_mirror.all())


def test_no_augmentation_gives_the_images_themselves():
    ds = raw_dataset("crop_flip")
    for x, y in ds.train_epoch(0, 16, seed=0, augment=False):
        sources, kinds = match_sources(ds, x, flips=False)
        assert set(kinds) == {PAD * (2 * PAD + 1) + PAD}  # the centred "crop"
    none = raw_dataset("none")
    xs = torch.cat([x for x, _ in none.train_epoch(0, 16, seed=0)])
    assert sorted(match_sources(none, xs, flips=False)[0]) == list(range(none.num_train))


def test_epochs_are_deterministic_and_seeded():
    ds = synthetic(num_train=100, num_test=20)
    run1 = list(ds.train_epoch(2, 32, seed=7))
    run2 = list(synthetic(num_train=100, num_test=20).train_epoch(2, 32, seed=7))
    assert len(run1) == ds.iterations_per_epoch(32) == 4 and run1[-1][0].shape[0] == 4
    for (x1, y1), (x2, y2) in zip(run1, run2):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other_seed = next(iter(ds.train_epoch(2, 32, seed=8)))
    other_epoch = next(iter(ds.train_epoch(3, 32, seed=7)))
    assert not torch.equal(other_seed[1], run1[0][1]) and not torch.equal(other_epoch[1], run1[0][1])
    assert run1[0][0].dtype == torch.float32 and run1[0][1].dtype == torch.int64


def test_mid_epoch_resume_gives_the_remaining_batches():
    ds = synthetic(num_train=100, num_test=20)
    full = list(ds.train_epoch(1, 16, seed=4))
    fresh = synthetic(num_train=100, num_test=20)  # no cached permutation
    resumed = list(fresh.train_epoch(1, 16, seed=4, start=3))
    assert len(resumed) == len(full) - 3
    for (x1, y1), (x2, y2) in zip(full[3:], resumed):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_test_batches_and_scoring_examples():
    ds = synthetic(num_train=200, num_test=50, num_classes=4)
    xs, ys = zip(*ds.test_batches(16))
    assert torch.equal(torch.cat(ys), ds.test_y) and torch.cat(xs).shape == (50, 3, 32, 32)
    x, y = ds.scoring_examples(per_class=3, seed=1)
    assert torch.bincount(y, minlength=4).tolist() == [3, 3, 3, 3]
    x2, y2 = ds.scoring_examples(per_class=3, seed=1)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(ds.scoring_examples(per_class=3, seed=2)[0], x)


def test_normalisation_uses_mean_and_std():
    x = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    ds = InMemoryDataset("t", x, torch.zeros(2), x, torch.zeros(2), 1, mean=(0.5, 0.5, 0.5),
                         std=(0.25, 0.5, 1.0), augment="none")
    out, _ = next(iter(ds.test_batches(2)))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([2.0, 1.0, 0.5]))


def test_unknown_augmentation_is_refused():
    x = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    with pytest.raises(ValueError, match="augment"):
        InMemoryDataset("t", x, torch.zeros(2), x, torch.zeros(2), 1, augment="flip")


@pytest.mark.parametrize("augment", ["crop_flip", "none"])
def test_rank_shares_of_a_batch_are_the_batch(augment):
    """Data-parallel ranks load contiguous shares of each batch, augmented exactly as in the whole batch."""
    ds = synthetic(num_train=103, num_test=10, augment=augment)
    for b, (x, y) in enumerate(ds.train_epoch(1, 20, seed=3)):
        shares = [list(ds.train_epoch(1, 20, seed=3, part=(r, 3)))[b] for r in range(3)]
        assert [s[0].shape[0] for s in shares] == ([6, 7, 7] if b < 5 else [1, 1, 1])
        assert torch.equal(torch.cat([s[0] for s in shares]), x)
        assert torch.equal(torch.cat([s[1] for s in shares]), y)
    whole = torch.cat([y for _, y in ds.test_batches(3)])
    ranks = [[y for _, y in ds.test_batches(3, part=(r, 2))] for r in range(2)]
    interleaved = [ranks[i % 2][i // 2] for i in range(4)]
    assert torch.equal(torch.cat(interleaved), whole)


@pytest.mark.parametrize("augment", ["crop_flip", "crop", "none"])
def test_several_seeds_at_once_give_each_seeds_own_batches(augment):
    """What a fused group's members get in one gather and augmentation: member k's batches are
    exactly those of `train_epoch` with its seed (order, crops, flips, the short last batch)."""
    data = raw_dataset(augment, n=45)
    seeds = [3, 0, 7]
    together = list(data.train_epoch_members(2, 16, seeds, start=1))
    assert len(together) == 2  # batches 1 and 2 of 3; the last has 13 examples
    for k, seed in enumerate(seeds):
        alone = list(data.train_epoch(2, 16, seed, start=1))
        for (x, y), (xa, ya) in zip(together, alone):
            assert x.shape[0] == len(seeds) and torch.equal(x[k], xa) and torch.equal(y[k], ya)
    x, _ = together[-1]
    assert x.shape[1] == 13 and x.transpose(0, 1).is_contiguous()  # [N, K, ...] memory: the fused input layout
