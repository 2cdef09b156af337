"""`elth train-ticket TICKET`: train a ticket from its rewind point with its mask fixed; test accuracy."""
from __future__ import annotations

import argparse
from pathlib import Path

from elth.commands.common import (
    add_data_dir_argument,
    add_device_arguments,
    add_protocol_arguments,
    add_root_argument,
    check_output_dir,
    protocol_from_args,
    resolve_device,
    seed_arg,
    warn_about_schedule,
)
from elth.data import canonical_name, dataset_info, load_dataset
from elth.tickets import check_dataset, load_ticket
from elth.training import Protocol, preset
from elth.workflows.ticket_training import ticket_run_dir, train_ticket

DESCRIPTION = """\
Evaluate a ticket the way every ticket is evaluated, however it was made (IMP, an elastic
transformation, a pruning method): load its rewind weights and mask, train from its rewind step to
the end of the protocol with the pruned weights held at zero, and report the test accuracy.

The protocol is the one recorded in the ticket unless --preset is given (then the preset for the
dataset and model); --epochs/--length, --lr, --batch-size, --milestones and --warmup override
parts of either. The dataset defaults to the ticket's; another one must have the same input shape
and number of classes.

Outputs go to ROOT/train-<hash of the ticket's content, dataset, protocol and data seed>/, so
training the same ticket again costs nothing and an interrupted training resumes.

examples:
  elth train-ticket runs/imp-*/level_5/ticket.safetensors
  elth train-ticket r56.safetensors --preset short --seed 1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ticket", metavar="TICKET", help="a ticket file (.safetensors)")
    parser.add_argument("--dataset", help="dataset to train on (default: the ticket's)")
    add_data_dir_argument(parser)
    add_protocol_arguments(parser)
    parser.set_defaults(preset=None)
    parser.add_argument("--seed", type=seed_arg, metavar="SEED",
                        help="seed of the data order and augmentation (default: the one that made the "
                        "ticket, if recorded, else 0); the weights come from the ticket")
    add_device_arguments(parser)
    add_root_argument(parser, "store of runs: the run goes to ROOT/train-<hash>/ (default: ./runs)",
                      out_meant_root=True)
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    for action in parser._actions:
        if action.dest == "preset":
            action.help = "protocol preset for the dataset and model family (default: the ticket's protocol)"


def ticket_protocol(args: argparse.Namespace, ticket, dataset_key: str):
    """(protocol, where its base came from): --preset, else the ticket's, else paper; overrides applied."""
    if args.preset is not None:
        base = preset(args.preset, dataset_key, ticket.model)
        source = f"preset {args.preset}"
    elif ticket.protocol:
        base = Protocol.from_dict(ticket.protocol)
        source = "the ticket's protocol"
    else:
        base = preset("paper", dataset_key, ticket.model)
        source = "preset paper (the ticket records no protocol)"
    return protocol_from_args(args, dataset_key, ticket.model, base=base), source


def run(args: argparse.Namespace) -> int:
    ticket = load_ticket(args.ticket)
    dataset_key = canonical_name(args.dataset or ticket.dataset.name)
    protocol, source = ticket_protocol(args, ticket, dataset_key)
    recorded = ticket.provenance.get("data_seed")  # validated by load_ticket
    data_seed = args.seed if args.seed is not None else (recorded if recorded is not None else 0)
    check_output_dir(args.root, "--root")
    device = resolve_device(args.device)

    check_dataset(ticket, dataset_info(dataset_key, args.data_dir))  # before loading any images
    data = load_dataset(dataset_key, args.data_dir, device=device)
    check_dataset(ticket, data.info)
    ipe = data.iterations_per_epoch(protocol.batch_size)
    print(
        f"training a {100 * ticket.sparsity:.2f}% sparse {ticket.model} ticket on {data.info.name} from step "
        f"{ticket.rewind_step} to {protocol.total_steps(ipe)} ({protocol.length}, {source}), data seed "
        f"{data_seed}, {args.precision} on {device}",
        flush=True,
    )
    warn_about_schedule(protocol, data)
    result = train_ticket(
        ticket, data, protocol, data_seed=data_seed, root=Path(args.root), device=device,
        progress=not args.no_progress, precision=args.precision,
    )
    print(f"test accuracy {100 * result.test_accuracy:.2f}% (test loss {result.test_loss:.4f}) "
          f"after step {result.step}, {result.seconds:.1f} s of training")
    print(f"outputs: {ticket_run_dir(ticket, data, protocol, data_seed, Path(args.root), args.precision)}/")
    return 0
