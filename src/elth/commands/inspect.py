"""`elth inspect TICKET [--json]`: what a ticket is, where it came from, and how sparse each layer is."""
from __future__ import annotations

import argparse
import json

from elth.tickets import Ticket, load_ticket

DESCRIPTION = """\
Show a ticket file: its model and dataset, its rewind point and training protocol, how it was
made (provenance), its overall sparsity over all prunable weights, and a per-layer table of
weights (numel), weights kept and sparsity. The file is fully validated first.

With --json, print the same as one JSON object with keys model, dataset, rewind, rewind_step,
protocol, provenance, sparsity, kept, prunable, layers (name -> {numel, kept, sparsity}),
has_dense (whether the file keeps the dense rewind weights, which random-replica transformations
need), warnings and content_hash (a hash of what determines how the ticket trains).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ticket", metavar="TICKET", help="a ticket file (.safetensors)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def run(args: argparse.Namespace) -> int:
    ticket = load_ticket(args.ticket)
    summary = ticket.summary()
    if args.json:
        print(json.dumps({"path": str(args.ticket), **summary}, indent=2))
    else:
        print(render(ticket, str(args.ticket)))
    return 0


def describe_provenance(provenance: dict) -> str:
    """One line: the provenance's own description if it has one, else its fields."""
    if not provenance:
        return "unknown"
    if "description" in provenance:
        return str(provenance["description"])
    return ", ".join(f"{k}={v}" for k, v in provenance.items())


def describe_protocol(protocol: dict) -> str:
    if not protocol:
        return "none recorded"
    return ", ".join(f"{k} {_short(v)}" for k, v in protocol.items())


def _short(v) -> str:
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(str(x) for x in v) + "]"
    return str(v)


DENSE_YES = "yes: the rewind weights before masking are kept"
DENSE_NO = "no: only the masked rewind weights"


def render(ticket: Ticket, path: str) -> str:
    s = ticket.summary()
    d = ticket.dataset
    shape = "x".join(str(v) for v in d.input_shape)
    lines = [
        f"ticket      {path}",
        f"model       {ticket.model}",
        f"dataset     {d.name} (input {shape}, {d.num_classes} classes)",
        f"rewind      {ticket.rewind} (step {ticket.rewind_step})",
        f"protocol    {describe_protocol(ticket.protocol)}",
        f"provenance  {describe_provenance(ticket.provenance)}",
        f"sparsity    {100 * s['sparsity']:.2f}% ({s['kept']:,} of {s['prunable']:,} prunable weights kept)",
        f"dense       {DENSE_YES if s['has_dense'] else DENSE_NO}",
    ]
    for w in ticket.warnings:
        lines.append(f"warning     {w}")
    lines.append("")
    width = max([len("layer")] + [len(n) for n in s["layers"]])
    lines.append(f"{'layer':<{width}}  {'numel':>11}  {'kept':>11}  {'sparsity':>8}")
    for name, st in s["layers"].items():
        lines.append(f"{name:<{width}}  {st['numel']:>11,}  {st['kept']:>11,}  {100 * st['sparsity']:>7.2f}%")
    lines.append(f"{'total':<{width}}  {s['prunable']:>11,}  {s['kept']:>11,}  {100 * s['sparsity']:>7.2f}%")
    return "\n".join(lines)
