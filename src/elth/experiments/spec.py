"""Experiments as declarative specs: what to run, at each scale, and nothing about how.

An `Experiment` names a figure or table of the paper and holds one `Setup` per scale:

- `paper`: the paper's protocol exactly (Table 4; CIFAR-10 for ResNets/VGGs, MNIST for MLPs);
- `cpu`: a reduced protocol a 2-core CPU finishes in a few hours on Fashion-MNIST (fewer epochs,
  narrower networks, the same IMP fraction and rewinding);
- `smoke`: seconds on synthetic data, for tests.

A setup (one part of an experiment at one scale, on one dataset) lists the family members (every member is a target; IMP runs on each), the IMP levels at
which tickets are compared (level L has sparsity 1 - 0.8^L), the transfers, the baselines and the
number of seeds. `expand` turns it into the runs the runner executes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from elth.elastic.match import has_replicable_units
from elth.elastic.strategies import ORDERS, SQUEEZE_MODES
from elth.elastic.width import SQUEEZE_CRITERIA as WIDTH_SQUEEZE_CRITERIA
from elth.errors import ElthError
from elth.limits import MAX_SEEDS, check_int, check_real
from elth.methods import BASELINES, DEFAULT_STRATEGIES, TRANSFER_BASELINES
from elth.models import parse_model_name
from elth.training.protocol import Protocol

SCALES = ("paper", "cpu", "smoke")
#: The scale whose runs only check that the pipeline works end to end (near-chance accuracies).
SMOKE_SCALE = SCALES[2]
#: `Setup.transfers` shorthand: every source to every other member.
ALL_PAIRS = "all"


class SpecError(ElthError, ValueError):
    """An experiment spec or a request for one that cannot be run."""


@dataclass(frozen=True)
class Transfer:
    """One elastic ticket transformation: source member's IMP tickets -> target member."""

    source: str
    target: str
    order: str = ORDERS[0]  # how a stretch orders its replicas
    squeeze_mode: str = SQUEEZE_MODES[0]  # how a squeeze drops units
    #: the units a stretch replicates in every stretched stage (None: every replicable unit)
    units: tuple[int, ...] | None = None
    #: the units a squeeze drops in every squeezed stage (None: chosen by `squeeze_mode`)
    drop: tuple[int, ...] | None = None
    #: replicas get their source unit's masks permuted within each layer (Figure 4's "- Random")
    random_replicas: bool = False
    #: the source's IMP runs on this dataset and its ticket moves to the setup's (Appendix D); with
    #: it, source and target may be the same network (a dataset transfer alone)
    source_dataset: str | None = None
    #: a change of width (beyond the paper): which units a narrower target keeps ("": by norm; see
    #: `elastic.width.SQUEEZE_CRITERIA`), and whether a wider one divides its copies' outgoing weights
    width_squeeze: str = ""
    rescale: bool = True


