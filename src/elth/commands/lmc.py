"""`elth lmc TICKET [TICKET ...]`: linear mode connectivity (stability to SGD noise) of tickets."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from elth.analysis import alphas_of, linear_mode_connectivity, plot_lmc
from elth.commands.common import (
    add_data_dir_argument,
    add_device_arguments,
    add_protocol_arguments,
    check_output_dir,
    resolve_device,
    warn_about_schedule,
)
from elth.commands.train_ticket import ticket_protocol
from elth.data import canonical_name, dataset_info, load_dataset
from elth.errors import ElthError
from elth.files import LMC_FIGURE, LMC_FILE, json_text, write_text_atomic
from elth.limits import check_seed
from elth.runs import RunKey
from elth.tickets import check_dataset, load_ticket

DESCRIPTION = """\
Is a ticket stable to SGD noise? Train two copies of it from the same rewind weights and mask with
different data orders and augmentation (--seeds), then evaluate the test error of (1 - a) W1 + a W2
at --points evenly spaced a in [0, 1]. The instability is the largest error along the path minus
the mean of the two endpoints' errors (the paper's Figure 8: IMP tickets are stable, elastic tickets
from much shallower sources less so).

BatchNorm statistics of an interpolated network are recomputed by default (--bn recompute): reset,
then re-estimated as a cumulative average over --bn-batches un-augmented training batches, at every
point including the endpoints. --bn interpolate interpolates them like the weights instead (a = 0
and a = 1 are then exactly the trained copies). Networks without BN (MLPs) ignore --bn.

The protocol is each ticket's own unless --preset is given; --epochs/--length, --lr, --batch-size,
--milestones and --warmup override parts of it, as for `elth train-ticket`. The copies are trained
in ROOT/train-<hash>/ (the same directories as `elth train-ticket --out ROOT`), so trainings are
reused and an interrupted run resumes.

Prints, per ticket, the error at each a and the instability, and writes lmc.json (every number)
and lmc.png (error vs a, one line per ticket) to --out, by default ROOT/lmc-<hash of the tickets and
settings>/, so different analyses never overwrite each other.

examples:
  elth lmc runs/imp-*/level_6/ticket.safetensors r20_to_r32.safetensors --label IMP --label "ETT <- ResNet-20"
  elth lmc ticket.safetensors --preset short --points 11 --seeds 0,1 --out lmc_result
