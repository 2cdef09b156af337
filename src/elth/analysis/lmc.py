"""Linear mode connectivity: is a ticket stable to SGD noise?

Two copies of a ticket are trained from the same rewind weights with the same mask but with
different data orders and augmentation (data seeds). The network (1 - a) W1 + a W2 is evaluated at
evenly spaced a in [0, 1]; the ticket's instability is the largest test error along that path minus
the mean of the two endpoints' errors. A stable ticket (instability near 0) trains to the same
linearly connected region whatever the noise.

Batch normalisation: the running statistics of an interpolated network are not those of its
activations, so by default (`bn="recompute"`) they are re-estimated at every point of the path,
endpoints included, from un-augmented training batches; `bn="interpolate"` interpolates them like
the weights (then a = 0 and a = 1 are exactly the two trained networks).
"""
from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from elth.console import progress_bar
from elth.errors import ElthError
from elth.limits import MAX_LMC_POINTS
from elth.methods import curve_label, short_name
from elth.tickets import Ticket, check_dataset
from elth.training import Protocol, default_device, distributed, evaluate
from elth.training.device import use_channels_last
from elth.workflows.ticket_training import ticket_run_dir, train_ticket, trained_state

BN_MODES = ("recompute", "interpolate")
#: Training batches (at the protocol's batch size) that re-estimate BN statistics at each point.
DEFAULT_BN_BATCHES = 20


class LMCError(ElthError):
    """Settings of a linear mode connectivity analysis that cannot work."""