@dataclass(frozen=True)
class Setup:
    """One scale of an experiment."""

    dataset: str
    members: tuple[str, ...]
    levels: tuple[int, ...]
    #: training preset name (None: elth's default for each model and dataset)
    preset: str | None = None
    #: protocol fields that replace the preset's, as (field, value) pairs
    protocol: tuple[tuple[str, object], ...] = ()
    #: rewind point (None: elth's default for each model: 1000it ResNets, 200it VGGs, ...)
    rewind: str | None = None
    prune_fraction: float = 0.2
    #: IMP runs this many levels past the deepest compared level: transformed tickets' sparsity
    #: drifts (stretching adds copies of sparse units), and IMP's curve must reach it to be read there
    imp_beyond: int = 1
    #: members whose IMP tickets are transferred (None: every member)
    sources: tuple[str, ...] | None = None
    transfers: tuple[Transfer, ...] | str = ALL_PAIRS
    order: str = ORDERS[0]
    squeeze_mode: str = SQUEEZE_MODES[0]
    #: compared methods, by name (`elth.methods.BASELINES`); snip-extra and the ETT controls are made from each transfer
    baselines: tuple[str, ...] = ()
    #: members the (non-transfer) baselines are made for (None: every member)
    baseline_targets: tuple[str, ...] | None = None
    #: IMP levels at which the baselines are made (None: `levels`); more levels around the compared
    #: ones let ETT tickets, whose sparsity drifts, be compared with the baselines by interpolation
    baseline_levels: tuple[int, ...] | None = None
    seeds: int = 3
    #: IMP levels at which linear mode connectivity is measured (Figure 8): for every transfer target,
    #: its own IMP ticket and each ETT ticket into it, two copies trained with different data seeds
    lmc_levels: tuple[int, ...] = ()
    #: evenly spaced interpolation coefficients on each path, endpoints included
    lmc_points: int = 30
    #: beyond the paper: every transfer that changes depth also gets a sparsity-matched ETT ticket
    #: (`elth transform --match-sparsity`; strategy "<strategy> matched"), compared like the plain one
    match_sparsity: bool = False
    #: what this scale changes with respect to the paper, in one or two sentences
    note: str = ""

    @property
    def max_level(self) -> int:
        return max(self.levels + self.levels_of_baselines)

    @property
    def levels_of_baselines(self) -> tuple[int, ...]:
        return self.levels if self.baseline_levels is None else self.baseline_levels

    @property
    def imp_levels(self) -> int:
        """How deep IMP runs on every member."""
        return self.max_level + self.imp_beyond

    def source_members(self) -> tuple[str, ...]:
        return self.members if self.sources is None else self.sources

    def expand_transfers(self) -> tuple[Transfer, ...]:
        if self.transfers == ALL_PAIRS:
            return tuple(
                Transfer(s, t, self.order, self.squeeze_mode)
                for s in self.source_members()
                for t in self.members
                if t != s
            )
        return tuple(self.transfers)

    def with_seeds(self, seeds: int | None) -> "Setup":
        return self if seeds is None else replace(self, seeds=seeds)

    def _validate_numbers(self) -> None:
        """Integers where counts are meant, finite fractions, a protocol override that validates."""
        try:
            for lv in (*self.levels, *(self.baseline_levels or ()), *self.lmc_levels):
                check_int(lv, "an IMP level")
            check_int(self.imp_beyond, "imp_beyond")
            check_int(self.seeds, "the number of seeds", low=1, high=MAX_SEEDS)
            check_int(self.lmc_points, "lmc_points")
            check_real(self.prune_fraction, "the prune fraction", low=0, high=1, low_open=True, high_open=True)
            fields = dict(self.protocol)
            Protocol(**fields)  # every override value checked on its own (the preset supplies the rest)
        except (ElthError, TypeError) as e:
            raise SpecError(f"setup on {self.dataset}: {e}") from None

    def validate(self) -> None:
        if not self.members:
            raise SpecError("a setup needs at least one member")
        for m in self.members:
            parse_model_name(m)
        if len(set(self.members)) != len(self.members):
            raise SpecError(f"members listed twice: {self.members}")
        self._validate_numbers()
        if not self.levels or min(self.levels) < 1:
            raise SpecError(f"IMP levels must be positive, got {self.levels}")
        if self.baseline_levels is not None and (not self.baseline_levels or min(self.baseline_levels) < 1):
            raise SpecError(f"baseline levels must be positive, got {self.baseline_levels}")
        if self.imp_beyond < 0:
            raise SpecError(f"imp_beyond must be >= 0, got {self.imp_beyond}")
        if self.seeds < 1:
            raise SpecError(f"the number of seeds must be positive, got {self.seeds}")
        for lv in self.lmc_levels:
            if lv not in self.levels:
                raise SpecError(f"linear mode connectivity at level {lv}, which is not a compared level {self.levels}")
        if self.lmc_points < 2:
            raise SpecError(f"an interpolation path needs at least 2 points, got {self.lmc_points}")
        for s in self.source_members():
            if s not in self.members:
                raise SpecError(f"source {s!r} is not a member of the setup")
        if self.transfers != ALL_PAIRS and isinstance(self.transfers, str):
            raise SpecError(f"transfers must be a tuple of Transfer or {ALL_PAIRS!r}, got {self.transfers!r}")
        for t in self.expand_transfers():
            # A source on another dataset need not be a member here (its IMP runs there).
            for name in (t.source, t.target) if t.source_dataset is None else (t.target,):
                if name not in self.members:
                    raise SpecError(f"transfer {t.source} -> {t.target}: {name!r} is not a member")
            parse_model_name(t.source)
            if t.source == t.target and t.source_dataset is None:
                raise SpecError(f"transfer {t.source} -> {t.target}: the same network, from the same dataset")
            if t.order not in ORDERS:
                raise SpecError(f"unknown stretch order {t.order!r} (one of {', '.join(ORDERS)})")
            if t.squeeze_mode not in SQUEEZE_MODES:
                raise SpecError(f"unknown squeeze mode {t.squeeze_mode!r} (one of {', '.join(SQUEEZE_MODES)})")
            if is_width_change(t.source, t.target):
                if t.units is not None or t.drop is not None:
                    raise SpecError(f"transfer {t.source} -> {t.target} changes the width: units and drop are for depth")
                if t.width_squeeze and t.width_squeeze not in WIDTH_SQUEEZE_CRITERIA:
                    raise SpecError(f"unknown width squeeze {t.width_squeeze!r} (one of {', '.join(WIDTH_SQUEEZE_CRITERIA)})")
                continue
            if t.width_squeeze or not t.rescale:
                raise SpecError(f"transfer {t.source} -> {t.target}: width_squeeze and rescale are for a change of width")
            stretch = is_stretch(t.source, t.target)
            if t.units is not None and not stretch:
                raise SpecError(f"transfer {t.source} -> {t.target}: units to replicate given for a squeeze")
            if (t.drop is not None) and stretch:
                raise SpecError(f"transfer {t.source} -> {t.target}: units to drop given for a stretch")
            if t.random_replicas and not stretch:
                raise SpecError(f"transfer {t.source} -> {t.target}: random replicas need a stretch")
        for m in self.baseline_targets or ():
            if m not in self.members:
                raise SpecError(f"baseline target {m!r} is not a member of the setup")
        for b in self.baselines:
            if b not in BASELINES:
                raise SpecError(f"unknown baseline {b!r} (one of {', '.join(BASELINES)})")


