"""Masks of the pruning baselines, computed on a model in memory (no training, no files).

Counting follows the paper's framework: the sparsity is over every prunable weight, excluded layers
(all ones) included, and pruning is global over the eligible weights.
`workflows.baseline_tickets.prune_ticket` puts these pieces together with rewind points and tickets.

- `score_mask`: one-shot by magnitude, SNIP or GraSP; SynFlow iteratively (see `scores`).
- `uniform_random_mask`: the same sparsity in every eligible layer, positions drawn at random.
- `permuted_mask`: each layer's mask randomly permuted within the layer (layerwise sparsity kept).
- `snip_extra_mask`: copied masks for the units a stretched ticket shares with its source, SNIP
  masks for the extra units, each extra layer keeping as many weights as its copied mask had.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import nn

from elth.masks import (
    Mask,
    PruningError,
    collapsed_layers,
    count,
    count_for_sparsity,
    full_mask,
    prune_lowest,
)
from elth.sparsity.scores import (
    SCORE_BATCH_SIZE,
    SYNFLOW_ROUNDS,
    Examples,
    grasp_scores,
    magnitude_scores,
    snip_scores,
    synflow_mask,
)

#: Methods that score the target's rewind weights and prune globally.
SCORE_METHODS = ("magnitude", "snip", "grasp", "synflow")
#: Default scoring examples per class (the reference setting of SNIP and GraSP).
SCORE_EXAMPLES_PER_CLASS = 10


@dataclass(frozen=True)
class ScoringOptions:
    score_examples: int = SCORE_EXAMPLES_PER_CLASS  # per class
    synflow_rounds: int = SYNFLOW_ROUNDS
    train_mode: bool = False  # BN with batch statistics while scoring (default: eval mode)
    batch_size: int = SCORE_BATCH_SIZE

    def to_dict(self) -> dict:
        return {
            "score_examples_per_class": self.score_examples,
            "synflow_rounds": self.synflow_rounds,
            "score_train_mode": self.train_mode,
            "score_batch_size": self.batch_size,
        }


def derived_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose ('random', 'reinit', ...) that differs from `seed` itself.

    Model initialisation uses `seed` directly, so a re-initialisation from `derived_seed(seed,
    'reinit')` is fresh even when the ticket was found with the same `--seed`.
    """
    digest = hashlib.sha256(f"elth:{purpose}:{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def kept_for_sparsity(total: int, sparsity: float) -> int:
    try:
        return count_for_sparsity(total, sparsity)
    except ValueError as e:
        raise PruningError(str(e)) from None


def check_reachable(mask: Mask, eligible: list[str], kept: int) -> None:
    """Raise if `kept` weights overall cannot be reached by pruning only `eligible` weights."""
    alive, total = count(mask)
    alive_eligible = sum(int(mask[n].sum()) for n in eligible)
    floor = alive - alive_eligible
    if kept > alive:
        raise PruningError(f"cannot keep {kept} of {total} weights: only {alive} are left")
    if kept < floor:
        raise PruningError(
            f"sparsity {1 - kept / total:.4%} is out of reach: {floor} of the {total} weights are excluded "
            f"from pruning, so at most {1 - floor / total:.4%} can be pruned"
        )


def score_mask(
    method: str,
    model: nn.Module,
    eligible: list[str],
    kept: int,
    *,
    examples: Examples | None = None,
    options: ScoringOptions = ScoringOptions(),
    progress: bool = False,
) -> Mask:
    """Prune `model` (dense) globally over `eligible` until `kept` weights remain overall."""
    mask = full_mask(model)
    check_reachable(mask, eligible, kept)
    n_prune = count(mask)[0] - kept
    if method == "synflow":
        alive_eligible = sum(int(mask[n].sum()) for n in eligible)
        return synflow_mask(model, eligible, mask, alive_eligible - n_prune, rounds=options.synflow_rounds,
                            progress=progress)
    if method == "magnitude":
        scores = magnitude_scores(model, eligible, mask)
    elif method in ("snip", "grasp"):
        if examples is None:
            raise ValueError(f"{method} needs scoring examples")
        fn = snip_scores if method == "snip" else grasp_scores
        scores = fn(model, eligible, examples, mask=mask, train_mode=options.train_mode,
                    batch_size=options.batch_size)
    else:
        raise ValueError(f"{method!r} is not a score-based method; choose one of {', '.join(SCORE_METHODS)}")
    return prune_lowest(scores, mask, n_prune, eligible)


def _largest_remainder(sizes: list[int], total_keep: int) -> list[int]:
    """Per-layer counts proportional to `sizes` that sum exactly to `total_keep`."""
    n = sum(sizes)
    exact = [s * total_keep / n for s in sizes]
    counts = [int(e) for e in exact]
    order = sorted(range(len(sizes)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: total_keep - sum(counts)]:
        counts[i] += 1
    return counts


def _random_layer(shape: torch.Size, keep: int, g: torch.Generator) -> torch.Tensor:
    flat = torch.zeros(shape.numel(), dtype=torch.bool)
    flat[torch.randperm(shape.numel(), generator=g)[:keep]] = True
    return flat.view(shape)


def uniform_random_mask(mask: Mask, eligible: list[str], kept: int, generator: torch.Generator) -> Mask:
    """Random positions, the same sparsity in every eligible layer (to the weight), `kept` overall."""
    if any(not bool(mask[n].all()) for n in eligible):
        raise ValueError("uniform random pruning starts from a dense mask")
    check_reachable(mask, eligible, kept)
    floor = count(mask)[0] - sum(mask[n].numel() for n in eligible)
    counts = _largest_remainder([mask[n].numel() for n in eligible], kept - floor)
    new = {n: m.clone() for n, m in mask.items()}
    for n, keep in zip(eligible, counts):
        new[n] = _random_layer(mask[n].shape, keep, generator)
    return new


def permuted_mask(mask: Mask, generator: torch.Generator) -> Mask:
    """Every layer's mask shuffled within the layer: the same count per layer, random positions."""
    out = {}
    for n, m in mask.items():
        flat = m.detach().cpu().reshape(-1)
        out[n] = flat[torch.randperm(flat.numel(), generator=generator)].view(m.shape).clone()
    return out


def snip_extra_mask(
    model: nn.Module,
    copied: Mask,
    extra: list[str],
    examples: Examples,
    *,
    options: ScoringOptions = ScoringOptions(),
) -> Mask:
    """SNIP masks for the `extra` layers, each keeping as many weights as its `copied` mask.

    `model` holds the stretched weights, dense in the extra layers. The SNIP scores are taken on the
    network with the copied masks applied everywhere else and the extra layers dense.
    """
    scoring = {n: (torch.ones_like(m) if n in extra else m.clone()) for n, m in copied.items()}
    scores = snip_scores(model, extra, examples, mask=scoring, train_mode=options.train_mode,
                         batch_size=options.batch_size)
    new = {n: m.clone() for n, m in copied.items()}
    for n in extra:
        keep = int(copied[n].sum())
        layer = prune_lowest({n: scores[n]}, {n: scoring[n]}, scoring[n].numel() - keep, [n])
        new[n] = layer[n]
    return new


def collapse_warnings(mask: Mask) -> list[str]:
    return [f"layer collapse: {n} has no weights left" for n in collapsed_layers(mask)]
