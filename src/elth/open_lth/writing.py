"""elth tickets written as an open_lth lottery run, for open_lth (or the paper's fork of it) to train.

open_lth names a run `lottery_<md5>` after its hyperparameters and, when it runs `lottery --levels=K`,
skips whatever is in the folder already: the rewind weights (`level_pretrain/main/` and
`level_0/main/model_ep<E>_it<I>.pth`, its `train_start_step`) and each level's `mask.pth`. So an
export writes those (and each level's masked rewind weights, which open_lth writes again as the level
starts, so that `import-open-lth` reads an export back), under open_lth's parameter names, in the folder open_lth computes from the
hyperparameters the tickets record, plus `hparams.log` and the command line that gives that folder
(every hyperparameter passed explicitly, none taken from `--default_hparams`). open_lth then trains
each exported level from the exported rewind weights with the exported mask (a level without a
ticket it prunes itself, from the level below, as in any lottery run).

Models open_lth has: `mlp_<n>` (its `mnist_lenet_300[_300...]_100`), `cifar_resnet_<D>[_<W>]`,
`cifar_vgg_<D>` (one fully connected layer) and `imagenet_resnet_18/34`. Datasets: cifar10, mnist,
imagenet; Fashion-MNIST goes as mnist (open_lth reads Fashion-MNIST's files put in MNIST's place, as
the fixtures of this project were made).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from elth.files import atomic_path, write_text_atomic
from elth.models import parse_model_name
from elth.models.mlp import KIND as MLP_KIND
from elth.open_lth.reading import TRAIN_SIZES, OpenLTHError, lenet_name, model_names
from elth.tickets import Ticket
from elth.training.protocol import Protocol, parse_steps

#: elth dataset -> open_lth's name for it.
DATASETS = {"cifar10": "cifar10", "mnist": "mnist", "fashion_mnist": "mnist", "imagenet": "imagenet"}
#: What open_lth's models are initialised with (by `models.registry.get`; exported weights replace them).
MODEL_INIT, BATCHNORM_INIT = "kaiming_normal", "uniform"
PRUNING_STRATEGY = "sparse_global"
DEFAULT_PRUNE_FRACTION = 0.2  # open_lth's sparse_global default


@dataclass(frozen=True)
class OpenLTHModel:
    """An elth model as open_lth has it: its name, and elth's parameter names written its way."""

    name: str
    elth: str
    key: Callable[[str], str]


def open_lth_model(model: str) -> OpenLTHModel:
    """open_lth's counterpart of elth's `model` (read back by `model_names`, the one table of both
    ways of naming), or one error saying which models open_lth has."""
    spec = parse_model_name(model)
    candidate = lenet_name(spec.depth, spec.width) if spec.kind == MLP_KIND else model
    try:
        elth, names = model_names(candidate)
    except OpenLTHError:
        elth = None
    if elth != model:
        raise OpenLTHError(f"open_lth has no counterpart of {model}: it has MLPs (mnist_lenet), CIFAR ResNets, CIFAR "
                           "VGGs with one fully connected layer and ImageNet ResNet-18/34")
    return OpenLTHModel(candidate, model, names.to_open_lth)


# -- open_lth's hyperparameters --------------------------------------------------------------------
#: (section as hparams.log names it, its fields in open_lth's order with their defaults)
_FIELDS = {
    "dataset": ("Dataset Hyperparameters", (("dataset_name", None), ("batch_size", None), ("do_not_augment", False))),
    "model": ("Model Hyperparameters", (("model_name", None), ("model_init", None), ("batchnorm_init", None))),
    "training": ("Training Hyperparameters", (
        ("optimizer_name", None), ("lr", None), ("training_steps", None), ("momentum", 0.0),
        ("milestone_steps", None), ("gamma", None), ("warmup_steps", None), ("weight_decay", None))),
    "pruning": ("Pruning Hyperparameters", (
        ("pruning_strategy", None), ("pruning_fraction", DEFAULT_PRUNE_FRACTION), ("pruning_layers_to_ignore", None))),
}
#: Fields without a default in open_lth (always part of its hash and its hparams.log).
_REQUIRED = {"dataset_name", "batch_size", "model_name", "model_init", "batchnorm_init", "optimizer_name", "lr",
             "training_steps", "pruning_strategy"}