@dataclass(frozen=True)
class Experiment:
    """A figure or table of the paper: per scale, one or more parts (a part has one dataset)."""

    name: str
    title: str
    #: where the paper shows it ("Figure 6", "Appendix C, Table 5")
    paper: str
    description: str
    scales: tuple[tuple[str, tuple[Setup, ...]], ...] = field(default=())
    #: the spec file it was read from ("" for one defined in Python)
    source: str = ""

    def scale_names(self) -> tuple[str, ...]:
        return tuple(s for s, _ in self.scales)

    def setups(self, scale: str) -> tuple[Setup, ...]:
        for name, setups in self.scales:
            if name == scale:
                return setups
        raise SpecError(
            f"experiment {self.name!r} has no {scale!r} scale (it has {', '.join(self.scale_names())})"
        )


# -- expansion into runs ----------------------------------------------------------------------
@dataclass(frozen=True)
class ImpRun:
    """IMP with rewinding on one member and seed, to the setup's deepest level."""

    model: str
    seed: int
    levels: int
    #: the dataset it runs on ("": the setup's; another for the sources of cross-dataset transfers)
    dataset: str = ""

    @property
    def label(self) -> str:
        on = f" on {self.dataset}" if self.dataset else ""
        return f"imp {self.model}{on} seed {self.seed} (to level {self.levels})"


@dataclass(frozen=True)
class TicketRun:
    """Make one ticket for `target` (an ETT or a baseline at an IMP level's sparsity), then train it."""

    method: str  # "ett" or a baseline name
    target: str
    level: int
    seed: int
    source: str = ""  # ETTs and the transfer baselines: the source member
    order: str = ""
    squeeze_mode: str = ""
    units: tuple[int, ...] | None = None
    drop: tuple[int, ...] | None = None
    random_replicas: bool = False
    source_dataset: str = ""
    #: the ETT ticket brought to its source's exact sparsity (`elastic.match_sparsity`)
    match_sparsity: bool = False
    width_squeeze: str = ""
    rescale: bool = True

    @property
    def label(self) -> str:
        src = f" <- {self.source}" if self.source else ""
        how = f" ({self.strategy})" if self.strategy and self.strategy not in DEFAULT_STRATEGIES else ""
        return f"{self.method} {self.target}{src}{how} level {self.level} seed {self.seed}"

    @property
    def strategy(self) -> str:
        """How a transfer run's ticket is made: 'appending', 'interpolation 1,2', 'drop 1,3', ..."""
        if not self.source:
            return ""
        matched = " matched" if self.match_sparsity else ""
        if self.source_dataset:
            how = self._depth_strategy()
            return (f"{how} " if how else "") + f"from {self.source_dataset}" + matched
        return self._depth_strategy() + matched

    def _depth_strategy(self) -> str:
        if self.source == self.target:
            return ""
        if is_width_change(self.source, self.target):
            if is_wider(self.source, self.target):
                return WIDEN + ("" if self.rescale else " plain") + (" random" if self.random_replicas else "")
            return f"{NARROW} {self.width_squeeze or WIDTH_SQUEEZE_CRITERIA[0]}"
        if is_stretch(self.source, self.target):
            text = self.order
            if self.units is not None:
                text += " " + ",".join(str(u) for u in self.units)
            return text + (" random" if self.random_replicas else "")
        if self.drop is not None:
            return "drop " + ",".join(str(u) for u in self.drop)
        return self.squeeze_mode

    def hparams(self) -> dict:
        """The fields that identify the run (strategy details only where set, so that runs made
        before they existed keep their identity)."""
        d = {k: getattr(self, k) for k in ("method", "target", "level", "seed", "source", "order", "squeeze_mode")}
        for k in ("units", "drop"):
            if getattr(self, k) is not None:
                d[k] = list(getattr(self, k))
        if self.random_replicas:
            d["random_replicas"] = True
        if self.source_dataset:
            d["source_dataset"] = self.source_dataset
        if self.match_sparsity:
            d["match_sparsity"] = True
        if self.width_squeeze:
            d["width_squeeze"] = self.width_squeeze
        if not self.rescale:
            d["rescale"] = False
        return d