def interpolate(
    state_a: dict[str, torch.Tensor], state_b: dict[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """(1 - alpha) * a + alpha * b for floating-point tensors; other tensors (counters) from a.

    alpha = 0 gives a's tensors and alpha = 1 b's exactly (torch.lerp is exact at both ends), and a
    weight that is zero in both (pruned by the common mask) stays zero.
    """
    if set(state_a) != set(state_b):
        only = sorted(set(state_a) ^ set(state_b))
        raise LMCError(f"the two states have different tensors ({', '.join(only[:3])})")
    out = {}
    for key, a in state_a.items():
        b = state_b[key]
        if a.shape != b.shape:
            raise LMCError(f"{key!r} has shape {tuple(a.shape)} in one state and {tuple(b.shape)} in the other")
        if a.is_floating_point():
            out[key] = torch.lerp(a, b.to(a.device, a.dtype), float(alpha))
        else:
            out[key] = a.clone()
    return out


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def _training_batches(data, batches: int, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first `batches` un-augmented training batches of the order `seed` (into later epochs if needed)."""
    taken, epoch = 0, 0
    while taken < batches:
        for batch in data.train_epoch(epoch, batch_size, seed, augment=False):
            yield batch
            taken += 1
            if taken == batches:
                return
        epoch += 1


@torch.no_grad()
def recompute_bn_statistics(model: nn.Module, data, batches: int, batch_size: int, seed: int = 0) -> int:
    """Re-estimate every BatchNorm layer's running mean and variance from training batches.

    The statistics are reset and accumulated as a cumulative average (momentum None) over the first
    `batches` un-augmented training batches of the data order `seed`, in train mode without
    gradients; each layer's momentum and the model's mode are restored afterwards. Returns the
    number of BN layers (0: nothing to do, e.g. for MLPs).
    """
    layers = _bn_layers(model)
    if not layers:
        return 0
    if batches < 1 or batch_size < 1:
        raise LMCError(f"recomputing BN statistics needs at least one batch, got {batches} of size {batch_size}")
    device = next(model.parameters()).device
    channels_last = use_channels_last(model, device)
    momenta = [m.momentum for m in layers]
    was_training = model.training
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        for x, _ in _training_batches(data, batches, batch_size, seed):
            x = x.to(device)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            model(x)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return len(layers)


def instability(errors: Sequence[float]) -> float:
    """Largest error along the path minus the mean of the two endpoints' errors."""
    if len(errors) < 2:
        raise LMCError("an interpolation path needs at least its two endpoints")
    return max(errors) - (errors[0] + errors[-1]) / 2


@dataclass
class LMCResult:
    """One ticket's interpolation path between its two trained copies (errors are fractions)."""

    label: str
    model: str
    sparsity: float
    ticket: str  # the ticket's content hash
    dataset: str
    protocol: dict
    data_seeds: tuple[int, int]
    bn: str
    bn_batches: int
    bn_layers: int
    alphas: list[float]
    test_errors: list[float]
    test_accuracies: list[float]
    test_losses: list[float]
    #: Test errors the two copies reached at the end of their training (their own BN statistics).
    trained_test_errors: tuple[float, float]
    train_errors: list[float] | None = None
    train_examples: int = 0
    run_dirs: list[str] | None = None
    ticket_path: str | None = None

    @property
    def endpoint_errors(self) -> tuple[float, float]:
        """Test errors at alpha 0 and 1, evaluated the way every point of the path is."""
        return self.test_errors[0], self.test_errors[-1]

    @property
    def instability(self) -> float:
        return instability(self.test_errors)

    @property
    def train_instability(self) -> float | None:
        return instability(self.train_errors) if self.train_errors else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["data_seeds"] = list(self.data_seeds)
        d["trained_test_errors"] = list(self.trained_test_errors)
        d["endpoint_errors"] = list(self.endpoint_errors)
        d["instability"] = self.instability
        d["train_instability"] = self.train_instability
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "LMCResult":
        derived = {"endpoint_errors", "instability", "train_instability"}
        values = {k: v for k, v in d.items() if k not in derived}
        values["data_seeds"] = tuple(values["data_seeds"])
        values["trained_test_errors"] = tuple(values["trained_test_errors"])
        return cls(**values)


class _ExamplesAsTestSet:
    """Fixed examples served through `test_batches`, so `evaluate` can score them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def test_batches(self, batch_size: int):
        for i in range(0, self.y.shape[0], batch_size):
            yield self.x[i : i + batch_size], self.y[i : i + batch_size]


def default_label(ticket: Ticket) -> str:
    """'IMP', 'ETT <- ResNet-20', 'Random', ... from the ticket's provenance (as in Figure 8)."""
    provenance = ticket.provenance or {}
    method = str(provenance.get("method") or "ticket")
    if method == "elastic_ticket_transformation":
        source = (provenance.get("source") or {}).get("model")
        return "ETT" + (f" \u2190 {short_name(source)}" if source else "")
    return curve_label((method, None, None))


def alphas_of(points: int) -> list[float]:
    """`points` evenly spaced values from 0 to 1, both included exactly."""
    if points < 2:
        raise LMCError(f"the path needs at least 2 points (its endpoints), got {points}")
    if points > MAX_LMC_POINTS:
        raise LMCError(f"the path takes at most {MAX_LMC_POINTS} points (each is a test evaluation; the paper "
                       f"uses 30), got {points}")
    return [i / (points - 1) for i in range(points)]


def linear_mode_connectivity(
    ticket: Ticket,
    data,
    protocol: Protocol,
    *,
    data_seeds: Sequence[int] = (0, 1),
    points: int = 30,
    bn: str = "recompute",
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_seed: int = 0,
    train_examples_per_class: int = 0,
    label: str | None = None,
    ticket_path: str | None = None,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    precision: str = "fp32",
    progress: bool = True,
) -> LMCResult:
    """Train two copies of `ticket` (data seeds `data_seeds`) and evaluate the linear path between them.

    Training is `train_ticket` with `root` (cached and resumable); without `root` it happens in a
    temporary directory, one per copy, that is removed afterwards. `device` defaults to CUDA when
    available, as for training. `train_examples_per_class` > 0
    also scores that many fixed un-augmented training examples per class at every point.
    """
    seeds = tuple(int(s) for s in data_seeds)
    if len(seeds) != 2:
        raise LMCError(f"linear mode connectivity trains two copies: give two data seeds, not {len(seeds)}")
    if bn not in BN_MODES:
        raise LMCError(f"bn must be one of {', '.join(BN_MODES)}, not {bn!r}")
    alphas = alphas_of(points)
    if bn == "recompute" and bn_batches < 1:
        raise LMCError(f"recomputing BN statistics needs at least one batch, got bn_batches={bn_batches}")
    if train_examples_per_class < 0:
        raise LMCError(f"train_examples_per_class must be 0 or more, got {train_examples_per_class}")
    check_dataset(ticket, data.info)
    if root is None and distributed.is_active():
        # Each rank's temporary directory is its own; the copies' final weights are read from files.
        raise LMCError("with several ranks, give a root for the two trainings (a store every rank sees)")
    device = torch.device(device) if device is not None else default_device()

    with tempfile.TemporaryDirectory(prefix="elth-lmc-") as scratch:
        roots = [Path(root)] * 2 if root is not None else [Path(scratch) / "a", Path(scratch) / "b"]
        states, trained_errors = [], []
        for seed, run_root in zip(seeds, roots):
            result = train_ticket(ticket, data, protocol, data_seed=seed, root=run_root, device=device,
                                  progress=progress, precision=precision)
            trained_errors.append(1.0 - result.test_accuracy)
            states.append(trained_state(ticket, data, protocol, data_seed=seed, root=run_root, precision=precision))
        run_dirs = (
            [str(ticket_run_dir(ticket, data, protocol, s, root, precision)) for s in seeds]
            if root is not None else None
        )

    state_a = {k: v.to(device) for k, v in states[0].items()}
    state_b = {k: v.to(device) for k, v in states[1].items()}
    model = ticket.build(device)
    if use_channels_last(model, device):
        model.to(memory_format=torch.channels_last)
    bn_layers = len(_bn_layers(model))
    train_set = None
    if train_examples_per_class > 0:
        x, y = data.scoring_examples(train_examples_per_class, seed=bn_seed)
        train_set = _ExamplesAsTestSet(x, y)

    test_acc, test_loss, train_err = [], [], []
    bar = progress_bar(alphas, desc=f"{ticket.model} interpolation", unit="pt", disable=not progress, leave=False,
               file=sys.stderr, dynamic_ncols=True)
    for alpha in bar:
        model.load_state_dict(interpolate(state_a, state_b, alpha))
        if bn == "recompute":
            recompute_bn_statistics(model, data, bn_batches, protocol.batch_size, bn_seed)
        acc, loss = evaluate(model, data, device=device, precision=precision)
        test_acc.append(acc)
        test_loss.append(loss)
        if train_set is not None:
            train_err.append(1.0 - evaluate(model, train_set, device=device, precision=precision)[0])
    bar.close()

    return LMCResult(
        label=label or default_label(ticket),
        model=ticket.model,
        sparsity=ticket.sparsity,
        ticket=ticket.content_hash(),
        dataset=data.info.name,
        protocol=protocol.to_dict(),
        data_seeds=seeds,
        bn=bn,
        bn_batches=bn_batches if bn == "recompute" and bn_layers else 0,
        bn_layers=bn_layers,
        alphas=alphas,
        test_errors=[1.0 - a for a in test_acc],
        test_accuracies=test_acc,
        test_losses=test_loss,
        trained_test_errors=(trained_errors[0], trained_errors[1]),
        train_errors=train_err or None,
        train_examples=train_set.y.shape[0] if train_set is not None else 0,
        run_dirs=run_dirs,
        ticket_path=ticket_path,
    )
