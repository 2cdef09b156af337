"""`train_dst`: a network trained from scratch by RigL or DPF, with its options, result and run cache."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

import torch

from elth.files import (
    RESULT_FILE,
    TICKET_FILE,
    TRAIN_DIR,
    read_record,
    write_json_atomic,
)
from elth.flops import (
    dpf_training_flops,
    forward_macs,
    rigl_training_flops,
    training_flops,
    weight_positions,
)
from elth.limits import MAX_MULTIPLIER, check_seed
from elth.masks import count, excluded_names
from elth.models import build_model
from elth.runs import RunKey
from elth.sparsity.dst.common import check_settings
from elth.sparsity.dst.densities import DISTRIBUTIONS, DSTError, layer_densities
from elth.sparsity.dst.dpf import DPF
from elth.sparsity.dst.rigl import RigL
from elth.tickets import from_model, save_ticket
from elth.training import PRECISIONS, Member, TrainingDiverged, train_group
from elth.training.protocol import scale_steps

METHODS = ("rigl", "dpf")
#: Defaults per method; options a method does not have are absent.
DEFAULTS: dict[str, dict] = {
    "rigl": {"distribution": "erk", "update_every": 100, "drop_fraction": 0.3, "end_fraction": 0.75},
    "dpf": {"update_every": 16, "end_fraction": 0.75},
}
COMMON_OPTIONS = ("multiplier", "exclude")


def resolve_options(method: str, options: dict) -> dict:
    """The method's options with defaults filled in (None means the default); unknown or
    inapplicable options are a `DSTError`."""
    if method not in METHODS:
        raise DSTError(f"unknown dynamic sparse training method {method!r}; choose one of {', '.join(METHODS)}")
    known = set(DEFAULTS["rigl"]) | set(DEFAULTS["dpf"]) | set(COMMON_OPTIONS)
    unknown = sorted(set(options) - known)
    if unknown:
        raise DSTError(f"unknown option(s) {', '.join(unknown)}; the options are {', '.join(sorted(known))}")
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(k for k in given if k not in DEFAULTS[method] and k not in COMMON_OPTIONS)
    if foreign:
        raise DSTError(f"{', '.join(foreign).replace('_', ' ')} applies to RigL only, not to {method.upper()}")
    resolved = {**DEFAULTS[method], "multiplier": 1, "exclude": None, **given}
    k = resolved["multiplier"]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_MULTIPLIER:
        raise DSTError(f"the length multiplier must be a whole number from 1 to {MAX_MULTIPLIER}, got {k!r}")
    check_settings(0.0, 1, resolved["update_every"], resolved["end_fraction"])
    if method == "rigl":
        if resolved["distribution"] not in DISTRIBUTIONS:
            raise DSTError(f"unknown layer distribution {resolved['distribution']!r}; "
                           f"choose one of {', '.join(DISTRIBUTIONS)}")
        if not 0.0 < resolved["drop_fraction"] < 1.0:
            raise DSTError(f"the drop fraction must be above 0 and below 1, got {resolved['drop_fraction']}")
    if resolved["exclude"] is not None:
        resolved["exclude"] = tuple(resolved["exclude"])
    return resolved


def scale_protocol(protocol, multiplier: int):
    """The protocol `multiplier` times as long, with LR milestones and warmup scaled alike (RigL-Kx)."""
    if multiplier == 1:
        return protocol
    return protocol.replace(
        length=scale_steps(protocol.length, multiplier),
        milestones=tuple(scale_steps(m, multiplier) for m in protocol.milestones),
        warmup=scale_steps(protocol.warmup, multiplier),
    )


def make_controller(method: str, sparsity: float, total_steps: int, options: dict, seed: int):
    if method == "rigl":
        return RigL(
            sparsity, total_steps, distribution=options["distribution"], update_every=options["update_every"],
            drop_fraction=options["drop_fraction"], end_fraction=options["end_fraction"],
            exclude=options["exclude"], seed=seed,
        )
    return DPF(sparsity, total_steps, update_every=options["update_every"], end_fraction=options["end_fraction"],
               exclude=options["exclude"])


@dataclass
class DSTResult:
    method: str
    model: str
    dataset: str
    sparsity: float
    test_accuracy: float
    test_loss: float
    train_steps: int
    #: Training FLOPs by the conventions of `elth.flops`.
    training_flops: float
    #: FLOPs of one dense training of the same model under the protocol before any multiplier.
    dense_training_flops: float
    seconds: float
    ticket_path: str | None = None

    @property
    def relative_flops(self) -> float:
        return self.training_flops / self.dense_training_flops

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DSTResult":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class DstKey(RunKey):
    """What determines a DST run (`root/dst-<hash>`)."""

    prefix: ClassVar[str] = "dst"
    model: str
    dataset: dict
    protocol: dict
    method: str
    sparsity: float
    options: dict
    excluded: list
    seed: int
    data_seed: int
    precision: str


def dst_key(model_name: str, data, protocol, method: str, sparsity: float, options: dict, excluded: list[str],
            seed: int, data_seed: int, precision: str) -> DstKey:
    opts = {k: v for k, v in options.items() if k != "exclude"}
    return DstKey(model_name, data.info.to_dict(), protocol.to_dict(), method, float(sparsity), opts, list(excluded),
                  int(seed), int(data_seed), precision)


def _check_sparsity(model: torch.nn.Module, sparsity: float, options: dict) -> None:
    layer_densities(model, 1.0 - sparsity, options.get("distribution", "uniform"), options["exclude"])


def check_sparsity(model_name: str, info, sparsity: float, options: dict) -> None:
    """A `DSTError` when the layers kept dense (`options`, resolved) make `sparsity` impossible for
    `model_name` on a dataset of `info` (what `train_dst` finds out before it trains)."""
    _check_sparsity(build_model(model_name, info.input_shape, info.num_classes, seed=0), sparsity, options)


@dataclass
class _Planned:
    """A DST run ready to train: its model (starting weights), controller and run directory."""

    model_name: str
    method: str
    options: dict
    sparsity: float
    seed: int
    data_seed: int
    precision: str
    model: torch.nn.Module
    controller: object
    protocol: object
    total: int
    excluded: list[str]
    run: Path | None
    label: str

    @property
    def train_dir(self) -> Path | None:
        return None if self.run is None else self.run / TRAIN_DIR


def _plan(model_name: str, data, protocol, method: str, sparsity: float, seed: int, data_seed: int, root,
          precision: str, method_options: dict) -> _Planned | DSTResult:
    """The checked settings of a DST run; its recorded result when it finished before."""
    options = resolve_options(method, method_options)
    if precision not in PRECISIONS:
        raise DSTError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not 0.0 <= sparsity < 1.0:  # NaN fails this too
        raise DSTError(f"sparsity must be at least 0 and below 1, got {sparsity}")
    check_seed(data_seed, "data seed")
    info = data.info
    model = build_model(model_name, info.input_shape, info.num_classes, seed=seed)
    excluded = excluded_names(model, None if options["exclude"] is None else list(options["exclude"]))
    scaled = scale_protocol(protocol, options["multiplier"])
    total = scaled.total_steps(data.iterations_per_epoch(scaled.batch_size))
    controller = make_controller(method, sparsity, total, options, seed)
    _check_sparsity(model, sparsity, options)  # before any run directory
    run = None
    if root is not None:
        run = dst_key(model_name, data, scaled, method, sparsity, options, excluded, seed, data_seed,
                      precision).directory(root)
        done = read_record(run / RESULT_FILE, DSTResult.from_dict)
        if done is not None:
            return done
    return _Planned(model_name, method, options, float(sparsity), int(seed), int(data_seed), precision, model,
                    controller, scaled, total, excluded, run, method_label(method, options))


def _finish(p: _Planned, result, data, protocol) -> DSTResult:
    """The result of a trained DST run (FLOPs priced); with a run directory, its ticket and result.json."""
    model, controller, info = p.model, p.controller, data.info
    total, batch = p.total, p.protocol.batch_size
    mask = controller.mask()
    kept, prunable = count(mask)
    dense_macs = forward_macs(model)
    if p.method == "rigl":
        flops = rigl_training_flops(forward_macs(model, mask), dense_macs, total, batch,
                                    controller.update_every, controller.end_step)
    else:
        positions = weight_positions(model)
        weight_steps = controller.weight_steps(total)
        sparse_sum = sum(positions[n] * weight_steps[n] for n in positions)
        flops = dpf_training_flops(sparse_sum, dense_macs, total, batch)
    dense_flops = training_flops(dense_macs, protocol.total_steps(data.iterations_per_epoch(protocol.batch_size)),
                                 protocol.batch_size)
    out = DSTResult(
        method=p.method, model=p.model_name, dataset=info.name, sparsity=1.0 - kept / prunable,
        test_accuracy=float(result.test_accuracy), test_loss=float(result.test_loss), train_steps=total,
        training_flops=flops, dense_training_flops=dense_flops, seconds=result.seconds,
    )
    if p.run is not None:
        provenance = {
            "method": p.method,
            "description": f"{p.label} training of {p.model_name} from scratch to {100 * out.sparsity:.2f}% sparsity "
                           f"({total} steps)",
            "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.options.items()},
            "excluded": list(p.excluded), "requested_sparsity": p.sparsity, "sparsity": out.sparsity,
            "kept": kept, "prunable": prunable, "test_accuracy": out.test_accuracy,
            "training_flops": flops, "seed": p.seed, "data_seed": p.data_seed, "precision": p.precision,
        }
        ticket = from_model(model, info, mask, rewind_step=total, rewind=f"{total}it", protocol=p.protocol.to_dict(),
                            provenance=provenance, keep_dense=False)
        if p.method == "dpf":
            dense = controller.dense_weights()
            ticket.dense = {n: dense[n] if n in dense else ticket.state[n].clone() for n in ticket.mask}
        out.ticket_path = str(save_ticket(ticket, p.run / TICKET_FILE))
        write_json_atomic(p.run / RESULT_FILE, out.to_dict())
    return out


def train_dst(
    model_name: str,
    data,
    protocol,
    method: str,
    sparsity: float,
    *,
    seed: int,
    data_seed: int,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    precision: str = "fp32",
    eval_every: str | None = None,
    **method_options,
) -> DSTResult:
    """Train `model_name` from scratch with RigL or DPF to `sparsity` (over all prunable weights).

    `method_options`: distribution, update_every, drop_fraction (RigL); update_every (DPF);
    end_fraction; multiplier (K times the protocol's length, schedule scaled alike); exclude.
    With `root`, the run lives in `root/dst-<hash>/` (train/ checkpoints, ticket.safetensors,
    result.json): a finished run is returned as recorded, an interrupted one resumes exactly.
    """
    [result] = train_dst_group(model_name, data, protocol, method, [(sparsity, seed, data_seed)], group_size=1,
                               root=root, device=device, progress=progress, precision=precision,
                               eval_every=eval_every, **method_options)
    if isinstance(result, TrainingDiverged):
        raise result
    return result


def train_dst_group(
    model_name: str,
    data,
    protocol,
    method: str,
    runs: list[tuple[float, int, int]],
    *,
    group_size: int,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
    precision: str = "fp32",
    eval_every: str | None = None,
    **method_options,
) -> list[DSTResult | TrainingDiverged]:
    """`train_dst` for several runs of one model, method and options, `runs` = (sparsity, seed,
    data seed) each, trained at most `group_size` at once as one fused network (see
    `elth.training.fused`; each run's controller its own). Each run lives where `train_dst` puts
    it, so `train_dst` finds it finished (or resumes it); results in the given order (a diverged
    run: its `TrainingDiverged`)."""
    if group_size < 1:
        raise DSTError(f"group size must be at least 1, got {group_size}")
    planned = [_plan(model_name, data, protocol, method, s, seed, ds, root, precision, method_options)
               for s, seed, ds in runs]
    results: list[DSTResult | TrainingDiverged | None] = [p if isinstance(p, DSTResult) else None for p in planned]
    todo = [i for i, p in enumerate(planned) if not isinstance(p, DSTResult)]
    if not todo:
        return results
    first = planned[todo[0]]
    members = [Member(planned[i].model, planned[i].data_seed, out_dir=planned[i].train_dir,
                      controller=planned[i].controller) for i in todo]
    desc = (f"{model_name} {first.label} {100 * runs[todo[0]][0]:.1f}%" if len(todo) == 1
            else f"{model_name} {first.label} fused")
    trained = train_group(members, data, first.protocol, precision=precision, device=device, progress=progress,
                          eval_every=eval_every, members_at_once=group_size, desc=desc)
    for i, result in zip(todo, trained):
        results[i] = result if isinstance(result, TrainingDiverged) else _finish(planned[i], result, data, protocol)
    return results


def method_label(method: str, options: dict) -> str:
    """A short name for the setting, e.g. 'RigL-5x (ERK)' or 'DPF'."""
    k = options.get("multiplier", 1)
    name = {"rigl": "RigL", "dpf": "DPF"}[method] + (f"-{k}x" if k != 1 else "")
    if method == "rigl":
        name += f" ({options['distribution'].upper() if options['distribution'] == 'erk' else 'uniform'})"
    return name
