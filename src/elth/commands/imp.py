"""`elth imp`: Iterative Magnitude Pruning with rewinding; one ticket per level."""
from __future__ import annotations

import argparse
from pathlib import Path

from elth.commands.common import (
    add_device_arguments,
    add_model_arguments,
    add_protocol_arguments,
    add_root_argument,
    add_seed_arguments,
    check_output_dir,
    protocol_from_args,
    resolve_device,
    warn_about_schedule,
)
from elth.data import canonical_name, load_dataset
from elth.errors import ElthError
from elth.models import parse_model_name
from elth.training import default_rewind, parse_steps
from elth.workflows.imp import IMPConfig, check_depth, imp_run_dir, run_imp

DESCRIPTION = """\
Iterative Magnitude Pruning with rewinding. The dense network is trained to the rewind point
(--rewind) once; level 0 trains it from there to the end of the protocol; each next level removes
the smallest-magnitude fraction (--prune-fraction, default 0.2) of the remaining weights globally
over the prunable layers, resets the survivors to their rewind values and trains again from the
rewind step. After L levels the sparsity is 1 - 0.8^L (73.79% at L=6, 89.26% at L=10).
Sparsity counts every conv/linear weight, excluded (dense) layers included.

Outputs go to ROOT/imp-<hash of the settings>/ (all settings but --levels, so a larger --levels
extends a run): level_<k>/ticket.safetensors (the rewind weights masked, the mask, provenance),
level_<k>/train/ (the level's training) and levels.json (level, sparsity, test accuracy, steps).
The dense training to the rewind point is kept in ROOT/rewind-<hash>/ and shared with pruning
baselines of the same settings. Running the same command again does no finished work again and
resumes a killed run from its last checkpoint, with exactly the same result.

examples:
  elth imp --model mlp_2 --dataset fashion_mnist --levels 5 --epochs 2
  elth imp --model cifar_resnet_20 --dataset cifar10 --levels 10      # rewinds to 1000it
  elth inspect runs/imp-*/level_5/ticket.safetensors
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--levels", type=int, required=True, metavar="L",
                        help="prune to level L (levels 0..L are trained; level L has sparsity 1 - 0.8^L)")
    parser.add_argument("--rewind", metavar="STEP",
                        help="rewind point, e.g. 1000it, 200it, 5ep, or 0 for the initial weights "
                        "(default: the paper's: CIFAR ResNets 1000it, VGGs 200it, ImageNet 5ep, MLPs 0)")
    parser.add_argument("--prune-fraction", type=float, default=0.2, metavar="F",
                        help="fraction of the remaining weights each level removes (default: 0.2)")
    parser.add_argument("--exclude", nargs="*", metavar="LAYER",
                        help="layers kept dense, as module or weight names (e.g. fc, conv); replaces the "
                        "default (the output layer of VGGs and MLPs, nothing for ResNets); "
                        "--exclude with no names prunes every layer")
    add_protocol_arguments(parser)
    add_seed_arguments(parser)
    add_device_arguments(parser)
    add_root_argument(parser, "store of runs: the run goes to ROOT/imp-<hash of the settings>/ (default: ./runs)",
                      out_meant_root=True)
    parser.add_argument("--no-progress", action="store_true", help="do not show progress bars")


def level_row(r) -> str:
    return (f"{r.level:>5}  {100 * r.sparsity:>8.2f}%  {r.kept:>11,}  {100 * r.test_accuracy:>8.2f}%  "
            f"{r.test_loss:>9.4f}  {r.train_steps:>7}")


def run(args: argparse.Namespace) -> int:
    parse_model_name(args.model)  # a bad name fails before any data is loaded
    if args.levels < 0:
        raise ElthError(f"--levels must be >= 0, got {args.levels}")
    if not 0.0 < args.prune_fraction < 1.0:  # NaN fails this too
        raise ElthError(f"--prune-fraction must be between 0 and 1 (exclusive), got {args.prune_fraction}")
    dataset_key = canonical_name(args.dataset)
    protocol = protocol_from_args(args, dataset_key, args.model)
    rewind = args.rewind if args.rewind is not None else default_rewind(args.model, dataset_key)
    parse_steps(rewind, 1)  # syntax check before the data is loaded
    check_output_dir(args.root, "--root")
    data_seed = args.seed if args.data_seed is None else args.data_seed
    device = resolve_device(args.device)

    data = load_dataset(dataset_key, args.data_dir, device=device)
    config = IMPConfig(
        model=args.model, dataset=data.info.name, protocol=protocol, rewind=rewind,
        prune_fraction=args.prune_fraction, exclude=None if args.exclude is None else tuple(args.exclude),
        seed=args.seed, data_seed=data_seed, precision=args.precision,
    )
    check_depth(config, data.info, args.levels)  # before anything is written
    run_path = imp_run_dir(config, data, Path(args.root), create=False)  # run_imp makes it
    ipe = data.iterations_per_epoch(protocol.batch_size)
    print(
        f"IMP on {args.model} / {data.info.name}: levels 0..{args.levels}, prune fraction {args.prune_fraction}, "
        f"rewind {rewind}, {protocol.length} per level ({protocol.total_steps(ipe)} steps at batch "
        f"{protocol.batch_size}), seed {args.seed}, data seed {data_seed}, {args.precision} on {device}",
        flush=True,
    )
    print(f"outputs: {run_path}/", flush=True)
    warn_about_schedule(protocol, data)
    print(f"{'level':>5}  {'sparsity':>9}  {'kept':>11}  {'test acc':>9}  {'test loss':>9}  {'steps':>7}", flush=True)
    results = run_imp(
        config, data, args.levels, Path(args.root), device=device, progress=not args.no_progress,
        on_level=lambda r: print(level_row(r), flush=True),
    )
    print(f"tickets: {run_path}/level_<k>/ticket.safetensors (k = 0..{args.levels}); "
          f"last: {results[-1].ticket_path}")
    print(f"per-level results: {run_path / 'levels.json'}")
    return 0
