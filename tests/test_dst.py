"""Dynamic sparse training (RigL, DPF): layer densities, updates, schedules, resumption, FLOPs, CLI."""
from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from elth.cli import main
from elth.data.base import synthetic
from elth.errors import ElthError
from elth.files import CHECKPOINT_FILE
from elth.flops import (
    dpf_training_flops,
    forward_macs,
    rigl_step_cost,
    rigl_training_flops,
    training_flops,
    weight_positions,
)
from elth.masks import count, count_for_sparsity
from elth.models import build_model
from elth.sparsity.dst import (
    DPF,
    DSTError,
    RigL,
    dpf_sparsity,
    erk_densities,
    kept_counts,
    rigl_drop_fraction,
    uniform_densities,
)
from elth.sparsity.dst.common import top_k_mask
from elth.tickets import load_ticket
from elth.training import CheckpointError, Protocol, train
from elth.training.checkpoint import load_checkpoint
from elth.workflows.dst_training import resolve_options, scale_protocol, train_dst, train_dst_group

SHAPE = (3, 8, 8)
CLASSES = 4
# 40 training images at batch 8: 5 iterations per epoch; 4 epochs = 20 steps.
PROTOCOL = Protocol(length="4ep", batch_size=8, lr=0.05, milestones=("2ep",), warmup="2it")


@pytest.fixture
def tmp_path():
    with tempfile.TemporaryDirectory(prefix="elth-dst-") as d:
        yield Path(d)


def tiny_data(seed: int = 1):
    return synthetic(input_shape=SHAPE, num_classes=CLASSES, num_train=40, num_test=16, seed=seed)


