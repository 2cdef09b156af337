"""Where and how a model runs: the default device, memory format, autocast and moving inputs."""
from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16")

#: On CPU, channels_last convolutions with fewer than 8 output channels corrupt memory in
#: torch 2.13's oneDNN path (seen on x86-64: heap corruption in training of width-2..7 ResNets),
#: so such narrow conv nets keep the default memory format there.
MIN_CPU_CHANNELS_LAST = 8


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_conv_model(model: nn.Module) -> bool:
    flag = getattr(model, "is_conv", None)
    if flag is not None:
        return bool(flag)
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def use_channels_last(model: nn.Module, device: torch.device) -> bool:
    """channels_last for conv nets, except narrow ones on CPU (see MIN_CPU_CHANNELS_LAST)."""
    if not is_conv_model(model):
        return False
    if device.type != "cpu":
        return True
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return all(m.out_channels >= MIN_CPU_CHANNELS_LAST for m in convs)


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def prepare_input(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
