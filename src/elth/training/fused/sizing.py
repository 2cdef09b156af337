"""How many members a fused group should have by default: from the device's free memory and the
model's size on CUDA; on CPUs from the model's width (see `CPU_GROUP_SIZE`)."""
from __future__ import annotations

import copy

import torch
from torch import nn

#: Members per group on CPUs, for MLPs and narrow conv nets. A CPU is busy with one network
#: already, so fusion gains little there: benchmarks/fused_throughput.py measured 1.0-1.2x for
#: mlp_2 and cifar_resnet_20_8 at K <= 4, but slower groups of wider conv nets (cifar_resnet_20:
#: ~0.97x at K = 2 and 4, 0.66x at K = 8), because oneDNN's grouped convolution runs forward +
#: backward about 2x slower than K separate ones once groups have 16 channels or more.
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


def default_group_size(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, device: torch.device | str) -> int:
    device = torch.device(device)
    if device.type != "cuda":
        widest = max((m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)), default=0)
        return CPU_GROUP_SIZE if widest <= CPU_MAX_CONV_CHANNELS else 1
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, min(MAX_GROUP_SIZE, int(MEMORY_SHARE * free) // member_bytes(model, input_shape, batch_size)))