def three_linear(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> nn.Module:
    return nn.Sequential(nn.Linear(a[1], a[0], bias=False), nn.Linear(b[1], b[0], bias=False),
                         nn.Linear(c[1], c[0], bias=False))


# -- layer densities ------------------------------------------------------------------------------
def test_erk_makes_too_dense_layers_dense_and_recomputes_the_scale():
    # Layers 100x100 (sum of dims 200), 20x20 (40), 2x2 (4); 10404 weights; density 0.233 -> 2424.13 kept.
    model = three_linear((100, 100), (20, 20), (2, 2))
    d = erk_densities(model, 0.233)
    budget = 0.233 * 10404
    # eps0 = 2424.13 / 244 = 9.94: the 2x2 layer (raw 1) would be 9.94 dense -> dense.
    # eps1 = (2424.13 - 4) / 240 = 10.08: now the 20x20 layer (raw 0.1) exceeds 1 -> dense too.
    # eps2 = (2424.13 - 4 - 400) / 200 = 10.10: the 100x100 layer gets eps2 * 200 / 10000.
    assert budget / 244 * 0.1 < 1 < (budget - 4) / 240 * 0.1
    assert d["2.weight"] == 1.0 and d["1.weight"] == 1.0
    assert d["0.weight"] == pytest.approx((budget - 404) / 200 * 200 / 10000)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    counts = kept_counts(d, shapes, count_for_sparsity(10404, 1 - 0.233))
    assert counts == {"0.weight": 2020, "1.weight": 400, "2.weight": 4}


def test_erk_of_an_mlp_by_hand_with_the_output_layer_excluded():
    model = build_model("mlp_1", (1, 8, 8), CLASSES)
    # hidden.0 300x64, bottleneck 100x300, fc 4x100 (dense, counted): 49600 weights.
    d = erk_densities(model, 0.1)
    eps = (0.1 * 49600 - 400) / ((300 + 64) + (100 + 300))
    assert d["fc.weight"] == 1.0
    assert d["hidden.0.weight"] == pytest.approx(eps * 364 / 19200)
    assert d["bottleneck.weight"] == pytest.approx(eps * 400 / 30000)
    u = uniform_densities(model, 0.1)
    assert u["fc.weight"] == 1.0
    assert u["hidden.0.weight"] == u["bottleneck.weight"] == pytest.approx((4960 - 400) / 49200)
    with pytest.raises(DSTError, match="excluded"):
        erk_densities(model, 0.005)  # fc alone is 0.8% of the weights


@pytest.mark.parametrize("name", ["cifar_resnet_20", "mlp_2", "cifar_vgg_11"])
@pytest.mark.parametrize("density", [0.2621, 0.1, 0.05])
def test_layer_counts_match_the_total_density(name, density):
    model = build_model(name, (3, 32, 32), 10)
    shapes = {n: p.shape for n, p in model.named_parameters() if n in model.prunable_names()}
    total = sum(s.numel() for s in shapes.values())
    for densities in (erk_densities(model, density), uniform_densities(model, density)):
        assert all(0 < v <= 1 for v in densities.values())
        counts = kept_counts(densities, shapes, count_for_sparsity(total, 1 - density))
        assert sum(counts.values()) == count_for_sparsity(total, 1 - density)
        assert all(abs(counts[n] - densities[n] * shapes[n].numel()) <= 1 for n in shapes)
        assert abs(sum(densities[n] * shapes[n].numel() for n in shapes) - density * total) < 1e-6 * total


# -- schedules ----------------------------------------------------------------------------------
def test_rigl_cosine_drop_fraction_and_update_steps():
    assert rigl_drop_fraction(0, 0.3, 100) == pytest.approx(0.3)
    assert rigl_drop_fraction(25, 0.3, 100) == pytest.approx(0.3 * (1 + math.cos(math.pi / 4)) / 2)
    assert rigl_drop_fraction(50, 0.3, 100) == pytest.approx(0.15)
    assert rigl_drop_fraction(100, 0.3, 100) == 0.0 and rigl_drop_fraction(150, 0.3, 100) == 0.0
    rigl = RigL(0.9, 1000, update_every=100, end_fraction=0.75)
    assert rigl.end_step == 750
    assert [t for t in range(1000) if rigl.is_update_step(t)] == [100, 200, 300, 400, 500, 600, 700]
    assert rigl.update_steps() == 7


def test_dpf_cubic_sparsity_and_update_points():
    assert dpf_sparsity(0, 0.9, 100) == 0.0
    assert dpf_sparsity(50, 0.9, 100) == pytest.approx(0.9 * (1 - 0.5**3))
    assert dpf_sparsity(25, 0.9, 100) == pytest.approx(0.9 * (1 - 0.75**3))
    assert dpf_sparsity(100, 0.9, 100) == pytest.approx(0.9) and dpf_sparsity(130, 0.9, 100) == pytest.approx(0.9)
    dpf = DPF(0.9, 134, update_every=16, end_fraction=0.75)
    assert dpf.end_step == 100
    assert [p for p in range(1, 135) if dpf.is_update_point(p)] == [16, 32, 48, 64, 80, 96, 100]


def test_top_k_selection_breaks_ties_by_position():
    scores = torch.tensor([1.0, 3.0, 3.0, 2.0, 3.0, -math.inf])
    picked = lambda k: top_k_mask(scores, k).nonzero().squeeze(1).tolist()  # noqa: E731
    assert picked(0) == [] and picked(6) == [0, 1, 2, 3, 4, 5]
    assert picked(2) == [1, 2] and picked(3) == [1, 2, 4] and picked(4) == [1, 2, 3, 4]


# -- RigL update ---------------------------------------------------------------------------------
def _rigl_after_one_step(sparsity=0.7):
    model = build_model("mlp_1", (1, 4, 4), 3, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    rigl = RigL(sparsity, 100, update_every=10, drop_fraction=0.3, seed=3)
    rigl.attach(model, opt)
    x, y = torch.randn(16, 1, 4, 4), torch.arange(16) % 3
    nn.functional.cross_entropy(model(x), y).backward()
    assert rigl.after_backward(0) is True  # an ordinary step: gradients masked
    opt.step()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return model, opt, rigl


def test_rigl_initial_mask_is_seeded_and_gradients_of_inactive_weights_are_masked():
    model, opt, rigl = _rigl_after_one_step()
    params = dict(model.named_parameters())
    assert rigl.names == ["hidden.0.weight", "bottleneck.weight"]  # fc excluded
    for n, m in zip(rigl.names, rigl.masks):
        assert torch.count_nonzero(params[n][~m]) == 0
        assert torch.count_nonzero(opt.state[params[n]]["momentum_buffer"][~m]) == 0
    again = RigL(0.7, 100, seed=3)
    again.attach(build_model("mlp_1", (1, 4, 4), 3, seed=0), opt)
    assert all(torch.equal(a, b) for a, b in zip(rigl.masks, again.masks))
    other = RigL(0.7, 100, seed=4)
    other.attach(build_model("mlp_1", (1, 4, 4), 3, seed=0), opt)
    assert not all(torch.equal(a, b) for a, b in zip(rigl.masks, other.masks))
    kept, total = count(rigl.mask())
    assert kept == count_for_sparsity(total, 0.7)


@pytest.mark.parametrize("sparsity", [0.9, 0.7])
def test_rigl_update_drops_smallest_weights_and_grows_largest_gradients(sparsity):
    # At 0.7, ERK leaves hidden.0 94% dense: fewer inactive weights than the drop fraction asks for.
    model, opt, rigl = _rigl_after_one_step(sparsity)
    params = dict(model.named_parameters())
    step = 20
    alpha = rigl_drop_fraction(step, 0.3, rigl.end_step)
    before = {n: (m.clone(), params[n].detach().clone(), params[n].grad.clone()) for n, m in zip(rigl.names, rigl.masks)}
    # Make the weights that must be dropped the most attractive to grow: they must not come back.
    for n, (m, w, g) in before.items():
        k = min(int(alpha * int(m.sum())), int((~m).sum()))
        active_idx = m.flatten().nonzero().squeeze(1)
        smallest = active_idx[w.flatten()[active_idx].abs().argsort()[:k]]
        params[n].grad.view(-1)[smallest] = 1e6
        before[n] = (m, w, params[n].grad.clone())
    assert rigl.after_backward(step) is False  # a mask-update step skips the optimiser update
    capped = []
    for i, n in enumerate(rigl.names):
        old, w, g = before[n]
        new = rigl.masks[i]
        assert int(new.sum()) == int(old.sum())  # per-layer count constant
        k = min(int(alpha * int(old.sum())), int((~old).sum()))
        assert k > 0
        capped.append(k < int(alpha * int(old.sum())))
        flat_old, flat_w, flat_g = old.flatten(), w.flatten(), g.flatten()
        active_idx = flat_old.nonzero().squeeze(1)
        inactive_idx = (~flat_old).nonzero().squeeze(1)
        expect_drop = set(active_idx[flat_w[active_idx].abs().argsort()[:k]].tolist())
        expect_grow = set(inactive_idx[flat_g[inactive_idx].abs().argsort(descending=True)[:k]].tolist())
        flat_new = new.flatten()
        assert set((flat_old & ~flat_new).nonzero().squeeze(1).tolist()) == expect_drop
        assert set((flat_new & ~flat_old).nonzero().squeeze(1).tolist()) == expect_grow
        p = params[n].detach().flatten()
        buf = opt.state[params[n]]["momentum_buffer"].flatten()
        changed = torch.tensor(sorted(expect_drop | expect_grow))
        assert torch.count_nonzero(p[changed]) == 0 and torch.count_nonzero(buf[changed]) == 0
        survivors = flat_old & flat_new
        assert torch.equal(p[survivors], flat_w[survivors])
        assert torch.count_nonzero(buf[survivors]) > 0
    assert capped == ([False, False] if sparsity == 0.9 else [True, False])


def test_rigl_training_keeps_layer_counts_and_inactive_weights_zero():
    data = tiny_data()
    model = build_model("cifar_resnet_8", SHAPE, CLASSES, seed=0)
    rigl = RigL(0.8, 20, update_every=3, end_fraction=0.75, seed=0)
    seen = []

    def check(step, m):
        p = dict(m.named_parameters())
        seen.append([int(mask.sum()) for mask in rigl.masks])
        assert all(torch.count_nonzero(p[n][~mask]) == 0 for n, mask in zip(rigl.names, rigl.masks))

    first = None

    def remember_first(step, m):
        nonlocal first
        if step == 1:
            first = [mask.clone() for mask in rigl.masks]
        check(step, m)

    train(model, data, PROTOCOL, device="cpu", progress=False, controller=rigl, callback=remember_first)
    assert all(s == seen[0] for s in seen)
    assert any(not torch.equal(a, b) for a, b in zip(first, rigl.masks))  # the mask did move


def test_a_mask_and_a_controller_together_are_refused():
    model = build_model("mlp_1", SHAPE, CLASSES)
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n.endswith("weight")}
    with pytest.raises(ElthError, match="not both"):
        train(model, tiny_data(), PROTOCOL, device="cpu", progress=False, mask=mask, controller=RigL(0.5, 20))


# -- DPF ----------------------------------------------------------------------------------------
def test_dpf_applies_the_gradient_at_the_masked_weights_to_the_dense_weights():
    model = build_model("mlp_1", (1, 4, 4), 3, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dpf = DPF(0.6, 10, update_every=1, end_fraction=0.5)
    dpf.attach(model, opt)
    dpf.update(5)  # jump to the final sparsity: a global magnitude mask of the dense weights
    with torch.no_grad():
        torch._foreach_mul_(dpf.params, dpf.layouts)
    params = dict(model.named_parameters())
    dense = {n: d.clone() for n, d in zip(dpf.names, dpf.dense)}
    masks = dict(zip(dpf.names, dpf.masks))
    x, y = torch.randn(8, 1, 4, 4, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 3
    # Reference: the gradient of the loss at m * W, by a copy of the model.
    ref = build_model("mlp_1", (1, 4, 4), 3, seed=0)
    ref.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(ref(x), y).backward()
    ref_grads = {n: p.grad for n, p in ref.named_parameters()}

    nn.functional.cross_entropy(model(x), y).backward()
    assert dpf.after_backward(5) is True
    opt.step()
    dpf.after_step(5)
    for n in dpf.names:
        new_dense = dict(zip(dpf.names, dpf.dense))[n]
        # The optimiser's update and this expression may round differently: a few float32 ulps of
        # weights below 1 (an ulp is at most 6e-8 there), far below any real error.
        assert torch.allclose(new_dense, dense[n] - 0.1 * ref_grads[n], rtol=0, atol=5e-7)
        pruned = ~masks[n]
        assert bool(pruned.any()) and bool((ref_grads[n][pruned] != 0).any())  # feedback reaches pruned W
        assert not torch.equal(new_dense[pruned], dense[n][pruned])
        assert torch.equal(params[n].detach(), new_dense * masks[n])
    kept, total = count(dpf.mask())
    assert kept == count_for_sparsity(total, 0.6)


def test_dpf_training_ends_with_mask_times_dense_weights():
    data = tiny_data()
    model = build_model("mlp_1", SHAPE, CLASSES, seed=0)
    dpf = DPF(0.9, 20, update_every=4, end_fraction=0.5)
    kept_per_step, dense_at = [], {}

    def watch(step, m):
        kept_per_step.append([int(mask.sum()) for mask in dpf.masks])
        if step in (10, 20):
            dense_at[step] = [d.clone() for d in dpf.dense]

    train(model, data, PROTOCOL, device="cpu", progress=False, controller=dpf, callback=watch)
    params = dict(model.named_parameters())
    for n, d, m in zip(dpf.names, dpf.dense, dpf.masks):
        assert torch.equal(params[n].detach(), d * m)
    assert count(dpf.mask())[0] == count_for_sparsity(count(dpf.mask())[1], 0.9)
    # After t_end (step 10) the mask is frozen but the pruned dense weights keep learning.
    for before, after, m in zip(dense_at[10], dense_at[20], dpf.masks):
        assert not torch.equal(before[~m], after[~m])
    # The FLOPs bookkeeping: kept weights summed over steps, as counted step by step.
    weight_steps = dpf.weight_steps(20)
    # kept_per_step[s] is the mask after step s, used by step s + 1; step 0 used the full mask.
    numel = [dpf.shapes[n].numel() for n in dpf.names]
    used = [numel] + kept_per_step[:-1]
    for i, n in enumerate(dpf.names):
        assert weight_steps[n] == sum(row[i] for row in used)
    assert weight_steps["fc.weight"] == 20 * model.fc.weight.numel()


# -- exact resumption ------------------------------------------------------------------------------
class Killed(Exception):
    pass


def _kill_at(step_to_kill):
    def kill(step, model):
        if step == step_to_kill:
            raise Killed

    return kill


@pytest.mark.parametrize("method", ["rigl", "dpf"])
def test_killed_dst_run_resumes_bit_identically(method, tmp_path):
    def make():
        if method == "rigl":
            return RigL(0.8, 20, update_every=3, end_fraction=0.75, seed=0)
        return DPF(0.8, 20, update_every=3, end_fraction=0.75)

    def fresh():
        return build_model("cifar_resnet_8", SHAPE, CLASSES, seed=0)

    whole_c = make()
    whole = fresh()
    train(whole, tiny_data(), PROTOCOL, device="cpu", progress=False, controller=whole_c)
    with pytest.raises(Killed):
        train(fresh(), tiny_data(), PROTOCOL, device="cpu", progress=False, controller=make(), out_dir=tmp_path,
              callback=_kill_at(13))
    assert load_checkpoint(tmp_path / CHECKPOINT_FILE)["step"] == 10
    resumed_c = make()
    resumed = fresh()
    steps = []
    train(resumed, tiny_data(), PROTOCOL, device="cpu", progress=False, controller=resumed_c, out_dir=tmp_path,
          callback=lambda s, m: steps.append(s))
    assert steps == list(range(11, 21))
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    assert all(torch.equal(whole_c.mask()[n], resumed_c.mask()[n]) for n in whole_c.mask())
    if method == "dpf":
        assert all(torch.equal(a, b) for a, b in zip(whole_c.dense, resumed_c.dense))
        assert whole_c.weight_steps(20) == resumed_c.weight_steps(20)
    with pytest.raises(CheckpointError, match="controller"):
        other = RigL(0.8, 20, update_every=4, seed=0) if method == "rigl" else DPF(0.8, 20, update_every=4)
        train(fresh(), tiny_data(), PROTOCOL, device="cpu", progress=False, controller=other, out_dir=tmp_path)


# -- train_dst, FLOPs -----------------------------------------------------------------------------
def test_flops_formulas_by_hand():
    assert rigl_step_cost(10, 100, 4) == pytest.approx((3 * 10 * 4 + 2 * 10 + 100) / 5)
    assert rigl_training_flops(10, 100, steps=8, batch_size=2, update_every=4, update_steps=5) == pytest.approx(
        2 * 2 * (5 * (3 * 10 * 4 + 2 * 10 + 100) / 5 + 3 * 3 * 10))
    assert dpf_training_flops(sparse_macs_sum=70, dense_macs=100, steps=3, batch_size=2) == 2 * 2 * (2 * 70 + 300)
    model = build_model("cifar_resnet_8", SHAPE, CLASSES)
    positions = weight_positions(model)
    params = dict(model.named_parameters())
    assert sum(positions[n] * params[n].numel() for n in positions) == forward_macs(model)
    assert positions["conv.weight"] == 64 and positions["fc.weight"] == 1


def test_train_dst_caches_writes_a_ticket_and_prices_training(tmp_path):
    data = tiny_data()
    r = train_dst("mlp_1", data, PROTOCOL, "rigl", 0.8, seed=0, data_seed=0, root=tmp_path, device="cpu",
                  progress=False, update_every=3)
    ticket = load_ticket(r.ticket_path)
    assert ticket.provenance["method"] == "rigl" and ticket.rewind_step == 20 == r.train_steps
    assert ticket.sparsity == pytest.approx(r.sparsity) and r.sparsity == pytest.approx(0.8, abs=1e-4)
    model = ticket.build()
    f_s, f_d = forward_macs(model, ticket.mask), forward_macs(model)
    assert r.training_flops == pytest.approx(rigl_training_flops(f_s, f_d, 20, 8, 3, 15))
    assert r.dense_training_flops == pytest.approx(training_flops(f_d, 20, 8))
    again = train_dst("mlp_1", data, PROTOCOL, "rigl", 0.8, seed=0, data_seed=0, root=tmp_path, device="cpu",
                      progress=False, update_every=3)
    assert again == r
    assert len(list(tmp_path.glob("dst-*"))) == 1
    d = train_dst("mlp_1", data, PROTOCOL, "dpf", 0.8, seed=0, data_seed=0, root=tmp_path, device="cpu",
                  progress=False, multiplier=2)
    assert d.train_steps == 40 and d.dense_training_flops == r.dense_training_flops
    t = load_ticket(d.ticket_path)
    assert t.has_dense and t.protocol["length"] == "8ep" and t.protocol["milestones"] == ["4ep"]


@pytest.mark.parametrize("method", ["dpf", "rigl"])
def test_dst_runs_trained_as_a_group_are_the_runs_train_dst_makes(method, tmp_path):
    data = tiny_data()
    runs = [(0.8, 0, 0), (0.9, 1, 1), (0.8, 2, 5)]
    grouped = train_dst_group("mlp_2", data, PROTOCOL, method, runs, group_size=2, root=tmp_path / "g", device="cpu",
                              progress=False, update_every=3)
    alone = [train_dst("mlp_2", data, PROTOCOL, method, s, seed=seed, data_seed=ds, root=tmp_path / "a", device="cpu",
                       progress=False, update_every=3) for s, seed, ds in runs]
    for g, a in zip(grouped, alone):
        # Bitwise the same training (MLPs fuse exactly), so the same accuracy, sparsity and FLOPs.
        assert {k: v for k, v in g.to_dict().items() if k not in ("seconds", "ticket_path")} == \
            {k: v for k, v in a.to_dict().items() if k not in ("seconds", "ticket_path")}
        tg, ta = load_ticket(g.ticket_path), load_ticket(a.ticket_path)
        assert all(torch.equal(tg.mask[n], ta.mask[n]) and torch.equal(tg.state[n], ta.state[n]) for n in ta.mask)
        if method == "dpf":
            assert all(torch.equal(tg.dense[n], ta.dense[n]) for n in ta.mask)
        assert Path(g.ticket_path).relative_to(tmp_path / "g").parent.name == Path(a.ticket_path).parent.name
    # train_dst finds each grouped run finished (the same directories), and so does a second group.
    assert train_dst("mlp_2", data, PROTOCOL, method, 0.9, seed=1, data_seed=1, root=tmp_path / "g", device="cpu",
                     progress=False, update_every=3) == grouped[1]
    assert train_dst_group("mlp_2", data, PROTOCOL, method, runs, group_size=3, root=tmp_path / "g", device="cpu",
                           progress=False, update_every=3) == grouped


def test_options_are_checked():
    assert resolve_options("dpf", {"update_every": None}) == {
        "update_every": 16, "end_fraction": 0.75, "multiplier": 1, "exclude": None}
    with pytest.raises(DSTError, match="RigL only"):
        resolve_options("dpf", {"drop_fraction": 0.2})
    with pytest.raises(DSTError, match="unknown option"):
        resolve_options("rigl", {"dT": 3})
    with pytest.raises(DSTError, match="unknown dynamic"):
        resolve_options("set", {})
    with pytest.raises(DSTError, match="drop fraction"):
        resolve_options("rigl", {"drop_fraction": 1.0})
    with pytest.raises(DSTError, match="multiplier"):
        resolve_options("rigl", {"multiplier": 0})
    p = scale_protocol(Protocol(length="5ep100it", milestones=("2ep", "30it"), warmup="1ep"), 5)
    assert (p.length, p.milestones, p.warmup) == ("25ep500it", ("10ep", "150it"), "5ep")


# -- CLI ----------------------------------------------------------------------------------------
DATASET = "synthetic_3x8x8_c4_n48"
CLI_COMMON = ["--dataset", DATASET, "--length", "24it", "--batch-size", "8", "--milestones", "none",
              "--eval-every", "none", "--no-progress"]


@pytest.mark.parametrize("method,model", [("rigl", "mlp_1"), ("dpf", "cifar_resnet_8_4")])
def test_cli_trains_and_writes_a_ticket(method, model, tmp_path, capsys):
    rc = main(["dst", "--method", method, "--model", model, "--sparsity", "90%", *CLI_COMMON,
               "--update-every", "5", "--root", str(tmp_path)])
    assert rc == 0
    text = capsys.readouterr().out
    ticket_path = next(tmp_path.glob("dst-*/ticket.safetensors"))
    ticket = load_ticket(ticket_path)
    assert ticket.model == model and ticket.provenance["method"] == method
    assert ticket.sparsity == pytest.approx(0.9, abs=1e-3)
    assert "sparsity 90.00% over all prunable weights" in text
    assert "x one dense training of" in text and f"ticket: {ticket_path}" in text
    result = json.loads((ticket_path.parent / "result.json").read_text())
    assert result["train_steps"] == 24 and 0 <= result["test_accuracy"] <= 1
    assert main(["inspect", str(ticket_path)]) == 0
    assert "training of" in capsys.readouterr().out


def test_cli_errors_exit_2(tmp_path, capsys):
    base = ["dst", *CLI_COMMON, "--root", str(tmp_path)]
    assert main([*base, "--method", "dpf", "--model", "mlp_1", "--sparsity", "0.9", "--drop-fraction", "0.2"]) == 2
    assert "RigL only" in capsys.readouterr().err
    assert main([*base, "--method", "rigl", "--model", "resnet_9000", "--sparsity", "0.9"]) == 2
    assert main([*base, "--method", "rigl", "--model", "mlp_1", "--sparsity", "0.999"]) == 2
    assert "excluded" in capsys.readouterr().err
    assert main([*base, "--method", "rigl", "--model", "mlp_1", "--sparsity", "0.9", "--drop-fraction", "1"]) == 2
    for bad in (["--sparsity", "1.5"], ["--sparsity", "0.9", "--update-every", "0"],
                ["--sparsity", "0.9", "--end-fraction", "0"], ["--sparsity", "0.9", "--distribution", "lognormal"]):
        with pytest.raises(SystemExit) as e:
            main([*base, "--method", "rigl", "--model", "mlp_1", *bad])
        assert e.value.code == 2
    assert not list(tmp_path.glob("dst-*"))
