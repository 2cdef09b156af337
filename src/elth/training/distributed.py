"""Data-parallel training over ranks started by torchrun (one process per device, DDP).

A process started by `torchrun` (or by `--nproc N`, which starts the same command through
torchrun's launcher API) joins the process group from torchrun's environment variables
(`RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, ...): NCCL when it trains on CUDA (device
`cuda:LOCAL_RANK`), gloo on CPUs. Without those variables nothing here does anything and every
helper is the identity, so the single-process code path is unchanged.

The rules every rank follows, so that N ranks train the same network as one process does:
- The global batch is the protocol's batch; each rank loads a contiguous share of it
  (`Dataset.train_epoch(..., part=(rank, ranks))`, augmented as in the whole batch), and the loss is scaled so that DDP's gradient average is the gradient of the
  mean loss over the global batch, however unevenly the last batch of an epoch splits.
- Every rank runs the same control flow. Files are written by rank 0 only, between two barriers
  (`elth.files.rank_zero_writes`, inside every atomic write), so what one rank finds on disk the
  others find too (several nodes need a shared file system for the output directories).
- Masks and anything chosen from weights or gradients must be identical on every rank:
  `check_identical` compares fingerprints over ranks and raises `RankDivergenceError`.

Process-wide settings (`sync_bn`) live here next to the process group, so that code deep inside a
workflow (a ticket trained inside IMP inside an experiment) trains the way the command was told.
"""
from __future__ import annotations

import atexit
import os
import sys
import uuid
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

from elth.data.base import Part, part_slice
from elth.errors import ElthError
from elth.files import rank_alone, tensors_hash
from elth.training.sync_batchnorm import GlobalBatchNorm

#: torchrun's variables that say a process is one rank of a group.
RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class DistributedError(ElthError):
    """A distributed run that cannot start or whose ranks disagree."""


class RankDivergenceError(DistributedError):
    """Ranks that should hold identical tensors (masks, weights) hold different ones."""


@dataclass
class _Settings:
    sync_bn: bool = False


_SETTINGS = _Settings()


# -- process group ----------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    """True in a process that torchrun started as one rank of a group."""
    return all(v in os.environ for v in RANK_VARIABLES)


def in_group() -> bool:
    """True when this process is one of several ranks (a process group of size > 1)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_active() -> bool:
    """True when this process trains with its other ranks now: one of several ranks, and not
    working alone for the moment (`files.alone`, rank 0 scheduling an experiment)."""
    return in_group() and not rank_alone()


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_active() else 1


# -- handing work to the other ranks ------------------------------------------------------------
def hand_out(work) -> None:
    """Rank 0: send `work` (picklable; None: no more) to every other rank (a collective)."""
    dist.broadcast_object_list([work], src=0)


def receive_work():
    """Any other rank: what rank 0 hands out next (waits for it)."""
    box = [None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def is_main() -> bool:
    return rank() == 0


def sync_bn() -> bool:
    """Whether BatchNorm statistics are computed over the global batch (set by `init`)."""
    return _SETTINGS.sync_bn


def rank_device(requested: str | torch.device | None = None) -> torch.device:
    """The device this rank trains on: `cuda:LOCAL_RANK` for CUDA, else `requested` (default cuda/cpu)."""
    if requested is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(requested)
        except RuntimeError as e:
            raise ElthError(f"unknown device {requested!r} ({e})") from None
    if device.type == "cuda" and launched_by_torchrun():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def init(requested_device: str | torch.device | None = None, *, sync_batchnorm: bool = False) -> torch.device:
    """Join torchrun's process group if this process is a rank; returns this rank's device.

    Called once per process by the command line before a command runs. Without torchrun's
    variables it only records the settings (one process: `sync_batchnorm` changes nothing).
    """
    device = rank_device(requested_device)
    _SETTINGS.sync_bn = bool(sync_batchnorm)
    if not launched_by_torchrun() or dist.is_initialized():
        return device
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DistributedError("a CUDA device was asked for, but this torch build sees none")
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
    try:
        dist.init_process_group(backend=backend)
    except (RuntimeError, ValueError) as e:
        raise DistributedError(f"could not join the process group ({backend}): {e}") from None
    atexit.register(_shutdown)
    return device


def _shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# -- the global batch -------------------------------------------------------------------------
def data_part() -> Part | None:
    """(rank, ranks) when several ranks train, else None: which share of each batch a rank loads."""
    return (rank(), world_size()) if is_active() else None


def data_part_kwargs() -> dict:
    """`part=` for `Dataset.train_epoch` / `test_batches` with several ranks (nothing on one process)."""
    part = data_part()
    return {} if part is None else {"part": part}


def local_slice(n: int) -> slice:
    """This rank's contiguous share of `n` examples (`elth.data.base.part_slice`)."""
    return part_slice(n, data_part())


