"""`elth train`: train a dense model with a preset protocol (optionally overridden), resumably."""
from __future__ import annotations

import argparse
from pathlib import Path

from elth.errors import ElthError
from elth.training.protocol import PRESETS, Protocol, ProtocolError, parse_steps, preset

HELP = "train a dense model on a dataset with a preset protocol (resumes an interrupted run)"
DESCRIPTION = """\
Train a dense model with SGD (momentum, weight decay, multi-step LR decay, optional linear warmup).
The protocol comes from a preset (default: the paper's Table 4 for the dataset and model family);
--epochs/--length, --lr, --batch-size, --milestones and --warmup override parts of it.

Lengths are written in epochs and/or iterations: 160ep, 1000it, 5ep100it.

Outputs (in --out, or runs/train_<model>_<dataset>-<hash of the settings>/): checkpoint.pt
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


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    """--seed (the model's initialisation) and --data-seed (shared by commands that train from scratch)."""
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's initialisation (default: 0)")
    parser.add_argument("--data-seed", type=int, metavar="SEED",
                        help="seed of the data order and augmentation (default: the same as --seed)")


def add_device_arguments(parser: argparse.ArgumentParser, precision_help: str | None = None) -> None:
    """--precision and --device (shared by commands that train)."""
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help=precision_help or "fp32, or bf16 autocast (fast on GPUs and CPUs with bf16 units; "
                        "default: fp32)")
    parser.add_argument("--device", help="torch device such as cpu, cuda, cuda:1 (default: cuda if available, else cpu); "
                        "under torchrun each rank takes cuda:LOCAL_RANK")
    add_distributed_arguments(parser)


def add_distributed_arguments(parser: argparse.ArgumentParser) -> None:
    """--nproc and --sync-bn (shared by commands that train; see README "Several GPUs")."""
    g = parser.add_argument_group("several devices (one training over ranks started by torchrun)")
    g.add_argument("--nproc", type=int, metavar="N",
                   help="start this command as N ranks on this node through torchrun's launcher (one per GPU; "
                   "gloo ranks on CPUs); the same as `torchrun --standalone --nproc_per_node=N -m elth ...`. "
                   "The protocol's batch is the global batch, split over the ranks")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch (SyncBatchNorm) instead of per rank; the "
                   "paper presets use per-rank BN, the usual multi-GPU ImageNet recipe (one process: no change)")


def add_protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """--preset and the protocol overrides (shared by commands that train)."""
    g = parser.add_argument_group("training protocol")
    g.add_argument("--preset", default="paper", choices=sorted(PRESETS),
                   help="protocol preset for the dataset and model family (default: paper)")
    g.add_argument("--epochs", type=int, metavar="N", help="train for N epochs (overrides the preset's length)")
    g.add_argument("--length", metavar="STEPS",
                   help="training length as epochs and/or iterations, e.g. 160ep, 1000it, 5ep100it")
    g.add_argument("--lr", type=float, help="peak learning rate (overrides the preset)")
    g.add_argument("--batch-size", type=int, metavar="B", help="minibatch size (overrides the preset)")
    g.add_argument("--milestones", metavar="LIST",
                   help="comma-separated steps where the LR is multiplied by 0.1, e.g. 80ep,120ep; 'none' for a constant LR")
    g.add_argument("--warmup", metavar="STEPS", help="linear LR warmup length, e.g. 5ep or 500it (0 for none)")


