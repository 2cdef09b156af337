"""Training protocols: optimiser, schedule and length, with the paper's Table 4 as presets.

Lengths and LR milestones are written in steps: `160ep` (epochs), `1000it` (iterations) or
`5ep100it` (5 epochs then 100 iterations); `0` is step 0. An epoch is
`ceil(num_train / batch_size)` iterations (the last batch of an epoch is partial).

The learning rate at global step t is `lr * gamma^(number of milestones <= t)`, multiplied during
the first `warmup` steps by `(t + 1) / warmup_steps` (linear warmup that never uses LR 0).

Presets (`preset(name, dataset, model)`):

| preset | models / datasets | length | batch | SGD lr | momentum | weight decay | LR decay | warmup |
|---|---|---|---|---|---|---|---|---|
| paper | conv nets on CIFAR-10, SVHN (and any other small image set) | 160ep | 128 | 0.1 | 0.9 | 1e-4 | x0.1 at 80ep, 120ep | none |
| paper | any model on ImageNet | 90ep | 1024 | 0.4 | 0.9 | 1e-4 | x0.1 at 30ep, 60ep, 80ep | 5ep |
| paper | MLPs (MNIST, Fashion-MNIST, digits, ...) | 40ep | 128 | 0.1 | 0 | 0 | none | none |
| short | anything | 3ep | 128 | 0.1 | as `paper` | as `paper` | x0.1 at 2ep | none |
| smoke | anything (tests) | 12it | 32 | 0.05 | as `paper` | as `paper` | x0.1 at 8it | 2it |

The CIFAR rows are Table 4 of the paper (whose table prints the second decay as "80, 160"; the
framework it follows decays at epochs 80 and 120, as here). The MLP row is the framework's
`mnist_lenet_300_100` default (plain SGD without momentum or weight decay, constant LR), which the
paper's MLP experiments follow.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from elth.data import canonical_name
from elth.errors import ElthError
from elth.limits import BadNumberError, check_real
from elth.models import parse_model_name
from elth.models.families import ModelFamily, family


class ProtocolError(ElthError, ValueError):
    """A training protocol or a step count that cannot be used."""


_STEPS = re.compile(r"(?:([0-9]+)ep)?(?:([0-9]+)it)?")


def parse_steps(text: str, iterations_per_epoch: int) -> int:
    """`"160ep"`, `"1000it"`, `"5ep100it"` or `"0"` -> a number of steps."""
    if iterations_per_epoch < 1:
        raise ProtocolError(f"iterations per epoch must be positive, got {iterations_per_epoch}")
    epochs, iterations = split_steps(text)
    return epochs * iterations_per_epoch + iterations


def split_steps(text: str) -> tuple[int, int]:
    """(epochs, iterations) of a step count, or a `ProtocolError` saying how to write one."""
    if not isinstance(text, str):
        raise ProtocolError(f"a step count must be text such as '160ep', '1000it' or '5ep100it', not {text!r}")
    t = text.strip().lower()
    if t == "0":
        return 0, 0
    m = _STEPS.fullmatch(t)
    if not t or not m or (m.group(1) is None and m.group(2) is None):
        raise ProtocolError(
            f"cannot read the step count {text!r}: write epochs and/or iterations as '160ep', "
            "'1000it' or '5ep100it' (or '0')"
        )
    return int(m.group(1) or 0), int(m.group(2) or 0)


def scale_steps(text: str, factor: int) -> str:
    """The step count `text` times `factor`, in the same units (`"5ep100it"` x 2 -> `"10ep200it"`)."""
    epochs, iterations = split_steps(text)
    if not epochs and not iterations:
        return "0"
    return (f"{factor * epochs}ep" if epochs else "") + (f"{factor * iterations}it" if iterations else "")


def _in_order(milestones: tuple[str, ...]) -> tuple[str, ...]:
    """Milestones in the order they fall (so that one schedule is one protocol, and one run hash),
    where all are written in one unit; mixed ones ('5ep', '100it') are ordered when used."""
    counts = [split_steps(m) for m in milestones]
    if all(e == 0 for e, _ in counts) or all(i == 0 for _, i in counts):
        return tuple(m for _, m in sorted(zip(counts, milestones), key=lambda pair: pair[0]))
    return milestones


@dataclass(frozen=True)
class Protocol:
    """How a model is trained: SGD with momentum, multi-step LR decay and linear warmup."""

    length: str = "160ep"
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[str, ...] = ("80ep", "120ep")
    gamma: float = 0.1
    warmup: str = "0it"
    augment: bool = True

    def __post_init__(self) -> None:
        # Lists (e.g. from JSON) become tuples so the protocol stays hashable and comparable.
        object.__setattr__(self, "milestones", tuple(self.milestones))
        for text in (self.length, self.warmup):
            split_steps(text)
        object.__setattr__(self, "milestones", _in_order(self.milestones))  # parses (checks) each milestone
        if split_steps(self.length) == (0, 0):
            raise ProtocolError(f"training length must be at least one step, got {self.length!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ProtocolError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if not isinstance(self.augment, bool):
            raise ProtocolError(f"augment must be true or false, got {self.augment!r}")
        try:
            check_real(self.lr, "learning rate", low=0, low_open=True)
            check_real(self.momentum, "momentum", low=0, high=1, high_open=True)
            check_real(self.weight_decay, "weight decay", low=0)
            check_real(self.gamma, "LR decay factor (gamma)", low=0)
        except BadNumberError as e:
            raise ProtocolError(str(e)) from None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Protocol":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ProtocolError(f"unknown protocol settings {unknown}; known: {sorted(names)}")
        return cls(**d)

    def replace(self, **changes) -> "Protocol":
        """A copy with some settings changed (validated)."""
        return dataclasses.replace(self, **changes)

    def total_steps(self, iterations_per_epoch: int) -> int:
        return parse_steps(self.length, iterations_per_epoch)

    def milestone_steps(self, iterations_per_epoch: int) -> list[int]:
        return sorted(parse_steps(m, iterations_per_epoch) for m in self.milestones)

    def warmup_steps(self, iterations_per_epoch: int) -> int:
        return parse_steps(self.warmup, iterations_per_epoch)

    def schedule_warnings(self, iterations_per_epoch: int) -> list[str]:
        """What in the LR schedule never takes effect in this training (each a sentence), e.g. the
        milestones of a preset after `--epochs` shortened it."""
        total = self.total_steps(iterations_per_epoch)
        out = []
        late = [m for m in self.milestones if parse_steps(m, iterations_per_epoch) >= total]
        if late:
            out.append(f"LR milestone(s) {', '.join(late)} lie at or beyond the end of training ({self.length}, "
                       f"{total} steps), so the LR is never decayed there (give --milestones to set them)")
        if self.warmup_steps(iterations_per_epoch) > total:
            out.append(f"the warmup ({self.warmup}) is longer than the training ({self.length}): the LR never "
                       f"reaches its peak {self.lr}")
        return out

    def lr_at(self, step: int, iterations_per_epoch: int) -> float:
        """The learning rate used by the optimiser step that takes the weights from `step` to `step`+1."""
        return LRSchedule(self, iterations_per_epoch)(step)


class LRSchedule:
    """`Protocol.lr_at` with the milestones parsed once (called every step)."""

    def __init__(self, protocol: Protocol, iterations_per_epoch: int):
        self.base = float(protocol.lr)
        self.gamma = float(protocol.gamma)
        self.milestones = protocol.milestone_steps(iterations_per_epoch)
        self.warmup = protocol.warmup_steps(iterations_per_epoch)

    def __call__(self, step: int) -> float:
        decays = sum(1 for m in self.milestones if m <= step)
        lr = self.base * self.gamma**decays
        if step < self.warmup:
            lr *= (step + 1) / self.warmup
        return lr


PRESETS: dict[str, str] = {
    "paper": "the paper's Table 4 for the dataset and model family (CIFAR/SVHN: 160 epochs; ImageNet: 90; MLPs: 40)",
    "short": "3 epochs at batch 128, LR 0.1 then 0.01 for the last epoch: quick runs on any dataset",
    "smoke": "12 iterations at batch 32 with warmup and one LR decay: for tests",
}

_IMAGENET = Protocol(
    length="90ep", batch_size=1024, lr=0.4, milestones=("30ep", "60ep", "80ep"), warmup="5ep"
)
_CIFAR = Protocol(length="160ep", batch_size=128, lr=0.1, milestones=("80ep", "120ep"))
_MLP = Protocol(length="40ep", batch_size=128, lr=0.1, momentum=0.0, weight_decay=0.0, milestones=())
#: A family's recipe (`ModelFamily.recipe`) -> its "paper" protocol on small images.
_RECIPES = {"conv": _CIFAR, "mlp": _MLP}


def _dataset_key(dataset: str) -> str:
    return canonical_name(dataset)


def _family(model: str) -> ModelFamily:
    return family(parse_model_name(model).kind)


def preset(name: str, dataset: str, model: str) -> Protocol:
    """The protocol called `name` for training `model` on `dataset` (see the module's table)."""
    if name not in PRESETS:
        raise ProtocolError(f"unknown preset {name!r}; the presets are: {', '.join(PRESETS)}")
    recipe = _family(model).recipe
    if name == "paper" and recipe is None:
        name = "short"  # no paper protocol for a family of one's own: one sized to any data
    paper = _IMAGENET if _dataset_key(dataset) == "imagenet" else _RECIPES.get(recipe, _CIFAR)
    if name == "paper":
        return paper
    if name == "short":
        return paper.replace(length="3ep", batch_size=128, lr=0.1, milestones=("2ep",), warmup="0it")
    return paper.replace(length="12it", batch_size=32, lr=0.05, milestones=("8it",), warmup="2it")


def preset_stand_in(name: str, model: str) -> str | None:
    """What to tell the user when preset `name` is not what `model` gets, else None."""
    if name != "paper" or _family(model).recipe is not None:
        return None
    short = preset("short", "cifar10", model)
    return (f"the paper has no protocol for {model}: training follows the 'short' preset ({short.length} at batch "
            f"{short.batch_size}, lr {short.lr}); give --length/--epochs, --lr or --preset to choose another")


def default_rewind(model: str, dataset: str) -> str:
    """The paper's rewinding point: CIFAR ResNets 1000it, VGGs 200it, ImageNet 5ep, MLPs none (the family's)."""
    return "5ep" if _dataset_key(dataset) == "imagenet" else _family(model).rewind
