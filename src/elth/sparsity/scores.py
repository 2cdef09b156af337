"""Saliency scores of pruning-at-initialisation methods: magnitude, SNIP, GraSP, SynFlow.

Every function returns `dict[name -> score tensor]` for the requested weight names, with the
convention of `masks.prune_lowest`: **the lowest scores are pruned**.

- magnitude: |w|.
- SNIP (Lee et al. 2019): |g * w|, g the gradient of the cross-entropy loss summed over the
  scoring batches (equivalently |dL/dm| at m = 1).
- GraSP (Wang et al. 2020): with the logits divided by a temperature T = 200, g = gradient of the
  loss summed over the scoring batches (no graph), then H g = sum over batches of the gradient of
  (g . grad L_batch), computed by double back-propagation. The GraSP score is S = -w * (H g) and
  the weights with the *highest* S are removed (the signed score of the GraSP paper, not its
  absolute value). `grasp_scores` therefore returns **-S = w * (H g)**, so that removing the
  lowest returned values removes the highest GraSP scores. g and H g run over every prunable
  weight of the model (all conv/linear weights, as in GraSP), also those that stay unpruned.
- SynFlow (Tanaka et al. 2020): on a copy of the model with every parameter and floating-point
  buffer (BN running statistics included) replaced by its absolute value, in eval mode, the input
  an all-ones tensor of one example's shape, R = sum of the outputs and score = |dR/dw * w|.
  `synflow_mask` prunes iteratively (default 100 rounds) with the exponential schedule
  density_k = d^(k / rounds), re-scoring the masked model each round without resetting weights.

With several ranks (torchrun), SNIP's and GraSP's scoring batches are shared out over the ranks and
their gradient sums all-reduced, so every rank gets the scores of all the examples (and the same
mask); magnitude and SynFlow need no data and are computed alike on every rank.
  The copy is taken once, so the caller's model keeps its signs (the original restores them).
  SynFlow always runs in float64: R is a sum over paths of products of |w|, which overflows
  float32 on deep networks (e.g. ~27 per 3x3x64 conv layer, so ~1e156 for ResNet-110); non-finite
  scores raise an `ElthError`.

Data-driven scores (SNIP, GraSP) use a fixed set of scoring examples and, by default, the model in
**eval mode**: BN layers normalise with their running statistics, so a score does not depend on how
the scoring examples are batched and the model scored is the one that will be trained from the
rewind point. `train_mode=True` uses batch statistics instead (the scoring runs on a copy, so the
caller's running statistics are untouched). When a mask is given it is applied (pruned weights are
zero) before scoring.
"""
from __future__ import annotations

import copy
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from elth.console import progress_bar
from elth.errors import ElthError
from elth.masks import Mask, apply_mask, prunable_names, prune_lowest
from elth.training import distributed

Scores = dict[str, torch.Tensor]
Examples = tuple[torch.Tensor, torch.Tensor]

#: Examples per forward pass when scoring (gradients are summed over the batches).
SCORE_BATCH_SIZE = 256
GRASP_TEMPERATURE = 200.0
SYNFLOW_ROUNDS = 100


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _batches(examples: Examples, batch_size: int, device: torch.device) -> Iterator[Examples]:
    x, y = examples
    if x.shape[0] == 0:
        raise ElthError("no scoring examples: the dataset gave none for the requested classes")
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size].to(device), y[i : i + batch_size].to(device)


def _my_batches(examples: Examples, batch_size: int, device: torch.device) -> Iterator[Examples]:
    """This rank's share of the scoring batches (round-robin; all of them on one process).

    The batches themselves do not change with the rank count (BatchNorm in train mode sees the same
    examples together), and the sums over them are all-reduced by the callers.
    """
    for i, batch in enumerate(_batches(examples, batch_size, device)):
        if distributed.is_mine(i):
            yield batch


def _scoring_copy(model: nn.Module, mask: Mask | None, train_mode: bool) -> nn.Module:
    net = copy.deepcopy(model)
    if mask is not None:
        apply_mask(net, mask)
    net.train(train_mode)
    return net