"""


@dataclass(frozen=True)
class LMCKey(RunKey):
    """What determines an `elth lmc` run (`root/lmc-<hash>`)."""

    prefix: ClassVar[str] = "lmc"
    tickets: list
    datasets: list
    protocols: list
    data_seeds: list
    points: int
    bn: str
    bn_batches: int
    train_per_class: int | None
    precision: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tickets", nargs="+", metavar="TICKET", help="ticket files (.safetensors)")
    parser.add_argument("--dataset", help="dataset to train and evaluate on (default: each ticket's)")
    add_data_dir_argument(parser)
    add_protocol_arguments(parser)
    parser.set_defaults(preset=None)
    for action in parser._actions:
        if action.dest == "preset":
            action.help = "protocol preset for the dataset and model family (default: each ticket's protocol)"
    g = parser.add_argument_group("analysis")
    g.add_argument("--seeds", default="0,1", metavar="S1,S2",
                   help="data seeds (order and augmentation) of the two copies (default: 0,1)")
    g.add_argument("--points", type=int, default=30, metavar="N",
                   help="evenly spaced interpolation coefficients in [0, 1], endpoints included (default: 30)")
    g.add_argument("--bn", choices=("recompute", "interpolate"), default="recompute",
                   help="BatchNorm statistics along the path: recompute them from training batches at each "
                   "point, or interpolate them (default: recompute)")
    g.add_argument("--bn-batches", type=int, default=20, metavar="N",
                   help="training batches (at the protocol's batch size) for --bn recompute (default: 20)")
    g.add_argument("--train-per-class", type=int, default=0, metavar="K",
                   help="also measure the train error on K fixed un-augmented training examples per class "
                   "(default: 0, test error only)")
    g.add_argument("--label", action="append", metavar="TEXT",
                   help="legend label of a ticket, once per ticket in order (default: from its provenance, "
                   "e.g. IMP or 'ETT <- ResNet-20')")
    add_device_arguments(parser, "fp32, or bf16 autocast for training and evaluation (default: fp32)")
    parser.add_argument("--root", metavar="DIR", default="runs",
                        help="root of the training directories (default: ./runs)")
    parser.add_argument("--out", metavar="DIR",
                        help="where lmc.json and lmc.png go (default: ROOT/lmc-<hash of tickets and settings>)")
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def parse_seeds(text: str) -> tuple[int, int]:
    """'0,1' -> (0, 1); exactly two different integers."""
    parts = [p.strip() for p in text.split(",")]
    try:
        seeds = tuple(int(p) for p in parts)
    except ValueError:
        raise ElthError(f"--seeds takes two comma-separated integers such as 0,1, not {text!r}") from None
    if len(seeds) != 2:
        raise ElthError(f"--seeds takes exactly two data seeds (one per copy), not {len(seeds)}: {text!r}")
    for seed in seeds:
        check_seed(seed, "each of --seeds")
    if seeds[0] == seeds[1]:
        raise ElthError(f"--seeds {text}: the two copies need different data seeds (with one seed both are the same "
                        "training and the path between them measures nothing)")
    return seeds  # type: ignore[return-value]


def _table(result) -> str:
    has_train = bool(result.train_errors)
    lines = [f"  {'alpha':>6}  {'test error':>10}" + (f"  {'train error':>11}" if has_train else "")]
    for i, alpha in enumerate(result.alphas):
        row = f"  {alpha:>6.3f}  {100 * result.test_errors[i]:>9.2f}%"
        if has_train:
            row += f"  {100 * result.train_errors[i]:>10.2f}%"
        lines.append(row)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    seeds = parse_seeds(args.seeds)
    alphas_of(args.points)  # a bad --points fails before any training
    if args.bn == "recompute" and args.bn_batches < 1:
        raise ElthError(f"--bn-batches must be at least 1, got {args.bn_batches}")
    if args.train_per_class < 0:
        raise ElthError(f"--train-per-class must be 0 or more, got {args.train_per_class}")
    if args.label is not None and len(args.label) != len(args.tickets):
        raise ElthError(f"give --label once per ticket: {len(args.tickets)} ticket(s), {len(args.label)} label(s)")
    check_output_dir(args.root, "--root")
    if args.out:
        check_output_dir(args.out, "--out")
    device = resolve_device(args.device)

    jobs = []  # (path, ticket, dataset key, protocol)
    for path in args.tickets:
        ticket = load_ticket(path)
        key = canonical_name(args.dataset or ticket.dataset.name)
        check_dataset(ticket, dataset_info(key, args.data_dir))  # before loading any images
        protocol, _ = ticket_protocol(args, ticket, key)
        jobs.append((path, ticket, key, protocol))

    root = Path(args.root)
    lmc_key = LMCKey(
        tickets=[t.content_hash() for _, t, _, _ in jobs], datasets=[k for _, _, k, _ in jobs],
        protocols=[p.to_dict() for _, _, _, p in jobs], data_seeds=list(seeds), points=args.points, bn=args.bn,
        bn_batches=args.bn_batches, train_per_class=args.train_per_class, precision=args.precision,
    )
    out = Path(args.out) if args.out else lmc_key.directory(root)

    datasets: dict[str, object] = {}
    results = []
    for i, (path, ticket, key, protocol) in enumerate(jobs):
        if key not in datasets:
            datasets[key] = load_dataset(key, args.data_dir, device=device)
        data = datasets[key]
        check_dataset(ticket, data.info)
        print(f"[{i + 1}/{len(jobs)}] {path}: {100 * ticket.sparsity:.2f}% sparse {ticket.model} on "
              f"{data.info.name}, {protocol.length} from step {ticket.rewind_step}, data seeds "
              f"{seeds[0]} and {seeds[1]}, {args.points} points", flush=True)
        warn_about_schedule(protocol, data)
        result = linear_mode_connectivity(
            ticket, data, protocol, data_seeds=seeds, points=args.points, bn=args.bn,
            bn_batches=args.bn_batches, train_examples_per_class=args.train_per_class,
            label=args.label[i] if args.label else None, ticket_path=str(path), root=root, device=device,
            precision=args.precision, progress=not args.no_progress,
        )
        results.append(result)
        bn = (f"BN recomputed from {result.bn_batches} training batches" if result.bn == "recompute"
              else "BN statistics interpolated") if result.bn_layers else "no BN layers"
        a, b = result.trained_test_errors
        print(f"{result.label}: copies trained to test error {100 * a:.2f}% and {100 * b:.2f}%; {bn}")
        print(_table(result))
        e0, e1 = result.endpoint_errors
        print(f"  instability: {100 * result.instability:.2f} percentage points "
              f"(max {100 * max(result.test_errors):.2f}% - endpoints' mean {100 * (e0 + e1) / 2:.2f}%)")
        if result.train_instability is not None:
            print(f"  train instability: {100 * result.train_instability:.2f} percentage points "
                  f"({result.train_examples} training examples)")
        print(flush=True)

    out.mkdir(parents=True, exist_ok=True)
    payload = {"settings": lmc_key.hparams(), "results": [r.to_dict() for r in results]}
    write_text_atomic(out / LMC_FILE, json_text(payload, indent=2) + "\n")
    plot_lmc(results, out / LMC_FIGURE)
    if len(results) > 1:
        width = max(len(r.label) for r in results)
        print("instability (percentage points of test error):")
        for r in results:
            print(f"  {r.label:<{width}}  {100 * r.instability:6.2f}")
    print(f"wrote {out / 'lmc.json'} and {out / 'lmc.png'}")
    return 0
