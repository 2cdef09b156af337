"""Tickets from open_lth lottery runs (the framework the paper's code builds on).

An open_lth lottery run is a folder `lottery_<hash>/replicate_<n>/level_<k>/main/` per IMP level,
holding `mask.pth` (open_lth parameter name -> 0/1 tensor, the pruned layers only), the model's
state dict at the rewind point and at the end of training (`model_ep<E>_it<I>.pth`), a `logger`
CSV of metrics, and, in `level_0/main/`, `hparams.log`. With `--rewinding_steps`, the rewind point
is trained in `level_pretrain/main/`. Each level becomes an elth ticket: the same rewind weights
(pruned weights zero) and mask under elth's parameter names, the dense rewind weights of level 0
(so random-replica transformations have real values), open_lth's training hyperparameters as the
protocol and the run, replicate and level as provenance.

The paper's own code (ElasticLTH, a fork of open_lth) writes each ETT it trains as a branch of a
level, `level_<k>/lottery_branch_change_depth_<hash>/`: the transformed mask and weights at the
rewind point, no hparams (the target model is read from the tensors). `import_branches` reads those
as tickets of the target model.

Models: open_lth's `mnist_lenet_300[_300...]_100` is elth's `mlp_<n>` (n hidden layers of 300),
`cifar_resnet_<D>[_<W>]`, `cifar_vgg_<D>` and `imagenet_resnet_<18|34>` keep their names; open_lth
numbers ResNet blocks (`blocks.<i>`) and VGG conv layers (`layers.<i>`) through all stages, where
elth names them by stage and position (`layer<s>.<u>`).
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Collection

import torch

from elth.data import dataset_info
from elth.data.base import DatasetInfo
from elth.errors import ElthError
from elth.files import UnreadableTensorFileError, load_torch_file
from elth.models import build_model, parse_model_name
from elth.models.cifar_vgg import LAYOUTS as VGG_LAYOUTS
from elth.tickets import Ticket, TicketError
from elth.training.protocol import Protocol, parse_steps

SOURCE = "open_lth"
#: Training-set sizes of open_lth's datasets: its step counts in epochs depend on them.
TRAIN_SIZES = {"mnist": 60_000, "cifar10": 50_000, "imagenet": 1_281_167}
#: The input shape open_lth feeds each of its datasets (ImageNet: its 224-pixel crops).
INPUT_SHAPES = {"imagenet": (3, 224, 224)}
IMAGENET_DEPTHS = (18, 34)
#: Residual blocks -> depth of the ImageNet ResNets open_lth has.
IMAGENET_BLOCKS = {8: 18, 16: 34}

_LEVEL = re.compile(r"level_([0-9]+)")
_REPLICATE = re.compile(r"replicate_([0-9]+)")
_HPARAM = re.compile(r"\s*\*\s*(\w+)\s*=>\s*(.*?)\s*")


class OpenLTHError(TicketError):
    """An open_lth run that cannot be read or has no elth counterpart."""


@dataclass(frozen=True)
class Level:
    """One level of one replicate of an open_lth lottery run."""

    run: Path  # lottery_<hash>
    replicate: int
    level: int

    @property
    def directory(self) -> Path:
        return self.run / f"replicate_{self.replicate}" / f"level_{self.level}" / "main"

    @property
    def name(self) -> str:
        return f"{self.run.name} replicate {self.replicate} level {self.level}"


# -- reading the run ---------------------------------------------------------------------------
def read_hparams(path: Path) -> dict[str, dict[str, str]]:
    """`hparams.log` as {section: {name: value}}, e.g. {"Training Hyperparameters": {"lr": "0.1"}}."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in _read_text(path).splitlines():
        if not line.strip():
            continue
        m = _HPARAM.fullmatch(line)
        if m and current is not None:
            sections[current][m.group(1)] = m.group(2)
        elif not line.startswith((" ", "\t")):
            current = line.strip()
            sections[current] = {}
        else:
            raise OpenLTHError(f"{path}: cannot read the line {line.strip()!r} (expected '* name => value')")
    for needed in ("Dataset Hyperparameters", "Model Hyperparameters", "Training Hyperparameters"):
        if needed not in sections:
            raise OpenLTHError(f"{path}: no '{needed}' section: not an open_lth hparams.log")
    return sections


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise OpenLTHError(f"{path}: cannot read it ({e.strerror or e})") from None


