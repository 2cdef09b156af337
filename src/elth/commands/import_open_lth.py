"""`elth import-open-lth RUN --out DIR`: the levels of an open_lth lottery run as elth tickets."""
from __future__ import annotations

import argparse
from pathlib import Path

from elth.commands.common import check_output_dir, index_list
from elth.open_lth import import_branches, import_run
from elth.tickets import save_ticket

DESCRIPTION = """\
Read a lottery run written by open_lth (`open_lth.py lottery ...`: a folder lottery_<hash> with
replicate_<n>/level_<k>/main/ inside) and write each level as an elth ticket,
DIR/replicate_<n>/level_<k>.safetensors: the level's rewind weights and mask under elth's
parameter names, level 0's dense rewind weights, open_lth's training hyperparameters as the
ticket's protocol, and the run, replicate, level and open_lth's final test accuracy as its
provenance. RUN may also be one replicate_<n> or one level_<k> folder. Runs of the paper's own
code (ElasticLTH, an open_lth fork) may hold ETTs it trained as branches of a level,
level_<k>/lottery_branch_change_depth_<hash>/: each is written as
DIR/replicate_<n>/level_<k>_change_depth_<hash>.safetensors, a ticket of its target model (read
from its tensors), the same ticket `elth transform --block-mapping` makes from level k.

Models: open_lth's mnist_lenet_300_100 (mnist_lenet_300_300_100, ...) becomes mlp_1 (mlp_2, ...);
cifar_resnet_<D>[_<W>], cifar_vgg_<D> and imagenet_resnet_18/34 keep their names. The tickets then
work with every elth command: stretch one to a deeper network with `elth transform`, train it
with `elth train-ticket`.

open_lth names datasets mnist, cifar10 and imagenet; --dataset names the elth dataset the run
really trained on where that name would mislead (e.g. fashion_mnist for a run that read
Fashion-MNIST's files in MNIST's place).

Examples:
  elth import-open-lth open_lth_data/lottery_35990e76d61e6cfd6a10ed7f40272f5c --out tickets/r20
  elth transform tickets/r20/replicate_1/level_8.safetensors --to cifar_resnet_32 -o r32.safetensors
  elth import-open-lth open_lth_data/lottery_867ed9aa... --dataset fashion_mnist --levels 2,4 --out tickets/mlp1
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="an open_lth lottery run folder (lottery_<hash>)")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the ticket files")
    parser.add_argument("--dataset", metavar="NAME",
                        help="the elth dataset the run trained on (default: open_lth's dataset name)")
    parser.add_argument("--levels", type=index_list("levels", "0,2,4"), metavar="K,K",
                        help="only these levels (default: all)")
    parser.add_argument("--replicates", type=index_list("replicates", "1,2"),
                        metavar="N,N", help="only these replicates (default: all)")


def run(args: argparse.Namespace) -> int:
    out = check_output_dir(args.out, "--out")
    imported = import_run(args.run, dataset=args.dataset, levels=args.levels, replicates=args.replicates)
    # Everything is read (and checked) before anything is written.
    branches = import_branches(args.run, dataset=args.dataset, levels=args.levels, replicates=args.replicates)
    first = imported[0][1]
    print(f"{Path(args.run)}: open_lth {first.provenance['open_lth_model']} on "
          f"{first.provenance['open_lth_dataset']} -> elth {first.model} on {first.dataset.name}, "
          f"rewind to {first.rewind}")
    print(f"{'replicate':>9}  {'level':>5}  {'sparsity':>8}  {'open_lth test acc':>17}  ticket")
    for level, ticket in imported:
        path = save_ticket(ticket, out / f"replicate_{level.replicate}" / f"level_{level.level}.safetensors")
        acc = ticket.provenance["test_accuracy"]
        acc_text = f"{100 * acc:.2f}%" if acc is not None else "n/a"
        print(f"{level.replicate:>9}  {level.level:>5}  {100 * ticket.sparsity:>7.2f}%  {acc_text:>17}  {path}")
    for level, branch, ticket in branches:
        path = save_ticket(ticket, out / f"replicate_{level.replicate}" / f"level_{level.level}_change_depth_{branch}.safetensors")
        acc = ticket.provenance["test_accuracy"]
        acc_text = f"{100 * acc:.2f}%" if acc is not None else "n/a"
        print(f"{level.replicate:>9}  {level.level:>5}  {100 * ticket.sparsity:>7.2f}%  {acc_text:>17}  {path} "
              f"(change_depth branch: {ticket.model})")
    for warning in first.warnings:
        print(f"warning: {warning}")
    return 0
