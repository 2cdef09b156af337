"""`elth dst`: train a sparse network from scratch by dynamic sparse training (RigL or DPF)."""
from __future__ import annotations

import argparse

from elth.commands.common import (
    add_device_arguments,
    add_model_arguments,
    add_protocol_arguments,
    add_root_argument,
    check_output_dir,
    eval_every_of,
    positive_int,
    protocol_from_args,
    resolve_device,
    seed_arg,
    sparsity_arg,
    warn_about_schedule,
)
from elth.console import percent
from elth.data import canonical_name, load_dataset
from elth.models import parse_model_name
from elth.sparsity.dst import DISTRIBUTIONS
from elth.workflows.dst_training import (
    DEFAULTS,
    METHODS,
    check_sparsity,
    method_label,
    resolve_options,
    train_dst,
)

DESCRIPTION = f"""\
Train --model on --dataset from scratch to --sparsity (over all prunable weights; the output layer
of MLPs and VGGs stays dense and counts, as for IMP) while the mask changes during training:

  rigl  random initial mask with ERK (or uniform) layer densities; every --update-every steps
        (default {DEFAULTS['rigl']['update_every']}) until --end-fraction of training (default \
{DEFAULTS['rigl']['end_fraction']}), each layer drops the smallest-|w|
        active weights (a cosine-decaying fraction, starting at --drop-fraction, default \
{DEFAULTS['rigl']['drop_fraction']}) and grows as
        many with the largest dense gradient; per-layer counts stay fixed
  dpf   dense weights W kept, forward and backward through mask * W, gradients applied to W;
        global magnitude mask recomputed every --update-every steps (default {DEFAULTS['dpf']['update_every']}), sparsity rising
        as s_f (1 - (1 - t/t_end)^3) to t_end = --end-fraction of training (default \
{DEFAULTS['dpf']['end_fraction']}), then frozen

--multiplier K trains K times the protocol's length with its LR milestones and warmup scaled alike
(RigL-5x: --multiplier 5). The protocol options are those of `elth train`.

The run lives in ROOT/dst-<hash of all settings>/ (default ROOT: runs): train/ (checkpoints every
epoch; an interrupted run resumes exactly), ticket.safetensors (the final sparse network: mask and
trained weights, rewind step = end of training; `elth inspect` shows its layerwise sparsity) and
result.json. Training FLOPs follow `elth.flops` (RigL: (3 f_S dT + 2 f_S + f_D) / (dT + 1) per
step while masks change; DPF: dense weight gradients every step) and are printed relative to one
dense training of the same model under the protocol (without the multiplier).

examples:
  elth dst --method rigl --model mlp_2 --dataset fashion_mnist --sparsity 0.9 --length 2ep
  elth dst --method rigl --model imagenet_resnet_34 --dataset imagenet --sparsity 73.79% --multiplier 5
  elth dst --method dpf --model cifar_resnet_20 --dataset cifar10 --sparsity 0.95
"""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", required=True, choices=METHODS, help="rigl or dpf (see above)")
    add_model_arguments(parser)
    parser.add_argument("--sparsity", required=True, type=sparsity_arg, metavar="S",
                        help="final fraction of all prunable weights removed, e.g. 0.9 or 73.79%%")
    g = parser.add_argument_group("dynamic sparse training")
    g.add_argument("--distribution", choices=DISTRIBUTIONS,
                   help="RigL only: layer densities, erk (Erdos-Renyi-Kernel) or uniform (default: erk)")
    g.add_argument("--update-every", type=positive_int, metavar="N",
                   help=f"steps between mask updates (default: rigl {DEFAULTS['rigl']['update_every']}, "
                   f"dpf {DEFAULTS['dpf']['update_every']})")
    g.add_argument("--drop-fraction", type=_fraction, metavar="F",
                   help=f"RigL only: fraction of active weights dropped at the first update, decayed by a cosine "
                   f"(default: {DEFAULTS['rigl']['drop_fraction']})")
    g.add_argument("--end-fraction", type=_fraction, metavar="F",
                   help="fraction of training after which masks stay fixed (default: 0.75)")
    g.add_argument("--multiplier", type=positive_int, default=1, metavar="K",
                   help="train K times the protocol's length, milestones and warmup scaled alike (default: 1)")
    g.add_argument("--exclude", nargs="*", metavar="LAYER",
                   help="layers kept dense (weight or module names); replaces the model's default (VGGs and "
                   "MLPs: the output layer); give --exclude alone to make every layer sparse")
    add_protocol_arguments(parser)
    parser.add_argument("--seed", type=seed_arg, default=0,
                        help="seed of the model's initialisation and of RigL's initial mask (default: 0)")
    parser.add_argument("--data-seed", type=seed_arg, metavar="SEED",
                        help="seed of the data order and augmentation (default: the same as --seed)")
    add_device_arguments(parser, "fp32, or bf16 autocast (default: fp32)")
    parser.add_argument("--eval-every", default="1ep", metavar="STEPS",
                        help="test-set evaluation interval, e.g. 1ep or 500it; 'none' for only at the end (default: 1ep)")
    add_root_argument(parser, "store of runs: the run goes to ROOT/dst-<hash of the settings>/ (default: ./runs)",
                      out_meant_root=True)
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:
    parse_model_name(args.model)  # a bad name fails before any data is loaded
    dataset = canonical_name(args.dataset)
    protocol = protocol_from_args(args, dataset, args.model)
    options = resolve_options(args.method, {
        "distribution": args.distribution, "update_every": args.update_every, "drop_fraction": args.drop_fraction,
        "end_fraction": args.end_fraction, "multiplier": args.multiplier,
        "exclude": None if args.exclude is None else tuple(args.exclude),
    })
    eval_every = eval_every_of(args.eval_every)
    check_output_dir(args.root, "--root")
    data_seed = args.seed if args.data_seed is None else args.data_seed
    device = resolve_device(args.device)
    data = load_dataset(dataset, args.data_dir, device=device)

    check_sparsity(args.model, data.info, args.sparsity, options)  # before anything is printed
    label = method_label(args.method, options)
    print(f"{label}: {args.model} on {data.info.name} to {percent(args.sparsity)} sparsity, "
          f"{protocol.length} x {options['multiplier']} at batch {protocol.batch_size}, lr {protocol.lr}, "
          f"seed {args.seed}, data seed {data_seed}, {args.precision} on {device}", flush=True)
    warn_about_schedule(protocol, data)
    result = train_dst(
        args.model, data, protocol, args.method, args.sparsity, seed=args.seed, data_seed=data_seed,
        root=args.root, device=device, progress=not args.no_progress, precision=args.precision,
        eval_every=eval_every, **options,
    )
    print(f"test accuracy {100 * result.test_accuracy:.2f}% (test loss {result.test_loss:.4f}) after "
          f"{result.train_steps} steps, {result.seconds:.1f} s of training")
    print(f"sparsity {100 * result.sparsity:.2f}% over all prunable weights")
    print(f"training FLOPs {result.training_flops:.3e} = {result.relative_flops:.3f}x one dense training "
          f"of {args.model} ({result.dense_training_flops:.3e})")
    print(f"ticket: {result.ticket_path}")
    return 0
