"""Scores of magnitude, SNIP, GraSP and SynFlow against direct computations written here."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from elth.masks import full_mask, prune_lowest
from elth.models import build_model
from elth.sparsity.scores import (
    exponential_schedule,
    grasp_scores,
    magnitude_scores,
    snip_scores,
    synflow_mask,
    synflow_scores,
)


def _examples(n=12, shape=(1, 8, 8), classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n, *shape), generator=g), torch.randint(0, classes, (n,), generator=g)


def _trained_bn(model, x):
    """Give BN layers non-trivial running statistics (so eval mode differs from train mode)."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x * 2 + 1)
    model.eval()
    return model


def test_magnitude_is_absolute_weight_and_respects_mask():
    model = build_model("mlp_1", (1, 4, 4), 3, seed=0)
    names = ["hidden.0.weight", "bottleneck.weight"]
    mask = full_mask(model)
    mask["hidden.0.weight"][0, :5] = False
    s = magnitude_scores(model, names, mask)
    w = model.hidden[0].weight.detach()
    assert torch.equal(s["hidden.0.weight"][1:], w[1:].abs())
    assert torch.all(s["hidden.0.weight"][0, :5] == 0)
    assert torch.equal(s["bottleneck.weight"], model.bottleneck.weight.detach().abs())


def test_snip_matches_autograd_of_loss_summed_over_batches():
    x, y = _examples()
    model = _trained_bn(build_model("cifar_resnet_8_2", (1, 8, 8), 3, seed=1), x)
    names = model.prunable_names()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scores = snip_scores(model, names, (x, y), batch_size=5)  # batches of 5, 5, 2

    # Direct: total loss = sum of the per-batch mean cross-entropies, eval mode.
    model.eval()
    total = sum(F.cross_entropy(model(x[i : i + 5]), y[i : i + 5]) for i in range(0, 12, 5))
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(total, [params[n] for n in names])
    for n, g in zip(names, grads):
        torch.testing.assert_close(scores[n], (g * params[n]).abs().detach(), rtol=1e-5, atol=1e-8)
    # Scoring never changes the model (BN statistics included).
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_snip_train_mode_uses_batch_statistics_and_mask_zeroes_pruned():
    x, y = _examples()
    model = _trained_bn(build_model("cifar_resnet_8_2", (1, 8, 8), 3, seed=1), x)
    names = model.prunable_names()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eval_s = snip_scores(model, names, (x, y))
    train_s = snip_scores(model, names, (x, y), train_mode=True)
    assert not torch.allclose(eval_s["conv.weight"], train_s["conv.weight"])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    # Direct check of train mode on a fresh copy.
    import copy

    direct = copy.deepcopy(model).train()
    w = dict(direct.named_parameters())["conv.weight"]
    (g,) = torch.autograd.grad(F.cross_entropy(direct(x), y), [w])
    torch.testing.assert_close(train_s["conv.weight"], (g * w).abs().detach(), rtol=1e-5, atol=1e-8)

    mask = full_mask(model)
    mask["conv.weight"][0] = False
    masked = snip_scores(model, names, (x, y), mask=mask)
    assert torch.all(masked["conv.weight"][0] == 0)
    assert torch.all(masked["conv.weight"][1:] > 0)


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 5, bias=False)
        self.l2 = nn.Linear(5, 3, bias=False)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x)))


@pytest.mark.parametrize("temperature", [200.0, 1.0])
def test_grasp_matches_explicit_hessian_times_gradient(temperature):
    torch.manual_seed(0)
    net = TwoLayer().double()
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (10,))
    names = ["l1.weight", "l2.weight"]
    got = grasp_scores(net, names, (x, y), temperature=temperature, batch_size=4)

    s1, s2 = net.l1.weight.shape, net.l2.weight.shape
    n1 = s1.numel()

    def loss(theta):
        w1, w2 = theta[:n1].view(s1), theta[n1:].view(s2)
        total = 0.0
        for i in range(0, 10, 4):
            logits = torch.tanh(x[i : i + 4] @ w1.T) @ w2.T
            total = total + F.cross_entropy(logits / temperature, y[i : i + 4])
        return total

    theta = torch.cat([net.l1.weight.detach().flatten(), net.l2.weight.detach().flatten()])
    hessian = torch.autograd.functional.hessian(loss, theta)
    g = torch.autograd.functional.jacobian(loss, theta)
    grasp = -theta * (hessian @ g)  # the GraSP score; the highest ones are removed
    returned = torch.cat([got["l1.weight"].flatten(), got["l2.weight"].flatten()])
    torch.testing.assert_close(returned, -grasp, rtol=1e-7, atol=1e-14)
    assert grasp.abs().max() > 0

    # Pruning the lowest returned scores removes the highest signed GraSP scores.
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    pruned = prune_lowest(got, mask, 7, names)
    removed = ~torch.cat([pruned[n].flatten() for n in names])
    assert set(removed.nonzero().flatten().tolist()) == set(grasp.topk(7).indices.tolist())


def test_grasp_on_a_subset_still_uses_every_prunable_weight():
    torch.manual_seed(1)
    net = TwoLayer().double()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    both = grasp_scores(net, ["l1.weight", "l2.weight"], (x, y))
    only_first = grasp_scores(net, ["l1.weight"], (x, y))
    assert list(only_first) == ["l1.weight"]
    torch.testing.assert_close(only_first["l1.weight"], both["l1.weight"])


def _chain():
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 5, bias=False), nn.Linear(5, 4, bias=False), nn.Linear(4, 3, bias=False))


