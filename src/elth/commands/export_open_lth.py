"""`elth export-open-lth TICKET... --out DIR`: tickets as an open_lth lottery run."""
from __future__ import annotations

import argparse

from elth.commands.common import check_output_dir, positive_int
from elth.errors import ElthError
from elth.limits import is_int
from elth.open_lth.writing import export_tickets
from elth.tickets import load_ticket

DESCRIPTION = """\
Write tickets, the levels of one IMP run (`elth imp`, or runs imported from open_lth), as an
open_lth lottery run: DIR/lottery_<hash>/replicate_<n>/, the folder open_lth computes from the
hyperparameters the tickets record, with hparams.log, the dense rewind weights under open_lth's
parameter names where open_lth keeps them (level_pretrain/main/ and level_0/main/, as
model_ep<E>_it<I>.pth at the rewind step) and each ticket's mask as level_<k>/main/mask.pth. The
command printed last (open_lth's `lottery`, every hyperparameter given) finds these files and
trains each exported level from them; a level without a ticket open_lth prunes itself, as in any
lottery run.

Models open_lth has: mlp_<n> (its mnist_lenet_300[_300...]_100), cifar_resnet_<D>[_<W>],
cifar_vgg_<D> (one fully connected layer), imagenet_resnet_18/34; datasets cifar10, mnist and
imagenet (fashion_mnist goes as mnist: give open_lth Fashion-MNIST's files in MNIST's place).
Other tickets are one error saying so.

A ticket's level is the IMP level its provenance records; --level K gives it for one ticket that
records none (a transformed ticket, a baseline).

Examples:
  elth export-open-lth runs/imp-*/level_*/ticket.safetensors --out open_lth_data
  elth export-open-lth r56.safetensors --level 6 --out open_lth_data
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tickets", nargs="+", metavar="TICKET", help="ticket files, the levels of one run")
    parser.add_argument("--out", required=True, metavar="DIR", help="open_lth's data folder (the run goes inside)")
    parser.add_argument("--replicate", type=positive_int, default=1, metavar="N", help="replicate number (default 1)")
    parser.add_argument("--level", type=int, default=None, metavar="K",
                        help="the level of a single ticket whose provenance records none")


def run(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out, "--out")
    if args.level is not None and (len(args.tickets) != 1 or args.level < 0):
        raise ElthError("--level K (K >= 0) gives the level of one ticket; with several, each records its own")
    pairs = []
    for path in args.tickets:
        ticket = load_ticket(path)
        level = args.level if args.level is not None else ticket.provenance.get("level")
        if not is_int(level) or level < 0:
            raise ElthError(f"{path}: the ticket records no IMP level (it is not a level of an IMP run); give --level K")
        pairs.append((level, ticket))
    export = export_tickets(pairs, out, args.replicate)
    print(f"{export.run}/replicate_{args.replicate}: levels {', '.join(map(str, export.levels))} of "
          f"{pairs[0][1].model} on {pairs[0][1].dataset.name}")
    print(f"open_lth trains them with this command, run from its code's folder with {out} as its data root "
          "(on its local platform, ~/open_lth_data):")
    print(f"  {export.command}")
    for warning in export.warnings:
        print(f"warning: {warning}")
    return 0