@dataclass(frozen=True)
class Hparams:
    """One of open_lth's hyperparameter sections, as the values its command line would give."""

    kind: str
    values: tuple[tuple[str, object], ...]
    prefix: str = ""  # "Pretraining " for the copies a rewinding run makes

    def get(self, name: str):
        return dict(self.values).get(name)

    def hash_text(self) -> str:
        """open_lth's `str(hparams)`: the fields that differ from their default (or have none), sorted."""
        defaults = dict(_FIELDS[self.kind][1])
        shown = {}
        for name, value in self.values:
            if name in _REQUIRED or value != defaults[name]:
                shown[name] = f"'{value}'" if isinstance(value, str) else str(value)
        return "Hparams(" + ", ".join(f"{k}={shown[k]}" for k in sorted(shown)) + ")"

    def display(self) -> str:
        """open_lth's `hparams.display`: its section name, then the fields that are set, in its order."""
        lines = [self.prefix + _FIELDS[self.kind][0]]
        lines += [f"    * {name} => {value}" for name, value in self.values if name in _REQUIRED or value]
        return "\n".join(lines)


@dataclass(frozen=True)
class LotteryDesc:
    """What open_lth's `LotteryDesc` holds for a run: its sections, named as its dataclass names them."""

    sections: tuple[tuple[str, Hparams], ...]

    @property
    def hashname(self) -> str:
        text = ";".join(h.hash_text() for _, h in sorted(self.sections))
        return "lottery_" + hashlib.md5(text.encode("utf-8")).hexdigest()

    def hparams_log(self) -> str:
        return "\n".join(h.display() for _, h in sorted(self.sections))


def _values(pairs) -> tuple[tuple[str, object], ...]:
    return tuple((k, v) for k, v in pairs)


def lottery_desc(model: OpenLTHModel, dataset: str, protocol: Protocol, rewind_step: int, prune_fraction: float,
                 ignored: list[str]) -> tuple[LotteryDesc, list[str]]:
    """open_lth's description of a run training `model` on `dataset` by `protocol` from `rewind_step`,
    and the arguments of `open_lth.py lottery` that make it."""
    ipe = math.ceil(TRAIN_SIZES[dataset] / protocol.batch_size)
    steps = lambda text: text if text.endswith(("ep", "it")) else f"{text}it"  # "0" -> "0it"
    data = Hparams("dataset", _values([("dataset_name", dataset), ("batch_size", int(protocol.batch_size)),
                                       ("do_not_augment", not protocol.augment)]))
    net = Hparams("model", _values([("model_name", model.name), ("model_init", MODEL_INIT),
                                    ("batchnorm_init", BATCHNORM_INIT)]))
    milestones = ",".join(protocol.milestones) if protocol.milestones else None
    warmup = None if parse_steps(protocol.warmup, ipe) == 0 else steps(protocol.warmup)
    train = Hparams("training", _values([
        ("optimizer_name", "sgd"), ("lr", float(protocol.lr)), ("training_steps", steps(protocol.length)),
        ("momentum", float(protocol.momentum)), ("milestone_steps", milestones),
        ("gamma", float(protocol.gamma) if milestones else None), ("warmup_steps", warmup),
        ("weight_decay", float(protocol.weight_decay) or None)]))
    prune = Hparams("pruning", _values([
        ("pruning_strategy", PRUNING_STRATEGY), ("pruning_fraction", float(prune_fraction)),
        ("pruning_layers_to_ignore", ",".join(ignored) or None)]))
    sections = [("dataset_hparams", data), ("model_hparams", net), ("training_hparams", train),
                ("pruning_hparams", prune)]
    if rewind_step:
        sections += [("pretrain_dataset_hparams", Hparams("dataset", data.values, "Pretraining ")),
                     ("pretrain_training_hparams", Hparams(
                         "training", tuple((k, f"{rewind_step}it" if k == "training_steps" else v)
                                           for k, v in train.values), "Pretraining "))]
    args = [f"--{k}={v}" for h in (data, net, train, prune) for k, v in h.values
            if v is not None and v is not False and not (k == "momentum" and v == 0.0)]
    args = [a if a != "--do_not_augment=True" else "--do_not_augment" for a in args]
    if rewind_step:
        args.append(f"--rewinding_steps={rewind_step}it")
    return LotteryDesc(tuple(sections)), args


# -- the export ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Export:
    """Where an export went and how open_lth takes it up."""

    run: Path  # OUT/lottery_<hash>
    levels: tuple[int, ...]
    command: str  # the `open_lth.py lottery` command that trains these levels
    warnings: tuple[str, ...] = ()