def _synflow_closed_form(weights):
    """R = 1^T |W3||W2||W1| 1: dR/dW_l[i, j] = (1^T |W3|..|W_{l+1}|)_i (|W_{l-1}|..|W1| 1)_j."""
    a = [w.abs() for w in weights]
    out = []
    for l in range(len(a)):
        right = torch.ones(a[0].shape[1], dtype=torch.float64)
        for w in a[:l]:
            right = w @ right
        left = torch.ones(a[-1].shape[0], dtype=torch.float64)
        for w in reversed(a[l + 1 :]):
            left = left @ w
        out.append(torch.outer(left, right) * a[l])
    return out


def test_synflow_matches_product_of_absolute_weights():
    net = _chain()
    names = ["0.weight", "1.weight", "2.weight"]
    signs = [net[i].weight.detach().sign().clone() for i in range(3)]
    got = synflow_scores(net, names, input_shape=(6,))
    expected = _synflow_closed_form([net[i].weight.detach().double() for i in range(3)])
    for n, e in zip(names, expected):
        assert got[n].dtype == torch.float64
        torch.testing.assert_close(got[n], e, rtol=1e-12, atol=0)
    # The caller's model keeps its signs and dtype.
    for i in range(3):
        assert torch.equal(net[i].weight.detach().sign(), signs[i])
        assert net[i].weight.dtype == torch.float32

    # With a mask: the closed form on the masked absolute weights.
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    mask["1.weight"][2, :] = False
    got = synflow_scores(net, names, mask=mask, input_shape=(6,))
    masked = [net[i].weight.detach().double() * mask[n] for i, n in enumerate(names)]
    for n, e in zip(names, _synflow_closed_form(masked)):
        torch.testing.assert_close(got[n], e, rtol=1e-12, atol=0)


def test_synflow_uses_absolute_bn_statistics_in_eval_mode():
    model = build_model("cifar_resnet_8_2", (1, 6, 6), 3, seed=3)
    x, _ = _examples(shape=(1, 6, 6))
    _trained_bn(model, x)
    with torch.no_grad():
        model.bn.running_mean.copy_(-torch.linspace(1, 2, model.bn.running_mean.numel()))
    names = model.prunable_names()
    got = synflow_scores(model, names)
    # Direct: an explicit absolute-valued float64 copy, eval mode, all-ones input.
    import copy

    ref = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for k, v in ref.state_dict().items():
            if v.is_floating_point():
                v.copy_(v.abs())
    params = dict(ref.named_parameters())
    r = ref(torch.ones(1, 1, 6, 6, dtype=torch.float64)).sum()
    grads = torch.autograd.grad(r, [params[n] for n in names])
    for n, g in zip(names, grads):
        torch.testing.assert_close(got[n], (g * params[n]).abs().detach(), rtol=1e-10, atol=0)
    assert model.bn.running_mean.max() < 0  # the caller's statistics keep their signs


def test_synflow_float64_survives_where_float32_overflows():
    layers = [nn.Linear(100, 100, bias=False) for _ in range(12)]
    for l in layers:
        nn.init.constant_(l.weight, 20.0)
    net = nn.Sequential(*layers)
    r32 = net(torch.ones(1, 100)).sum()
    assert not torch.isfinite(r32)  # 2000^12 = 4e39 > float32 max
    scores = synflow_scores(net, [f"{i}.weight" for i in range(12)], input_shape=(100,))
    assert all(bool(torch.isfinite(s).all()) for s in scores.values())


def test_exponential_schedule():
    kept = exponential_schedule(1000, 10, 100)
    assert len(kept) == 100 and kept[-1] == 10
    assert all(a >= b for a, b in zip(kept, kept[1:]))
    assert kept[49] == round(1000 * 0.01 ** 0.5)
    assert exponential_schedule(50, 50, 3) == [50, 50, 50]


@pytest.mark.parametrize("rounds", [1, 5, 100])
def test_synflow_mask_reaches_the_requested_count(rounds):
    net = _chain()
    names = ["0.weight", "1.weight", "2.weight"]
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    new = synflow_mask(net, names, mask, 9, rounds=rounds, input_shape=(6,))
    assert sum(int(m.sum()) for m in new.values()) == 9
    if rounds == 1:  # one round is one-shot pruning by the SynFlow score
        one_shot = prune_lowest(synflow_scores(net, names, input_shape=(6,)), mask, 62 - 9, names)
        for n in names:
            assert torch.equal(new[n], one_shot[n])


def test_iterative_synflow_avoids_the_layer_collapse_of_one_shot():
    # Tanaka et al.: one-shot pruning by synaptic saliency collapses layers, iterating does not.
    model = build_model("mlp_2", (1, 6, 6), 4, seed=0)
    names = model.prunable_names()
    mask = full_mask(model)
    total = sum(m.numel() for m in mask.values())
    keep = 200
    one_shot = prune_lowest(synflow_scores(model, names), mask, total - keep, names)
    assert not one_shot["hidden.1.weight"].any()
    new = synflow_mask(model, names, mask, keep, rounds=30)
    assert sum(int(new[n].sum()) for n in names) == keep
    assert all(bool(new[n].any()) for n in names)


def test_grasp_scores_a_vit_whose_attention_kernel_has_no_second_derivative():
    """PyTorch's fused CPU attention kernel cannot be differentiated twice; GraSP's Hessian-gradient
    product runs attention by its plain formula instead, which gives the same first derivatives."""
    model = build_model("vit_2_32", (1, 28, 28), 3, seed=0)
    x, y = _examples(n=8, shape=(1, 28, 28))
    names = model.prunable_names()
    scores = grasp_scores(model, names, (x, y), batch_size=4)
    assert set(scores) == set(names) and all(torch.isfinite(s).all() and s.abs().sum() > 0 for s in scores.values())