def _numbered(parent: Path, pattern: re.Pattern) -> dict[int, Path]:
    return {int(m.group(1)): p for p in sorted(parent.iterdir()) if (m := pattern.fullmatch(p.name)) and p.is_dir()}


def find_levels(path: str | Path) -> list[Level]:
    """The levels under `path`: a lottery run, one of its replicates, or one level (`level_<k>[/main]`)."""
    p = Path(path)
    if not p.is_dir():
        what = "a file, not a directory" if p.exists() else "no such directory"
        raise OpenLTHError(f"{p}: {what} (give an open_lth lottery run, e.g. .../lottery_<hash>)")
    if p.name == "main":
        p = p.parent
    if _LEVEL.fullmatch(p.name) and _REPLICATE.fullmatch(p.parent.name):
        return [Level(p.parent.parent, int(_REPLICATE.fullmatch(p.parent.name).group(1)),
                      int(_LEVEL.fullmatch(p.name).group(1)))]
    if _REPLICATE.fullmatch(p.name):
        replicates = {int(_REPLICATE.fullmatch(p.name).group(1)): p}
        run = p.parent
    else:
        replicates, run = _numbered(p, _REPLICATE), p
    levels = [Level(run, r, lv) for r, rp in sorted(replicates.items()) for lv in sorted(_numbered(rp, _LEVEL))]
    if not levels:
        runs = sorted(d.name for d in p.glob("lottery_*") if d.is_dir())
        inside = (f"; it holds the lottery runs {', '.join(runs[:5])}{' ...' if len(runs) > 5 else ''}: give one"
                  if runs else " (open_lth writes them under open_lth_data/lottery_<hash>)")
        raise OpenLTHError(f"{p}: no replicate_<n>/level_<k> folders: not an open_lth lottery run{inside}")
    return levels


