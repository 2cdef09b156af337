"""Checks that need a CUDA GPU: training, fused training (fp32 and bf16), IMP and the fused group
size on the device. Skipped where there is none (CI has none); `benchmarks/gpu_checks.sh` runs
them on a GPU machine together with the GPU benchmarks. `ELTH_TEST_DEVICE=cpu` runs the same
checks on the CPU (to try the checks themselves without a GPU); RigL and DPF members fused there too.

On a GPU the fused network's kernels (batched matmuls, grouped convolutions, vmap's batched
attention for ViTs) are other kernels than a lone run's, so fused members are compared within
tolerances, not bit for bit: a few steps from the same start agree to 1e-3 relative (rounding,
amplified a little by SGD), and the masks are identical (pruned weights exactly zero).
"""
import copy
import os

import pytest
import torch

from elth.data import load_dataset
from elth.masks import count
from elth.models import build_model
from elth.sparsity.dst import DPF, RigL
from elth.training import Member, Protocol, train, train_group
from elth.training.fused import default_group_size
from elth.workflows.imp import IMPConfig, run_imp

DEVICE = os.environ.get("ELTH_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (benchmarks/gpu_checks.sh runs these on one)")
K = 4


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").to(DEVICE)


def members(name: str, data, k: int = K):
    models, masks = [], []
    for i in range(k):
        model = build_model(name, data.info.input_shape, data.info.num_classes, seed=i)
        g = torch.Generator().manual_seed(100 + i)
        masks.append({n: torch.rand(model.get_parameter(n).shape, generator=g) < 0.5 for n in model.prunable_names()})
        models.append(model)
    return models, masks


def relative_distance(a: torch.nn.Module, b: torch.nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].double() - sb[k].double()).norm() / sb[k].double().norm().clamp_min(1e-12))
               for k in sa if sa[k].is_floating_point())


def test_a_run_trains_on_the_device_and_learns(digits, tmp_path):
    model = build_model("mlp_2", digits.info.input_shape, digits.info.num_classes, seed=0)
    protocol = Protocol(length="300it", batch_size=64, lr=0.05, milestones=("200it",))
    result = train(model, digits, protocol, device=DEVICE, out_dir=tmp_path / "run", progress=False)
    assert next(model.parameters()).device.type == torch.device(DEVICE).type
    assert result.test_accuracy > 0.9  # digits: ~0.95 after 300 steps


@pytest.mark.parametrize("name, precision, tolerance", [
    ("mlp_2", "fp32", 1e-4),
    ("cifar_resnet_8_8", "fp32", 1e-3),
    ("cifar_resnet_8_8", "bf16", 5e-2),  # bf16 keeps 8 bits of mantissa: rounding is 2**-8 per op
    ("vit_2", "fp32", 1e-3),  # the stacked layout: vmap's batched kernels (attention among them)
    ("vit_2", "bf16", 5e-2),
])
def test_fused_members_match_lone_runs(digits, name, precision, tolerance):
    protocol = Protocol(length="10it", batch_size=32, lr=0.02, milestones=())
    models, masks = members(name, digits)
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    lone_results = [train(m, digits, protocol, data_seed=i, mask=masks[i], device=DEVICE, precision=precision,
                          progress=False) for i, m in enumerate(lone)]
    fused_results = train_group([Member(m, i, masks[i]) for i, m in enumerate(fused)], digits, protocol,
                                device=DEVICE, precision=precision, progress=False)
    for i in range(K):
        assert relative_distance(fused[i], lone[i]) < tolerance, i
        for n, m in masks[i].items():
            w = fused[i].get_parameter(n)
            assert bool((w[~m.to(w.device)] == 0).all()), (i, n)
        assert abs(fused_results[i].test_accuracy - lone_results[i].test_accuracy) <= 0.02


@pytest.mark.parametrize("method", ["dpf", "rigl"])
def test_fused_dst_members_match_lone_runs(digits, method):
    """RigL and DPF members fused on the device: their controllers' views of the fused tensors there."""
    protocol = Protocol(length="12it", batch_size=32, lr=0.02, milestones=())
    make = lambda s: DPF(s, 12, update_every=3) if method == "dpf" else RigL(s, 12, update_every=3, seed=1)
    sparsities = (0.5, 0.7, 0.8, 0.9)
    models = [build_model("cifar_resnet_8_8", digits.info.input_shape, digits.info.num_classes, seed=i)
              for i in range(K)]
    lone, fused = copy.deepcopy(models), copy.deepcopy(models)
    lone_c, fused_c = [make(s) for s in sparsities], [make(s) for s in sparsities]
    for i, m in enumerate(lone):
        train(m, digits, protocol, data_seed=i, controller=lone_c[i], device=DEVICE, progress=False)
    train_group([Member(m, i, controller=c) for i, (m, c) in enumerate(zip(fused, fused_c))], digits, protocol,
                device=DEVICE, progress=False)
    for i in range(K):
        assert relative_distance(fused[i], lone[i]) < 1e-3, i
        assert count(fused_c[i].mask()) == count(lone_c[i].mask())


def test_imp_prunes_on_the_device(digits, tmp_path):
    protocol = Protocol(length="60it", batch_size=64, lr=0.05, milestones=())
    config = IMPConfig("mlp_2", "digits", protocol, rewind="5it", seed=0)
    levels = run_imp(config, digits, 2, tmp_path, device=DEVICE, progress=False)
    assert [round(lv.sparsity, 4) for lv in levels] == [0.0, 0.2, 0.36]


def test_the_default_group_size_fits_the_device():
    model = build_model("cifar_resnet_20", (3, 32, 32), 10, seed=0)
    k = default_group_size(model, (3, 32, 32), 128, DEVICE)
    assert 1 <= k <= 16