def _weights(net: nn.Module, names: list[str]) -> list[torch.Tensor]:
    params = dict(net.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no weights named {missing[:3]}")
    return [params[n] for n in names]


@torch.no_grad()
def magnitude_scores(model: nn.Module, names: list[str], mask: Mask | None = None) -> Scores:
    """|w| (zero where `mask` prunes)."""
    params = dict(model.named_parameters())
    out = {}
    for n in names:
        w = params[n].detach()
        if mask is not None:
            w = w * mask[n].to(w.device, w.dtype)
        out[n] = w.abs().clone()
    return out


def loss_gradient(
    net: nn.Module,
    weights: list[torch.Tensor],
    examples: Examples,
    *,
    temperature: float = 1.0,
    batch_size: int = SCORE_BATCH_SIZE,
) -> list[torch.Tensor]:
    """Gradient of the mean cross-entropy of each batch, summed over the batches (no graph kept)."""
    total = [torch.zeros_like(w) for w in weights]
    for x, y in _my_batches(examples, batch_size, _device(net)):
        loss = F.cross_entropy(net(x) / temperature, y)
        for acc, g in zip(total, torch.autograd.grad(loss, weights)):
            acc += g
    distributed.all_reduce_sum_(total)
    return total


def snip_scores(
    model: nn.Module,
    names: list[str],
    examples: Examples,
    *,
    mask: Mask | None = None,
    train_mode: bool = False,
    batch_size: int = SCORE_BATCH_SIZE,
) -> Scores:
    """SNIP connection sensitivity |g * w| (see the module docstring)."""
    net = _scoring_copy(model, mask, train_mode)
    weights = _weights(net, names)
    grads = loss_gradient(net, weights, examples, batch_size=batch_size)
    return {n: (g * w).detach().abs() for n, g, w in zip(names, grads, weights)}


def grasp_scores(
    model: nn.Module,
    names: list[str],
    examples: Examples,
    *,
    mask: Mask | None = None,
    train_mode: bool = False,
    temperature: float = GRASP_TEMPERATURE,
    batch_size: int = SCORE_BATCH_SIZE,
) -> Scores:
    """The *negated* GraSP score, w * (H g): pruning the lowest removes the highest GraSP scores."""
    net = _scoring_copy(model, mask, train_mode)
    all_names = prunable_names(net)
    unknown = [n for n in names if n not in all_names]
    if unknown:
        raise ValueError(f"GraSP scores only prunable weights; not prunable: {unknown[:3]}")
    weights = _weights(net, all_names)
    g = loss_gradient(net, weights, examples, temperature=temperature, batch_size=batch_size)
    hg = [torch.zeros_like(w) for w in weights]
    # Attention by its plain formula: PyTorch's fused attention kernels have no second derivative.
    with sdpa_kernel(SDPBackend.MATH):
        for x, y in _my_batches(examples, batch_size, _device(net)):
            loss = F.cross_entropy(net(x) / temperature, y)
            grad = torch.autograd.grad(loss, weights, create_graph=True)
            z = sum((gi * di).sum() for gi, di in zip(g, grad))
            for acc, h in zip(hg, torch.autograd.grad(z, weights)):
                acc += h
    distributed.all_reduce_sum_(hg)
    index = {n: i for i, n in enumerate(all_names)}
    return {n: (weights[index[n]] * hg[index[n]]).detach() for n in names}


# -- SynFlow ------------------------------------------------------------------------------------
def linearised_copy(model: nn.Module, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A copy in `dtype` and eval mode with every parameter and float buffer replaced by |value|."""
    net = copy.deepcopy(model).to(dtype)
    net.eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    return net


def _synflow_round(net: nn.Module, names: list[str], input_shape: tuple[int, ...]) -> Scores:
    weights = _weights(net, names)
    x = torch.ones((1, *input_shape), dtype=weights[0].dtype, device=weights[0].device)
    r = net(x).sum()
    if not torch.isfinite(r):
        raise ElthError("SynFlow's objective overflows even in float64 for this network")
    grads = torch.autograd.grad(r, weights)
    scores = {n: (g * w).detach().abs() for n, g, w in zip(names, grads, weights)}
    if any(not bool(torch.isfinite(s).all()) for s in scores.values()):
        raise ElthError("SynFlow scores overflow even in float64 for this network")
    return scores


def _input_shape(model: nn.Module, input_shape: tuple[int, ...] | None) -> tuple[int, ...]:
    shape = input_shape or getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError("SynFlow needs the shape of one input example")
    return tuple(shape)


def synflow_scores(
    model: nn.Module,
    names: list[str],
    *,
    mask: Mask | None = None,
    input_shape: tuple[int, ...] | None = None,
) -> Scores:
    """One SynFlow scoring pass, |dR/dw * w| on the linearised (masked) model, in float64."""
    net = linearised_copy(model)
    if mask is not None:
        apply_mask(net, mask)
    return _synflow_round(net, names, _input_shape(model, input_shape))


def exponential_schedule(start: int, end: int, rounds: int) -> list[int]:
    """Weights kept after each round: start * (end/start)^(k/rounds), k = 1..rounds, ending at `end`."""
    if rounds < 1:
        raise ValueError(f"SynFlow needs at least one round, got {rounds}")
    if start <= 0:
        return [0] * rounds
    d = end / start
    kept = [round(start * d ** (k / rounds)) for k in range(1, rounds)] + [end]
    # Rounding never lets a later round keep more than an earlier one.
    for i in range(1, len(kept)):
        kept[i] = min(kept[i], kept[i - 1])
    return kept


def synflow_mask(
    model: nn.Module,
    names: list[str],
    mask: Mask,
    keep: int,
    *,
    rounds: int = SYNFLOW_ROUNDS,
    input_shape: tuple[int, ...] | None = None,
    progress: bool = False,
) -> Mask:
    """Iterative SynFlow: prune `names` from their current count down to `keep` weights in `rounds` rounds."""
    shape = _input_shape(model, input_shape)
    net = linearised_copy(model)
    alive = sum(int(mask[n].sum()) for n in names)
    if keep > alive:
        raise ValueError(f"cannot keep {keep} weights: only {alive} are left among the eligible ones")
    mask = {n: m.clone() for n, m in mask.items()}
    for target in progress_bar(exponential_schedule(alive, keep, rounds), desc="synflow", disable=not progress,
                       leave=False):
        apply_mask(net, mask)
        scores = _synflow_round(net, names, shape)
        mask = prune_lowest(scores, mask, alive - target, names)
        alive = target
    return mask