def _load(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        obj = load_torch_file(path, what)
    except FileNotFoundError:
        raise OpenLTHError(f"{path}: no {what} (open_lth writes it at the level's start and end)") from None
    except UnreadableTensorFileError as e:
        raise OpenLTHError(str(e)) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise OpenLTHError(f"{path}: not a {what} (expected a dict of tensors)")
    return obj


def final_test_accuracy(directory: Path) -> float | None:
    """The last `test_accuracy` of a level's `logger` (None without one)."""
    path = directory / "logger"
    if not path.is_file():
        return None
    rows = [r for r in csv.reader(_read_text(path).splitlines()) if len(r) == 3 and r[0] == "test_accuracy"]
    return float(max(rows, key=lambda r: int(r[1]))[2]) if rows else None


# -- models ------------------------------------------------------------------------------------
KeyMap = Callable[[str], str]


@dataclass(frozen=True)
class UnitNames:
    """open_lth's names of a model's units against elth's, both ways: `fc_layers.3.` <-> `hidden.3.`,
    `blocks.4.` <-> `layer2.1.` (the rest of a parameter's name is the same in both)."""

    #: open_lth's container of numbered units ("" when the names are elth's own)
    numbered: str = ""
    #: open_lth's unit index -> elth's unit prefix
    units: tuple[tuple[int, str], ...] = ()

    def to_elth(self, key: str) -> str:
        m = re.fullmatch(rf"{re.escape(self.numbered)}\.([0-9]+)\.(.+)", key) if self.numbered else None
        if not m:
            return key
        units = dict(self.units)
        i = int(m.group(1))
        if i not in units:
            raise OpenLTHError(f"parameter {key!r}: no unit of the model has index {i} (its units have "
                               f"{', '.join(map(str, sorted(units)))})")
        return f"{units[i]}.{m.group(2)}"

    def to_open_lth(self, key: str) -> str:
        for i, prefix in self.units:
            if key.startswith(prefix + "."):
                return f"{self.numbered}.{i}.{key[len(prefix) + 1:]}"
        return key


def model_of(open_lth_name: str) -> tuple[str, KeyMap]:
    """elth's name for an open_lth model, and the map from open_lth's parameter names to elth's."""
    elth, names = model_names(open_lth_name)
    return elth, names.to_elth


def model_names(open_lth_name: str) -> tuple[str, UnitNames]:
    """elth's name for an open_lth model, and the names of its units both ways."""
    name = open_lth_name.strip()
    if m := re.fullmatch(r"mnist_lenet((?:_[0-9]+)+)", name):
        widths = [int(w) for w in m.group(1).strip("_").split("_")]
        if len(widths) < 2 or widths[-1] != 100 or len(set(widths[:-1])) != 1 or widths[0] < 1:
            raise OpenLTHError(f"open_lth model {name!r} has no elth counterpart: elth's MLPs (mlp_<n>[_<W>]) have "
                               "n hidden layers of one width W (default 300) then 100 (mnist_lenet_300_100, "
                               "mnist_lenet_300_300_100, mnist_lenet_600_600_100, ...)")
        n, width = len(widths) - 1, widths[0]
        # its fc_layers are elth's hidden layers, then the layer to 100
        return f"mlp_{n}" + (f"_{width}" if width != 300 else ""), UnitNames("fc_layers", tuple((i, f"hidden.{i}") for i in range(n)) + ((n, "bottleneck"),))
    if m := re.fullmatch(r"cifar_resnet_([0-9]+)(?:_([0-9]+))?", name):
        depth = int(m.group(1))
        elth = f"cifar_resnet_{depth}" + (f"_{m.group(2)}" if m.group(2) else "")
        _check_name(elth, name)
        return elth, _numbered_units("blocks", [(depth - 2) // 6] * 3)
    if m := re.fullmatch(r"cifar_vgg_([0-9]+)", name):
        elth = f"cifar_vgg_{m.group(1)}"
        _check_name(elth, name)
        # open_lth's VGG keeps its max-pools in `layers` between the stages: conv indices skip one there.
        return elth, _numbered_units("layers", list(VGG_LAYOUTS[int(m.group(1))]), between_stages=1)
    if m := re.fullmatch(r"imagenet_resnet_([0-9]+)", name):
        if int(m.group(1)) not in IMAGENET_DEPTHS:
            raise OpenLTHError(f"open_lth model {name!r} has no elth counterpart: elth's ImageNet ResNets shared "
                               f"with open_lth are {', '.join(f'imagenet_resnet_{d}' for d in IMAGENET_DEPTHS)}")
        return name, UnitNames()  # torchvision's names, as elth's
    raise OpenLTHError(f"open_lth model {name!r} has no elth counterpart (elth reads mnist_lenet_300[_300...]_100, "
                       "cifar_resnet_<D>[_<W>], cifar_vgg_<D> and imagenet_resnet_18/34)")


def _check_name(elth: str, open_lth_name: str) -> None:
    try:
        parse_model_name(elth)
    except ElthError as e:
        raise OpenLTHError(f"open_lth model {open_lth_name!r} has no elth counterpart: {e}") from None


def open_lth_unit_indices(per_stage: list[int], between_stages: int = 0) -> list[tuple[int, int, int]]:
    """(open_lth's index, elth's stage from 1, unit) of every unit: open_lth counts units through all
    stages, with `between_stages` entries without weights (VGG's max-pools) after each stage but the last."""
    out, i = [], 0
    for s, n in enumerate(per_stage):
        for u in range(n):
            out.append((i, s + 1, u))
            i += 1
        i += between_stages
    return out


def _numbered_units(prefix: str, per_stage: list[int], between_stages: int = 0) -> UnitNames:
    """`<prefix>.<i>` (i counted through all stages) <-> `layer<s>.<u>`."""
    return UnitNames(prefix, tuple((i, f"layer{s}.{u}") for i, s, u in open_lth_unit_indices(per_stage, between_stages)))


def convert_state(state: dict[str, torch.Tensor], key: KeyMap, reference: dict[str, torch.Tensor],
                  where: Path, built_for: DatasetInfo) -> dict[str, torch.Tensor]:
    """An open_lth state dict under elth's names, checked against the elth model's (`reference`, the
    model built for dataset `built_for`)."""
    out = {key(k): v for k, v in state.items()}
    missing, extra = sorted(set(reference) - set(out)), sorted(set(out) - set(reference))
    if missing or extra:
        parts = ([f"missing {missing[:3]}"] if missing else []) + ([f"unexpected {extra[:3]}"] if extra else [])
        raise OpenLTHError(f"{where}: its parameters do not fit the elth model ({'; '.join(parts)})")
    for k, v in out.items():
        if tuple(v.shape) != tuple(reference[k].shape):
            raise OpenLTHError(f"{where}: {k!r} has shape {tuple(v.shape)}, the elth model built for "
                               f"{built_for.name} (input {'x'.join(map(str, built_for.input_shape))}, "
                               f"{built_for.num_classes} classes) {tuple(reference[k].shape)}; --dataset names the "
                               "dataset the run trained on")
    return {k: out[k].to(reference[k].dtype) for k in reference}


# -- the conversion ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """What is shared by every level of one replicate, read once: hparams, model, dataset, rewind
    point, and level 0's rewind weights (every level's dense weights)."""

    hparams: dict[str, dict[str, str]]
    open_lth_model: str
    model: str
    key: KeyMap
    dataset: DatasetInfo
    rewind: str
    rewind_step: int
    rewind_file: str  # model_ep<E>_it<I>.pth: the state dict at the rewind point, in every level's folder
    protocol: dict
    warnings: tuple[str, ...]
    reference: dict[str, torch.Tensor]  # the elth model's state dict (names, shapes, dtypes)
    prunable: tuple[str, ...]
    dense: dict[str, torch.Tensor]  # level 0's rewind weights of the prunable tensors


def read_run(level: Level, dataset: str | None = None) -> Run:
    """The replicate's settings; `dataset` names the elth dataset the run trained on, where open_lth's
    name would mislead (e.g. Fashion-MNIST's files in MNIST's place)."""
    hp = read_hparams(level.run / f"replicate_{level.replicate}" / "level_0" / "main" / "hparams.log")
    data_hp, train_hp = hp["Dataset Hyperparameters"], hp["Training Hyperparameters"]
    open_lth_model = hp["Model Hyperparameters"].get("model_name", "")
    model, key = model_of(open_lth_model)
    open_lth_data = data_hp.get("dataset_name", "")
    if open_lth_data not in TRAIN_SIZES:
        raise OpenLTHError(f"open_lth dataset {open_lth_data!r}: elth reads runs on {', '.join(TRAIN_SIZES)} (its "
                           "training-set size gives the run's step counts in iterations)")
    info = _dataset_info(dataset or open_lth_data)
    batch = int(data_hp.get("batch_size", "128"))
    pretrain = hp.get("Pretraining Training Hyperparameters", {})
    rewind = pretrain.get("training_steps", "0")
    warnings = [f"{name} => {data_hp[name]}: open_lth changed its data this way; elth trains on the dataset as is"
                for name in ("subsample_fraction", "random_labels_fraction", "unsupervised_labels", "blur_factor")
                if data_hp.get(name) not in (None, "None", "False")]
    ipe = math.ceil(TRAIN_SIZES[open_lth_data] / batch)
    try:
        rewind_step = parse_steps(rewind, ipe)
    except ElthError as e:
        raise OpenLTHError(f"the run's rewinding steps: {e}") from None
    protocol, why = _protocol(train_hp, batch, data_hp)
    if why:
        warnings.append(f"open_lth's training ({why}) has no elth protocol; none recorded")
    epoch, iteration = divmod(rewind_step, ipe)
    rewind_file = f"model_ep{epoch}_it{iteration}.pth"
    elth_model = build_model(model, info.input_shape, info.num_classes, seed=0)
    reference, prunable = elth_model.state_dict(), tuple(elth_model.prunable_names())
    level0 = Level(level.run, level.replicate, 0).directory / rewind_file
    dense = convert_state(_load(level0, "model state dict"), key, reference, level0, info)
    return Run(hp, open_lth_model, model, key, info, rewind, rewind_step, rewind_file, protocol, tuple(warnings),
               reference, prunable, {k: dense[k] for k in prunable})


def _dataset_info(name: str) -> DatasetInfo:
    if name == "imagenet":
        return DatasetInfo("imagenet", INPUT_SHAPES["imagenet"], 1000)
    return dataset_info(name)


def _protocol(train: dict[str, str], batch: int, data: dict[str, str]) -> tuple[dict, str]:
    """open_lth's training hyperparameters as an elth protocol, or ({}, why not)."""
    if train.get("optimizer_name", "sgd") != "sgd":
        return {}, f"optimizer {train['optimizer_name']}; elth trains with SGD"
    if train.get("nesterov_momentum") == "True":
        return {}, "Nesterov momentum"
    if train.get("apex_fp16") == "True":
        return {}, "apex fp16"
    milestones = train.get("milestone_steps")
    gamma = train.get("gamma")
    try:
        p = Protocol(
            length=train["training_steps"], batch_size=batch, lr=float(train["lr"]),
            momentum=float(train.get("momentum") or 0.0), weight_decay=float(train.get("weight_decay") or 0.0),
            milestones=tuple(m.strip() for m in milestones.split(",")) if milestones and milestones != "None" else (),
            gamma=float(gamma) if gamma and gamma != "None" else 0.1,
            warmup=train.get("warmup_steps") or "0it", augment=data.get("do_not_augment") != "True",
        )
    except (KeyError, ValueError, ElthError) as e:
        return {}, f"unreadable setting: {e}"
    return p.to_dict(), ""


def level_ticket(level: Level, run: Run) -> Ticket:
    """Level `level` of the run as an elth ticket (see the module docstring)."""
    rewind_path = level.directory / run.rewind_file
    state = convert_state(_load(rewind_path, "model state dict"), run.key, run.reference, rewind_path, run.dataset)
    mask = _mask(level.directory / "mask.pth", run.key, run.reference, run.prunable)
    _check_masked(state, mask, rewind_path)
    pruning = run.hparams.get("Pruning Hyperparameters", {})
    ignored = [run.key(k.strip()) for k in pruning.get("pruning_layers_to_ignore", "").split(",") if k.strip()]
    return Ticket(
        run.model, run.dataset, state, mask, run.rewind_step, run.rewind, dict(run.protocol),
        provenance={
            "method": "imp",
            "description": f"IMP level {level.level} of open_lth run {level.run.name}, replicate {level.replicate}",
            "source": SOURCE,
            "run": level.run.name,
            "replicate": level.replicate,
            "level": level.level,
            "open_lth_model": run.open_lth_model,
            "open_lth_dataset": run.hparams["Dataset Hyperparameters"].get("dataset_name", ""),
            "prune_fraction": float(pruning["pruning_fraction"]) if "pruning_fraction" in pruning else None,
            "excluded": ignored,
            "test_accuracy": final_test_accuracy(level.directory),
        },
        warnings=list(run.warnings),
        dense=dict(run.dense),
    )


BRANCH_PREFIX = "lottery_branch_change_depth_"


def _count(keys, pattern: str) -> int:
    """How many distinct indices `pattern` (one group) finds among `keys`."""
    return len({m.group(1) for k in keys if (m := re.fullmatch(pattern, k))})


def lenet_name(hidden: int, width: int = 300) -> str:
    """open_lth's name of elth's `mlp_<hidden>[_<width>]`: `hidden` layers of `width`, then 100."""
    return "mnist_lenet_" + "_".join([str(width)] * hidden + ["100"])


def open_lth_name_from_tensors(source_name: str, keys: Collection[str]) -> str:
    """The open_lth name of a model of `source_name`'s family whose state dict has these keys (a
    change_depth branch records no hparams)."""
    if m := re.fullmatch(r"cifar_resnet_[0-9]+((?:_[0-9]+)?)", source_name):
        blocks = _count(keys, r"blocks\.([0-9]+)\..+")
        if blocks == 0 or blocks % 3:
            raise OpenLTHError(f"{blocks} residual blocks: not a CIFAR ResNet (3 stages of n blocks)")
        return f"cifar_resnet_{6 * (blocks // 3) + 2}{m.group(1)}"
    if source_name.startswith("cifar_vgg_"):
        convs = _count(keys, r"layers\.([0-9]+)\.conv\.weight")
        return f"cifar_vgg_{convs + 3}"  # VGG-D: D - 3 conv layers, 3 FC layers in the original
    if source_name.startswith("mnist_lenet_"):
        hidden = _count(keys, r"fc_layers\.([0-9]+)\.weight") - 1
        return lenet_name(hidden)
    if source_name.startswith("imagenet_resnet_"):
        blocks = _count(keys, r"(layer[0-9]+\.[0-9]+)\..+")
        if blocks not in IMAGENET_BLOCKS:
            raise OpenLTHError(f"{blocks} residual blocks: not one of elth's ImageNet ResNets")
        return f"imagenet_resnet_{IMAGENET_BLOCKS[blocks]}"
    raise OpenLTHError(f"cannot tell the target model of a change_depth branch of {source_name}")


def branch_ticket(level: Level, branch: Path, run: Run) -> Ticket:
    """A change_depth branch of `level` (ElasticLTH) as a ticket of its target model."""
    rewind_path = branch / run.rewind_file
    raw_state = _load(rewind_path, "model state dict")
    open_lth_target = open_lth_name_from_tensors(run.open_lth_model, raw_state.keys())
    target, key = model_of(open_lth_target)
    model = build_model(target, run.dataset.input_shape, run.dataset.num_classes, seed=0)
    reference, prunable = model.state_dict(), list(model.prunable_names())
    state = convert_state(raw_state, key, reference, rewind_path, run.dataset)
    mask = _mask(branch / "mask.pth", key, reference, prunable)
    _check_masked(state, mask, rewind_path)
    return Ticket(
        target, run.dataset, state, mask, run.rewind_step, run.rewind, dict(run.protocol),
        provenance={
            "method": "ett",
            "description": f"change_depth branch {branch.name.removeprefix(BRANCH_PREFIX)} of IMP level {level.level} "
                           f"of run {level.run.name}, replicate {level.replicate} ({run.model} -> {target})",
            "source": SOURCE, "run": level.run.name, "replicate": level.replicate, "level": level.level,
            "branch": branch.name, "source_model": run.model, "open_lth_model": open_lth_target,
            "open_lth_dataset": run.hparams["Dataset Hyperparameters"].get("dataset_name", ""),
            "test_accuracy": final_test_accuracy(branch),
        },
        warnings=list(run.warnings),
    )


def import_branches(path: str | Path, *, dataset: str | None = None, levels: Collection[int] | None = None,
                    replicates: Collection[int] | None = None) -> list[tuple[Level, str, Ticket]]:
    """The change_depth branches of the chosen levels under `path`, as (level, branch hash, ticket)."""
    out, runs = [], {}
    for lv in find_levels(path):
        if (levels is not None and lv.level not in levels) or (replicates is not None and lv.replicate not in replicates):
            continue
        branches = sorted(p for p in lv.directory.parent.glob(BRANCH_PREFIX + "*") if p.is_dir())
        for branch in branches:
            if (lv.run, lv.replicate) not in runs:
                runs[lv.run, lv.replicate] = read_run(lv, dataset)
            out.append((lv, branch.name.removeprefix(BRANCH_PREFIX), branch_ticket(lv, branch, runs[lv.run, lv.replicate])))
    return out


def _mask(path: Path, key: KeyMap, reference: dict[str, torch.Tensor], prunable) -> dict[str, torch.Tensor]:
    """open_lth's `mask.pth` (the pruned layers only) as a mask over every prunable weight."""
    mask = {k: torch.ones_like(reference[k], dtype=torch.bool) for k in prunable}
    for k, v in _load(path, "mask").items():
        elth_key = key(k)
        if elth_key not in mask:
            raise OpenLTHError(f"{path}: masks {k!r}, which elth does not prune")
        if tuple(v.shape) != tuple(mask[elth_key].shape) or not bool(((v == 0) | (v == 1)).all()):
            raise OpenLTHError(f"{path}: {k!r} is not a 0/1 mask of its weight's shape")
        mask[elth_key] = v.to(torch.bool)
    return mask


def _check_masked(state: dict[str, torch.Tensor], mask: dict[str, torch.Tensor], where: Path) -> None:
    for k, m in mask.items():
        leaked = int((state[k][~m] != 0).sum())
        if leaked:
            raise OpenLTHError(f"{where}: {k!r} has {leaked} nonzero weight(s) its mask prunes: "
                               "the state dict is not this level's rewind point")


def import_run(path: str | Path, *, dataset: str | None = None,
               levels: Collection[int] | None = None,
               replicates: Collection[int] | None = None) -> list[tuple[Level, Ticket]]:
    """Every level under `path` (or those in `levels`/`replicates`) as (level, ticket)."""
    found = find_levels(path)
    chosen = [lv for lv in found if (levels is None or lv.level in levels)
              and (replicates is None or lv.replicate in replicates)]
    if not chosen:
        have = sorted({lv.level for lv in found})
        raise OpenLTHError(f"{path}: none of the chosen levels/replicates is there (levels {have}, replicates "
                           f"{sorted({lv.replicate for lv in found})})")
    runs: dict[tuple[Path, int], Run] = {}
    out = []
    for lv in chosen:
        if (lv.run, lv.replicate) not in runs:
            runs[lv.run, lv.replicate] = read_run(lv, dataset)
        out.append((lv, level_ticket(lv, runs[lv.run, lv.replicate])))
    return out
