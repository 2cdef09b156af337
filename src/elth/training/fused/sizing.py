"""How many members a fused group should have by default: from the device's free memory and the
model's size on CUDA; on CPUs from the model's width and fused layout (see `CPU_GROUP_SIZE`)."""
from __future__ import annotations

import copy

import torch
from torch import nn

from elth.training.fused.network import grouped_layout_holds

#: Members trained at once on CPUs, for MLPs and narrow conv nets. A CPU is busy with one network
#: already, so fusion gains little there (benchmarks/fused_throughput.py: 1.0-1.1x for mlp_2 and
#: cifar_resnet_20_8 at K <= 4), and larger fused networks are slower: their activations (K times
#: a member's) outgrow the caches, so the element-wise layers (ReLU, residual adds, BatchNorm) run
#: from memory (profiled at K = 16, cifar_resnet_20_8: ReLU and adds 6x, BatchNorm 3x the time of
#: 16 separate runs, 0.76x in all), and oneDNN's grouped convolutions are about 2x slower than
#: separate ones once groups have 16 channels or more (cifar_resnet_20: 0.97x at K = 2, 0.5x at 16).
CPU_GROUP_SIZE = 4
#: On CPUs, conv nets with a convolution wider than this train one run at a time by default.
CPU_MAX_CONV_CHANNELS = 32
#: At most this many members per group on accelerators (HFTA's gains flatten out around here).
MAX_GROUP_SIZE = 16
#: Share of the free device memory a group may plan for (the rest: allocator slack, evaluation).
MEMORY_SHARE = 0.5
#: Bytes per parameter element while training: weight, gradient, momentum, mask (fp32).
PARAMETER_BYTES = 4 * 4


def activation_elements(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int:
    """Elements of every leaf module's output for one batch (what backward keeps), counted on the
    meta device (no memory, no compute)."""
    meta = _meta_copy(model)
    total = 0

    def count(_module, _inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel()

    hooks = [m.register_forward_hook(count) for m in meta.modules() if not list(m.children())]
    try:
        meta(torch.empty(batch_size, *input_shape, device="meta"))
    finally:
        for h in hooks:
            h.remove()
    return total


def _meta_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to("meta")


def member_bytes(model: nn.Module, input_shape: tuple[int, ...], batch_size: int) -> int:
    """Device memory one member needs while training (fp32; activations kept for backward and
    their gradients)."""
    params = sum(p.numel() for p in model.parameters())
    return PARAMETER_BYTES * params + 2 * 4 * activation_elements(model, input_shape, batch_size)


def cpu_members_at_once(model: nn.Module) -> int:
    """How many members of `model` a CPU trains at once in one fused network (see CPU_GROUP_SIZE;
    1 for models only the stacked layout holds: on a CPU their batched matmuls are slower than
    the lone runs' (benchmarks/fused_throughput.py: vit_2 0.80x at K = 4))."""
    if not grouped_layout_holds(model):
        return 1
    widest = max((m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)), default=0)
    return CPU_GROUP_SIZE if widest <= CPU_MAX_CONV_CHANNELS else 1


def default_group_size(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device | str) -> int:
    device = torch.device(device)
    if device.type != "cuda":
        return cpu_members_at_once(model)
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_GROUP_SIZE, int(MEMORY_SHARE * free) // member_bytes(model, input_shape, batch_size)))