def export_tickets(tickets: list[tuple[int, Ticket]], out: str | Path, replicate: int = 1) -> Export:
    """Write (level, ticket) pairs, the levels of one run (one model, dataset, protocol and rewind
    point, the same dense rewind weights), as replicate `replicate` of an open_lth lottery run in `out`."""
    if not tickets:
        raise OpenLTHError("no tickets to export")
    levels = [lv for lv, _ in tickets]
    if len(set(levels)) != len(levels):
        raise OpenLTHError(f"two tickets for one level ({', '.join(map(str, levels))}): export one run at a time")
    first = tickets[0][1]
    for _, t in tickets[1:]:
        if (t.model, t.dataset, t.rewind_step, t.protocol) != (first.model, first.dataset, first.rewind_step,
                                                                first.protocol):
            raise OpenLTHError(f"the tickets are not levels of one run (model, dataset, protocol and rewind point "
                               f"differ: {first.model} / {t.model}): export each run by itself")
    model = open_lth_model(first.model)
    if first.dataset.name not in DATASETS:
        raise OpenLTHError(f"open_lth has no dataset {first.dataset.name!r} (it has {', '.join(sorted(set(DATASETS.values())))};"
                           " Fashion-MNIST goes as mnist)")
    dataset = DATASETS[first.dataset.name]
    if not first.protocol:
        raise OpenLTHError("the ticket records no training protocol, so open_lth's hyperparameters cannot be written")
    protocol = Protocol.from_dict(first.protocol)
    dense = _dense(tickets)
    prune_fraction = first.provenance.get("prune_fraction") or DEFAULT_PRUNE_FRACTION
    ignored = [model.key(k) for k in first.provenance.get("excluded", []) or []]
    desc, args = lottery_desc(model, dataset, protocol, first.rewind_step, prune_fraction, ignored)
    ipe = math.ceil(TRAIN_SIZES[dataset] / protocol.batch_size)
    epoch, iteration = divmod(first.rewind_step, ipe)
    rewind_file = f"model_ep{epoch}_it{iteration}.pth"
    run = Path(out) / desc.hashname
    root = run / f"replicate_{replicate}"
    open_lth_state = {model.key(k): v.detach().cpu().clone() for k, v in dense.items()}
    if first.rewind_step:
        _save(open_lth_state, root / "level_pretrain" / "main" / rewind_file)
    _save(open_lth_state, root / "level_0" / "main" / rewind_file)
    write_text_atomic(root / "level_0" / "main" / "hparams.log", desc.hparams_log())
    if 0 not in levels:
        _save({model.key(k): torch.ones_like(m, dtype=torch.int32) for k, m in first.mask.items()},
              root / "level_0" / "main" / "mask.pth")
    for level, ticket in tickets:
        _save({model.key(k): m.to(torch.int32) for k, m in ticket.mask.items()},
              root / f"level_{level}" / "main" / "mask.pth")
        if level != 0:  # what open_lth saves as a level starts (the masked rewind weights), so the export reads back
            _save({model.key(k): v.detach().cpu().clone() for k, v in ticket.state.items()},
                  root / f"level_{level}" / "main" / rewind_file)
    command = "python open_lth.py lottery " + " ".join(
        [f"--levels={max(levels)}", f"--replicate={replicate}", *args])
    warnings = []
    if first.dataset.name != dataset:
        warnings.append(f"open_lth has no {first.dataset.name}: give it those files as {dataset}'s; it normalises "
                        f"them with {dataset}'s mean and deviation, not {first.dataset.name}'s as elth did, so the "
                        "exported weights start from somewhat different inputs")
    return Export(run, tuple(sorted(levels)), command, tuple(warnings))


def _dense(tickets: list[tuple[int, Ticket]]) -> dict[str, torch.Tensor]:
    """The dense rewind weights all the tickets are masks over (open_lth keeps one set per run)."""
    first = tickets[0][1]
    dense = dict(first.state)
    if first.dense is not None:
        dense.update(first.dense)
    elif first.sparsity > 0:
        raise OpenLTHError("the ticket has no dense rewind weights (its pruned weights are lost), which open_lth's "
                           "level 0 needs; export a ticket made by elth imp, or level 0 of its run with it")
    for level, t in tickets:
        for k, v in t.state.items():
            kept = t.mask[k] if k in t.mask else torch.ones_like(v, dtype=torch.bool)
            same = torch.equal(v[kept], dense[k][kept]) if v.is_floating_point() else torch.equal(v, dense[k])
            if not same:
                raise OpenLTHError(f"level {level}'s rewind weights differ from the others' at {k!r}: the tickets "
                                   "are not levels of one run")
    return dense


def _save(value: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(value, tmp)