def protocol_from_args(args: argparse.Namespace, dataset: str, model: str, base: Protocol | None = None) -> Protocol:
    """The preset for (dataset, model) (or `base`, when given) with the command-line overrides applied."""
    base = preset(args.preset, dataset, model) if base is None else base
    changes: dict = {}
    if args.epochs is not None and args.length is not None:
        raise ProtocolError("give either --epochs or --length, not both")
    if args.epochs is not None:
        if args.epochs < 1:
            raise ProtocolError(f"--epochs must be at least 1, got {args.epochs}")
        changes["length"] = f"{args.epochs}ep"
    if args.length is not None:
        changes["length"] = args.length
    if args.lr is not None:
        changes["lr"] = args.lr
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.milestones is not None:
        text = args.milestones.strip()
        changes["milestones"] = () if text.lower() in ("", "none") else tuple(m.strip() for m in text.split(","))
    if args.warmup is not None:
        changes["warmup"] = args.warmup
    return base.replace(**changes)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dataset and --data-dir (shared by commands that build a network from scratch)."""
    parser.add_argument("--model", required=True,
                        help="model name: cifar_resnet_<D>[_<W>], imagenet_resnet_<D>, cifar_vgg_<D>[_fc<K>], mlp_<n>")
    parser.add_argument("--dataset", required=True,
                        help="cifar10, svhn, mnist, fashion_mnist, imagenet, digits (built in) or synthetic; "
                        "NAME@SIZE resizes its images")
    parser.add_argument("--data-dir", metavar="DIR",
                        help="where the dataset's files are (default: $ELTH_DATA, then the usual places)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_protocol_arguments(parser)
    add_seed_arguments(parser)
    add_device_arguments(parser)
    parser.add_argument("--eval-every", default="1ep", metavar="STEPS",
                        help="test-set evaluation interval, e.g. 1ep or 500it; 'none' for only at the end (default: 1ep)")
    parser.add_argument("--out", metavar="DIR",
                        help="output directory (default: runs/train_<model>_<dataset>-<hash of the settings>); "
                        "an interrupted run there resumes")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")


def run(args: argparse.Namespace) -> int:
    import torch

    from elth.data import canonical_name, load_dataset
    from elth.models import build_model, parse_model_name
    from elth.runs import run_dir
    from elth.training.loop import default_device, train

    parse_model_name(args.model)  # a bad name fails before any data is loaded
    dataset_key = canonical_name(args.dataset)
    protocol = protocol_from_args(args, dataset_key, args.model)
    eval_every = None if args.eval_every.strip().lower() == "none" else args.eval_every
    if eval_every is not None:
        parse_steps(eval_every, 1)  # syntax check before the data is loaded
    data_seed = args.seed if args.data_seed is None else args.data_seed
    try:
        device = torch.device(args.device) if args.device else default_device()
    except RuntimeError as e:
        raise ElthError(f"unknown device {args.device!r} ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ElthError("--device cuda was asked for, but this torch build sees no CUDA device")

    data = load_dataset(dataset_key, args.data_dir, device=device)
    model = build_model(args.model, data.info.input_shape, data.info.num_classes, seed=args.seed)
    hparams = {
        "model": args.model,
        "dataset": data.info.name,
        "protocol": protocol.to_dict(),
        "seed": args.seed,
        "data_seed": data_seed,
        "precision": args.precision,
    }
    if args.out:
        out = Path(args.out)
    else:
        kind = f"train_{args.model}_{data.info.name}".lower().replace("-", "_")
        out = run_dir(Path("runs"), kind, hparams)

    ipe = data.iterations_per_epoch(protocol.batch_size)
    total = protocol.total_steps(ipe)
    print(
        f"training {args.model} on {data.info.name} for {protocol.length} ({total} steps at batch "
        f"{protocol.batch_size}, {ipe} per epoch), lr {protocol.lr}, seed {args.seed}, data seed {data_seed}, "
        f"{args.precision} on {device}; outputs in {out}",
        flush=True,
    )
    result = train(
        model, data, protocol, data_seed=data_seed, out_dir=out, eval_every=eval_every,
        precision=args.precision, device=device, progress=not args.no_progress,
        desc=f"{args.model} {data.info.name}",
    )
    print(f"test accuracy {100 * result.test_accuracy:.2f}% (test loss {result.test_loss:.4f}) "
          f"after {result.step} steps, {result.seconds:.1f} s of training")
    print(f"outputs: {out}/ (checkpoint.pt, metrics.jsonl, result.json)")
    return 0
