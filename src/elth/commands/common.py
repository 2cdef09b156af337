"""Command-line pieces shared by the `elth` subcommands: model, data, seed, device and protocol options.

Each helper defines one option group once, so every command spells and documents it alike.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import torch

from elth.errors import ElthError
from elth.limits import MAX_SEED, BadNumberError, check_seed
from elth.training import default_device, distributed
from elth.training.protocol import PRESETS, Protocol, ProtocolError, preset, preset_stand_in, split_steps


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --dataset and --data-dir (shared by commands that build a network from scratch)."""
    parser.add_argument("--model", required=True,
                        help="model name: cifar_resnet_<D>[_<W>], imagenet_resnet_<D>, cifar_vgg_<D>[_<W>][_fc<K>], mlp_<n>[_<W>], "
                        "vit_<D>[_<W>] or <kind>_<D>[_<W>] of a family registered through ELTH_PLUGINS")
    parser.add_argument("--dataset", required=True,
                        help="cifar10, svhn, mnist, fashion_mnist, imagenet, digits (built in) or synthetic; "
                        "NAME@SIZE resizes its images")
    add_data_dir_argument(parser)


DATA_DIR_HELP = "where the dataset's files are (default: $ELTH_DATA, then the usual places)"


def add_data_dir_argument(parser: argparse.ArgumentParser, help: str = DATA_DIR_HELP, *, must_exist: bool = True) -> None:
    """--data-dir; a folder that does not exist is a mistake where the data is read in this process
    (`must_exist`), not where it is read elsewhere (on a cluster's nodes)."""
    parser.add_argument("--data-dir", metavar="DIR", type=existing_dir if must_exist else None, help=help)