def local_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's slice of a global batch (the whole batch on one process)."""
    if not is_active():
        return x, y
    s = local_slice(y.shape[0])
    return x[s], y[s]


def loss_scale(local: int, global_: int) -> float:
    """Factor turning the mean loss over `local` examples into this rank's share of the global mean.

    DDP averages gradients over ranks, so each rank's loss must be mean_local * local * W / global
    for the average to be the gradient of the mean over the global batch (1.0 when it splits evenly).
    """
    return local * world_size() / global_


def is_mine(index: int) -> bool:
    """Round-robin share of numbered work items (test batches, scoring batches)."""
    return index % world_size() == rank()


# -- collectives --------------------------------------------------------------------------------
def all_reduce_sum_(tensors: Iterable[torch.Tensor]) -> None:
    """Sum each tensor over ranks, in place (nothing on one process)."""
    if not is_active():
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def all_reduce_numbers(values: Sequence[float], device: torch.device) -> list[float]:
    """Sums over ranks of a few Python numbers (float64 on the training device)."""
    if not is_active():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite each tensor with rank `src`'s values, in place."""
    if not is_active():
        return
    for t in tensors:
        if t.dtype == torch.bool:
            # gloo has no bool broadcast: go through uint8.
            u = t.to(torch.uint8)
            dist.broadcast(u, src=src)
            t.copy_(u.bool())
        else:
            dist.broadcast(t, src=src)


def broadcast_module_buffers(module: nn.Module, src: int = 0) -> None:
    """Every rank takes rank `src`'s buffers (BatchNorm running statistics trained per rank)."""
    broadcast_([b.data for b in module.buffers()], src)


def check_identical(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise RankDivergenceError unless every rank holds exactly the same `tensors` (a collective).

    Compares a SHA-256 of each rank's tensors (one small all-gather); nothing on one process.
    """
    if not is_active():
        return
    mine = tensors_hash(tensors, "checkpoint")
    everyone: list[str | None] = [None] * world_size()
    dist.all_gather_object(everyone, mine)
    if len(set(everyone)) != 1:
        raise RankDivergenceError(
            f"{what} differ between ranks (fingerprints by rank: {', '.join(map(str, everyone))})"
        )


# -- the model ----------------------------------------------------------------------------------
def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` wrapped in DDP in a process of a torchrun group (else `model` itself).

    Rank 0's parameters and buffers are broadcast at construction, so every rank starts from the
    same weights; BatchNorm layers become global-batch ones first when `sync_bn()` is set. A group
    of one rank is wrapped too (what DDP costs on one device; the arithmetic is the same).
    """
    if not (dist.is_available() and dist.is_initialized()) or rank_alone():
        return model
    if sync_bn():
        convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Replace (in place) every BatchNorm by one normalising with the statistics of the global batch.

    CUDA: torch's SyncBatchNorm. CPU: `GlobalBatchNorm` (torch's works on accelerators only).
    The state-dict keys stay the same, so checkpoints and tickets do not change.
    """
    on_cuda = any(p.is_cuda for p in model.parameters())
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if not isinstance(child, nn.modules.batchnorm._BatchNorm):
                continue
            if isinstance(child, (nn.SyncBatchNorm, GlobalBatchNorm)):
                continue
            new = nn.SyncBatchNorm.convert_sync_batchnorm(child) if on_cuda else GlobalBatchNorm.from_batchnorm(child)
            setattr(parent, name, new)
    return model


# -- launching ----------------------------------------------------------------------------------
def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m elth ARGV` as `nproc` ranks on this node through torchrun's launcher API.

    Returns 0 when every rank succeeded; a failed rank's error is printed by torchrun.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise DistributedError(f"--nproc must be at least 1, got {nproc}")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=f"elth-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        monitor_interval=0.1,
    )
    try:
        elastic_launch(config, sys.executable)("-m", "elth", *argv)
    except ChildFailedError as e:
        failures = e.failures
        first = failures[min(failures)] if failures else None
        code = getattr(first, "exitcode", 1) if first is not None else 1
        return code if isinstance(code, int) and code > 0 else 1
    return 0


def strip_nproc(argv: list[str]) -> list[str]:
    """`argv` without `--nproc N` / `--nproc=N` (what every rank runs)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out