@dataclass(frozen=True)
class LMCRun:
    """Linear mode connectivity of one ticket: IMP's on the target (`ticket` None) or an ETT's."""

    target: str
    level: int
    seed: int
    points: int
    ticket: TicketRun | None = None

    @property
    def method(self) -> str:
        return "imp" if self.ticket is None else self.ticket.method

    @property
    def label(self) -> str:
        what = f"imp {self.target} level {self.level} seed {self.seed}" if self.ticket is None else self.ticket.label
        return f"lmc of {what}"


@dataclass(frozen=True)
class SetupRuns:
    """Every run one setup needs (`expand`)."""

    imp: tuple[ImpRun, ...]
    tickets: tuple[TicketRun, ...]
    lmc: tuple[LMCRun, ...] = ()

    @property
    def total(self) -> int:
        return len(self.imp) + len(self.tickets) + len(self.lmc)


#: Strategy labels of width transfers (beyond the paper): "widen", "widen plain" (outgoing weights
#: not rescaled), "narrow norm", "narrow first", ...
WIDEN, NARROW = "widen", "narrow"


def is_width_change(source: str, target: str) -> bool:
    """Whether `target` is `source`'s family and depth at another width."""
    a, b = parse_model_name(source), parse_model_name(target)
    return a.kind == b.kind and a.depth == b.depth and a.fc_layers == b.fc_layers and a.width != b.width


def is_wider(source: str, target: str) -> bool:
    return parse_model_name(target).width > parse_model_name(source).width


def is_stretch(source: str, target: str) -> bool:
    """Whether `target` is deeper than `source` (more units in total)."""
    a, b = parse_model_name(source), parse_model_name(target)
    return b.depth + b.fc_layers > a.depth + a.fc_layers


def _transfer_run(method: str, t: Transfer, level: int, seed: int) -> TicketRun:
    return TicketRun(method, t.target, level, seed, t.source, t.order, t.squeeze_mode, t.units, t.drop,
                     t.random_replicas, t.source_dataset or "", width_squeeze=t.width_squeeze, rescale=t.rescale)


def expand(setup: Setup) -> SetupRuns:
    """Every run a setup needs: IMP per (member, seed), then ETTs and baselines per level and seed."""
    setup.validate()
    seeds = range(setup.seeds)
    transfers = setup.expand_transfers()
    imp = tuple(ImpRun(m, s, setup.imp_levels) for s in seeds for m in setup.members)
    elsewhere = dict.fromkeys((t.source, t.source_dataset) for t in transfers if t.source_dataset)
    imp += tuple(ImpRun(m, s, setup.imp_levels, d) for s in seeds for m, d in elsewhere)
    tickets: list[TicketRun] = []
    baseline_targets = setup.members if setup.baseline_targets is None else setup.baseline_targets
    for s in seeds:
        for level in sorted(set(setup.levels) | set(setup.levels_of_baselines)):
            if level in setup.levels:
                for t in transfers:
                    tickets.append(_transfer_run("ett", t, level, s))
                    if setup.match_sparsity and t.source != t.target and has_replicable_units(t.target):
                        tickets.append(replace(_transfer_run("ett", t, level, s), match_sparsity=True))
            for target in setup.members:
                for b in setup.baselines:
                    if b in TRANSFER_BASELINES:
                        # Tied to the transfers (snip-extra: only those that stretch).
                        if level in setup.levels:
                            for t in transfers:
                                if t.target == target and (b != "snip-extra" or is_stretch(t.source, t.target)):
                                    tickets.append(_transfer_run(b, t, level, s))
                    elif level in setup.levels_of_baselines and target in baseline_targets:
                        tickets.append(TicketRun(b, target, level, s))
    lmc = []
    for s in seeds:
        for level in setup.lmc_levels:
            for target in dict.fromkeys(t.target for t in transfers):
                lmc.append(LMCRun(target, level, s, setup.lmc_points))
                for t in transfers:
                    if t.target == target:
                        lmc.append(LMCRun(target, level, s, setup.lmc_points, _transfer_run("ett", t, level, s)))
    return SetupRuns(imp, tuple(tickets), tuple(lmc))