def existing_dir(text: str) -> str:
    if not os.path.isdir(text):
        what = "is not a folder" if os.path.exists(text) else "does not exist"
        raise argparse.ArgumentTypeError(f"{text} {what}")
    return text


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    """--seed (the model's initialisation) and --data-seed (shared by commands that train from scratch)."""
    parser.add_argument("--seed", type=seed_arg, default=0, help="seed of the model's initialisation (default: 0)")
    parser.add_argument("--data-seed", type=seed_arg, metavar="SEED",
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
    """--nproc and --sync-bn (shared by commands that train; see the README's "Several GPUs")."""
    g = parser.add_argument_group("several devices (one training over ranks started by torchrun)")
    g.add_argument("--nproc", type=positive_int, metavar="N",
                   help="start this command as N ranks on this node through torchrun's launcher (one per GPU, "
                   "or gloo ranks on CPUs), as `torchrun --standalone --nproc_per_node=N -m elth ...` does; "
                   "the protocol's batch is the global batch, split over the ranks")
    g.add_argument("--sync-bn", action="store_true",
                   help="BatchNorm statistics over the global batch (SyncBatchNorm) instead of per rank; the "
                   "paper presets use per-rank BN, the usual multi-GPU ImageNet recipe (one process: no change)")
    parser.set_defaults(_launch=run_on_ranks)


def run_on_ranks(args: argparse.Namespace, argv: list[str]) -> int:
    """How `elth` runs a command that trains: `--nproc N` starts N ranks of the same command line
    through torchrun's launcher API; a rank that torchrun started joins the process group first (its
    device becomes `cuda:LOCAL_RANK` for CUDA, and only rank 0 prints); otherwise the command runs."""
    if args.nproc is not None and not distributed.launched_by_torchrun():
        return distributed.launch(args.nproc, distributed.strip_nproc(argv))
    if distributed.launched_by_torchrun():
        device = distributed.init(getattr(args, "device", None), sync_batchnorm=args.sync_bn)
        if hasattr(args, "device"):
            args.device = str(device)
        if not distributed.is_main():
            sys.stdout = open(os.devnull, "w")
    return int(args._run(args) or 0)


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
    """The preset for (dataset, model) (or `base`, when given) with the command-line overrides applied.

    A family without the preset asked for gets a stand-in, said in a `note:` line on stderr first."""
    if base is None:
        base = preset(args.preset, dataset, model)
        stand_in = preset_stand_in(args.preset, model)
        if stand_in is not None and args.length is None and args.epochs is None:
            print(f"note: {stand_in}", file=sys.stderr, flush=True)
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


def warn_about_schedule(protocol: Protocol, data) -> None:
    """A `warning:` line on stderr for each part of the LR schedule that never takes effect, and for a
    batch larger than the training set (every step is then one full batch)."""
    texts = protocol.schedule_warnings(data.iterations_per_epoch(protocol.batch_size))
    if protocol.batch_size > data.num_train:
        texts.insert(0, f"the batch size {protocol.batch_size:,} is larger than the {data.num_train:,} training examples "
                        f"of {data.info.name}: every step trains on all of them (one full batch per epoch)")
    for text in texts:
        print(f"warning: {text}", file=sys.stderr, flush=True)


def resolve_device(name: str | None):
    """`--device` as a torch device, with a clear error for unknown or unavailable ones."""

    try:
        device = torch.device(name) if name else default_device()
    except RuntimeError as e:
        raise ElthError(f"unknown device {name!r} ({e})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ElthError("--device cuda was asked for, but this torch build sees no CUDA device")
    return device


def sparsity_arg(text: str) -> float:
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a sparsity: {text!r} (write 0.8926 or 89.26%)") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"sparsity must be at least 0 and below 1 (100%), got {text!r}")
    return value


def index_list(what: str, example: str):
    """An argparse type: comma-separated integers >= 0, as a tuple; `what` names them in errors."""
    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} like {example}, got {text!r}") from None
        if any(v < 0 for v in values):
            raise argparse.ArgumentTypeError(f"{what} are non-negative, got {text!r}")
        return values
    return parse


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


class _OldRootSpelling(argparse.Action):
    """`--out DIR` where a command used to take the run store that way: still works, with a note."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"elth: {option_string} DIR for the run store is deprecated; write --root DIR "
              "(--out names a results folder)", file=sys.stderr)
        setattr(namespace, "root", values)


def add_root_argument(parser: argparse.ArgumentParser, help: str, *, out_meant_root: bool = False) -> None:
    """--root DIR, the store of runs (default ./runs). `out_meant_root`: the command's --out used to
    name the store; it still does (hidden from --help), with a deprecation note."""
    parser.add_argument("--root", default="runs", metavar="DIR", help=help)
    if out_meant_root:
        parser.add_argument("--out", action=_OldRootSpelling, metavar="DIR", default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def seed_arg(text: str) -> int:
    """A seed on the command line: an integer from 0 to `MAX_SEED`."""
    try:
        return check_seed(int(text))
    except (ValueError, BadNumberError):
        raise argparse.ArgumentTypeError(f"seeds are integers from 0 to {MAX_SEED}, got {text!r}") from None


#: Longest file name most file systems take (bytes); atomic writes add a prefix and a suffix to it.
NAME_MAX = 255
ATOMIC_NAME_EXTRA = len(".") + len(".12345678.tmp")


def check_output_dir(path: str | os.PathLike, flag: str) -> Path:
    """`path` if a directory can be made or written there, else an error naming `flag` (nothing is created)."""
    p = Path(path)
    _check_names(p, flag, extra=0)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{flag} {p}: is a file, not a directory")
    _check_ancestor(p, p, flag)
    return p


def check_output_file(path: str | os.PathLike, flag: str) -> Path:
    """`path` if a file can be written there (atomically), else an error naming `flag` (nothing is created)."""
    p = Path(path)
    _check_names(p, flag, extra=ATOMIC_NAME_EXTRA)
    if p.is_dir():
        raise OutputPathError(f"{flag} {p}: is a directory; give a file name (e.g. {p / 'ticket.safetensors'})")
    _check_ancestor(p, p.parent, flag)
    return p


class OutputPathError(ElthError):
    """An output path that cannot be written."""


def _check_names(p: Path, flag: str, extra: int) -> None:
    for i, part in enumerate(p.parts):
        limit = NAME_MAX - (extra if i == len(p.parts) - 1 else 0)
        if len(os.fsencode(part)) > limit:
            raise OutputPathError(f"{flag} {_short(p)}: the name {_short(part)} is longer than {limit} bytes")


def _check_ancestor(p: Path, start: Path, flag: str) -> None:
    """The nearest existing directory at or above `start` must be a directory elth may write in."""
    ancestor = start
    while not ancestor.exists() and not ancestor.is_symlink() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputPathError(f"{flag} {p}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputPathError(f"{flag} {p}: no permission to write in {ancestor}")
    # Permissions do not tell everything (root, read-only or virtual file systems such as /proc):
    # make and remove a file there (the directory keeps its times), so that a place nothing can be
    # written in fails before any work.
    before = ancestor.stat()
    try:
        fd, probe = tempfile.mkstemp(prefix=".elth-write-check-", dir=ancestor)
    except OSError as e:
        raise OutputPathError(f"{flag} {p}: cannot write in {ancestor} ({e.strerror.lower()})") from None
    os.close(fd)
    os.unlink(probe)
    with contextlib.suppress(OSError):
        os.utime(ancestor, ns=(before.st_atime_ns, before.st_mtime_ns))


def _short(text: object, keep: int = 40) -> str:
    s = str(text)
    return s if len(s) <= keep else f"{s[:keep]}... ({len(s)} characters)"


def eval_every_of(text: str) -> str | None:
    """--eval-every: a positive step count such as 1ep or 500it, or None for 'none' (only at the end)."""
    if text.strip().lower() == "none":
        return None
    if split_steps(text) == (0, 0):
        raise ProtocolError(f"--eval-every must be a positive number of steps such as 1ep or 500it, or 'none' "
                            f"(only at the end), got {text!r}")
    return text
