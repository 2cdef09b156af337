"""`elth train`: train a dense model with a preset protocol (optionally overridden), resumably."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from elth.commands import common
from elth.data import canonical_name, load_dataset
from elth.models import build_model, parse_model_name
from elth.runs import RunKey
from elth.training import train
from elth.training.protocol import PRESETS

DESCRIPTION = """\
Train a dense model with SGD (momentum, weight decay, multi-step LR decay, optional linear warmup).
The protocol comes from a preset (default: the paper's Table 4 for the dataset and model family);
--epochs/--length, --lr, --batch-size, --milestones and --warmup override parts of it.

Lengths are written in epochs and/or iterations: 160ep, 1000it, 5ep100it.

Outputs (in --out, or ROOT/train_<model>_<dataset>-<hash of the settings>/): checkpoint.pt
(weights and optimiser state, written every epoch and at the end), metrics.jsonl (one JSON line per
epoch or evaluation: step, epoch, lr, train loss/accuracy, test loss/accuracy, images/s, seconds),
run.json, result.json. Running the same command again resumes an interrupted run from its last
checkpoint, or prints the recorded result of a finished one.

presets:
""" + "\n".join(f"  {name:<6} {text}" for name, text in PRESETS.items()) + """

examples:
  elth train --model mlp_2 --dataset fashion_mnist --epochs 3
  elth train --model cifar_resnet_20 --dataset cifar10 --preset short --precision bf16
"""


@dataclass(frozen=True)
class DenseTrainKey(RunKey):
    """What determines an `elth train` run (`root/train_<model>_<dataset>-<hash>`)."""

    model: str
    dataset: str
    protocol: dict
    seed: int
    data_seed: int
    precision: str

    def kind(self) -> str:
        return f"train_{self.model}_{self.dataset}".lower().replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_model_arguments(parser)
    common.add_protocol_arguments(parser)
    common.add_seed_arguments(parser)
    common.add_device_arguments(parser)
    parser.add_argument("--eval-every", default="1ep", metavar="STEPS",
                        help="test-set evaluation interval, e.g. 1ep or 500it; 'none' for only at the end (default: 1ep)")
    common.add_root_argument(parser, "store of runs, where the run goes unless --out is given (default: ./runs)")
    parser.add_argument("--out", metavar="DIR",
                        help="this run's folder (default: ROOT/train_<model>_<dataset>-<hash of the settings>); "
                        "an interrupted run there resumes")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:


    parse_model_name(args.model)  # a bad name fails before any data is loaded
    dataset_key = canonical_name(args.dataset)
    protocol = common.protocol_from_args(args, dataset_key, args.model)
    eval_every = common.eval_every_of(args.eval_every)
    if args.out:
        common.check_output_dir(args.out, "--out")
    else:
        common.check_output_dir(args.root, "--root")
    data_seed = args.seed if args.data_seed is None else args.data_seed
    device = common.resolve_device(args.device)

    data = load_dataset(dataset_key, args.data_dir, device=device)
    model = build_model(args.model, data.info.input_shape, data.info.num_classes, seed=args.seed)
    key = DenseTrainKey(args.model, data.info.name, protocol.to_dict(), args.seed, data_seed, args.precision)
    out = Path(args.out) if args.out else key.directory(args.root)

    ipe = data.iterations_per_epoch(protocol.batch_size)
    total = protocol.total_steps(ipe)
    print(
        f"training {args.model} on {data.info.name} for {protocol.length} ({total} steps at batch "
        f"{protocol.batch_size}, {ipe} per epoch), lr {protocol.lr}, seed {args.seed}, data seed {data_seed}, "
        f"{args.precision} on {device}; outputs in {out}",
        flush=True,
    )
    common.warn_about_schedule(protocol, data)
    result = train(
        model, data, protocol, data_seed=data_seed, out_dir=out, eval_every=eval_every,
        precision=args.precision, device=device, progress=not args.no_progress,
        desc=f"{args.model} {data.info.name}",
    )
    print(f"test accuracy {100 * result.test_accuracy:.2f}% (test loss {result.test_loss:.4f}) "
          f"after {result.step} steps, {result.seconds:.1f} s of training")
    print(f"outputs: {out}/ (checkpoint.pt, metrics.jsonl, result.json)")
    return 0
