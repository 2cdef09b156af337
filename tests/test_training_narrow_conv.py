"""Narrow conv nets on CPU must train without the channels_last memory corruption of torch's oneDNN path."""
import subprocess
import sys

import torch

from elth.models import build_model
from elth.training.device import use_channels_last

SCRIPT = """
import torch
torch.set_num_threads(1)
from elth.data.base import synthetic
from elth.models import build_model
from elth.training import Protocol, train
data = synthetic((1, 28, 28), 10, num_train=256, num_test=64)
model = build_model("cifar_resnet_14_4", (1, 28, 28), 10)
train(model, data, Protocol(length="12it", batch_size=64, milestones=()), device="cpu", progress=False, eval_every=None)
print("trained")
"""


def test_narrow_conv_net_trains_in_a_single_thread():
    # In a subprocess: the failure mode is a crash of the whole interpreter.
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "trained" in out.stdout


def test_channels_last_only_where_safe():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_channels_last(build_model("cifar_resnet_20"), cpu)
    assert not use_channels_last(build_model("cifar_resnet_14_4"), cpu)
    assert use_channels_last(build_model("cifar_resnet_14_4"), cuda)
    assert not use_channels_last(build_model("mlp_2", (1, 28, 28)), cpu)
