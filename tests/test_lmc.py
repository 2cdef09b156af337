"""Linear mode connectivity: interpolation, BN recomputation, instability, the analysis and `elth lmc`."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from elth import cli
from elth.analysis import (
    LMCError,
    LMCResult,
    alphas_of,
    default_label,
    instability,
    interpolate,
    linear_mode_connectivity,
    recompute_bn_statistics,
)
from elth.data import load_dataset
from elth.models import build_model
from elth.tickets import Ticket, from_model, save_ticket
from elth.training import Protocol, evaluate
from elth.workflows.ticket_training import train_ticket, trained_state

MLP_DATA = "synthetic_1x8x8_c3_n96"
CONV_DATA = "synthetic_3x8x8_c3_n96"
# 96 examples at batch 32: 3 steps per epoch, 6 in all; momentum so that the copies drift apart.
PROTOCOL = Protocol(length="2ep", batch_size=32, lr=0.05, momentum=0.9, weight_decay=1e-4, milestones=(),
                    warmup="0")


def make_ticket(model_name: str, dataset: str, density: float = 0.5, seed: int = 0) -> Ticket:
    data = load_dataset(dataset)
    model = build_model(model_name, data.info.input_shape, data.info.num_classes, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    mask = {k: torch.rand(model.state_dict()[k].shape, generator=g) < density for k in model.prunable_names()}
    for k in model.default_excluded():
        mask[k] = torch.ones_like(mask[k])
    return from_model(model, data.info, mask, protocol=PROTOCOL.to_dict(),
                      provenance={"method": "random", "description": "test ticket"})


@pytest.fixture(scope="module")
def mlp_ticket() -> Ticket:
    return make_ticket("mlp_1", MLP_DATA)


@pytest.fixture(scope="module")
def conv_ticket() -> Ticket:
    return make_ticket("cifar_resnet_8_4", CONV_DATA)


# -- interpolation ---------------------------------------------------------------------------------

def test_interpolation_endpoints_midpoint_counters_and_pruned_weights(conv_ticket):
    model_b = build_model("cifar_resnet_8_4", (3, 8, 8), 3, seed=7)
    state_a = {k: v.clone() for k, v in conv_ticket.state.items()}
    state_b = {k: v.clone() for k, v in model_b.state_dict().items()}
    for k, m in conv_ticket.mask.items():
        state_b[k] = state_b[k] * m
    state_a["bn.num_batches_tracked"].fill_(11)
    state_b["bn.num_batches_tracked"].fill_(99)
    state_b["bn.running_var"].uniform_(0.5, 2.0)

    at0, at1, mid = (interpolate(state_a, state_b, a) for a in (0.0, 1.0, 0.5))
    for k, a in state_a.items():
        b = state_b[k]
        if a.is_floating_point():
            assert torch.equal(at0[k], a) and torch.equal(at1[k], b), k
            torch.testing.assert_close(mid[k], (a + b) / 2, rtol=0, atol=1e-6)
        else:
            assert at0[k].dtype == a.dtype
            assert all(torch.equal(s[k], a) for s in (at0, at1, mid)), f"{k} must come from the first state"
    for k, m in conv_ticket.mask.items():
        for s in (at0, at1, mid, interpolate(state_a, state_b, 0.37)):
            assert not s[k][~m].any(), f"pruned weights of {k} must stay zero"
    assert state_a["bn.num_batches_tracked"].item() == 11  # inputs are not modified
    assert not torch.equal(at0["conv.weight"], at1["conv.weight"])


def test_interpolation_refuses_different_states(conv_ticket, mlp_ticket):
    with pytest.raises(LMCError, match="different tensors"):
        interpolate(conv_ticket.state, mlp_ticket.state, 0.5)
    bad = dict(conv_ticket.state, **{"fc.weight": torch.zeros(5, 16)})
    with pytest.raises(LMCError, match="has shape"):
        interpolate(conv_ticket.state, bad, 0.5)


def test_interpolated_endpoints_evaluate_like_the_two_models(mlp_ticket):
    data = load_dataset(MLP_DATA)
    model_a = mlp_ticket.build()
    model_b = build_model("mlp_1", (1, 8, 8), 3, seed=3)
    probe = mlp_ticket.build()
    for alpha, reference in ((0.0, model_a), (1.0, model_b)):
        probe.load_state_dict(interpolate(model_a.state_dict(), model_b.state_dict(), alpha))
        assert evaluate(probe, data) == evaluate(reference, data)


# -- BN statistics ---------------------------------------------------------------------------------

def test_bn_recompute_equals_the_batch_statistics(conv_ticket):
    data = load_dataset(CONV_DATA)  # 6 batches of 16 per epoch: 8 batches reach into epoch 1
    model = conv_ticket.build()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-3, 3)
                m.running_var.uniform_(5, 9)
    model.eval()
    assert recompute_bn_statistics(model, data, batches=8, batch_size=16, seed=5) == 9
    assert not model.training
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert model.bn.num_batches_tracked.item() == 8

    batches = list(data.train_epoch(0, 16, 5, augment=False)) + list(data.train_epoch(1, 16, 5, augment=False))[:2]
    stem_means, stem_vars, block_means, block_vars = [], [], [], []
    with torch.no_grad():
        for x, _ in batches:
            h = model.conv(x)
            stem_means.append(h.mean((0, 2, 3)))
            stem_vars.append(h.var((0, 2, 3), unbiased=True))
            # The next BN sees the stem normalised with its own batch statistics (train mode).
            z = F.relu(F.batch_norm(h, None, None, model.bn.weight, model.bn.bias, training=True))
            h1 = model.layer1[0].conv1(z)
            block_means.append(h1.mean((0, 2, 3)))
            block_vars.append(h1.var((0, 2, 3), unbiased=True))
    close = dict(rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.bn.running_mean, torch.stack(stem_means).mean(0), **close)
    torch.testing.assert_close(model.bn.running_var, torch.stack(stem_vars).mean(0), **close)
    torch.testing.assert_close(model.layer1[0].bn1.running_mean, torch.stack(block_means).mean(0), **close)
    torch.testing.assert_close(model.layer1[0].bn1.running_var, torch.stack(block_vars).mean(0), **close)
    assert all(p.grad is None for p in model.parameters())


def test_bn_recompute_without_bn_layers_changes_nothing(mlp_ticket):
    model = mlp_ticket.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert recompute_bn_statistics(model, load_dataset(MLP_DATA), batches=2, batch_size=16) == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- instability -----------------------------------------------------------------------------------

def test_instability_definition_on_hand_made_curves():
    assert instability([0.10, 0.15, 0.30, 0.12, 0.14]) == pytest.approx(0.30 - 0.12)
    assert instability([0.2, 0.2, 0.2]) == 0.0
    assert instability([0.2, 0.1, 0.2]) == 0.0  # a path better than its ends is not unstable
    assert instability([0.3, 0.1, 0.1]) == pytest.approx(0.3 - 0.2)
    with pytest.raises(LMCError):
        instability([0.1])
    assert alphas_of(5) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert alphas_of(30)[0] == 0.0 and alphas_of(30)[-1] == 1.0 and len(alphas_of(30)) == 30
    with pytest.raises(LMCError):
        alphas_of(1)


def test_default_labels_follow_figure_8():
    ticket = make_ticket("mlp_1", MLP_DATA)
    ticket.provenance = {"method": "imp"}
    assert default_label(ticket) == "IMP"
    ticket.provenance = {"method": "elastic_ticket_transformation", "source": {"model": "cifar_resnet_20"}}
    assert default_label(ticket) == "ETT \u2190 ResNet-20"
    ticket.provenance = {"method": "random"}
    assert default_label(ticket) == "Random"


# -- the analysis ----------------------------------------------------------------------------------

def test_lmc_endpoints_are_the_trained_copies_and_runs_are_cached(mlp_ticket, tmp_path):
    data = load_dataset(MLP_DATA)
    result = linear_mode_connectivity(mlp_ticket, data, PROTOCOL, data_seeds=(0, 1), points=5,
                                      root=tmp_path, progress=False, train_examples_per_class=4)
    assert result.alphas == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert result.bn_layers == 0 and result.bn_batches == 0
    # No BN: alpha 0 and 1 are exactly the trained networks, so their errors are those training reported.
    assert result.endpoint_errors == result.trained_test_errors
    assert result.test_errors == [1.0 - a for a in result.test_accuracies]
    assert result.instability == pytest.approx(max(result.test_errors) - sum(result.endpoint_errors) / 2)
    assert len(result.train_errors) == 5 and result.train_examples == 12
    a, b = (trained_state(mlp_ticket, data, PROTOCOL, data_seed=s, root=tmp_path) for s in (0, 1))
    assert not torch.equal(a["hidden.0.weight"], b["hidden.0.weight"]), "different seeds must give different copies"
    assert len(set(result.run_dirs)) == 2 and all((tmp_path / p).is_dir() for p in result.run_dirs)

    checkpoints = sorted(tmp_path.glob("train-*/train/checkpoint.pt"))
    stamps = [p.stat().st_mtime_ns for p in checkpoints]
    again = linear_mode_connectivity(mlp_ticket, data, PROTOCOL, data_seeds=(0, 1), points=5,
                                     root=tmp_path, progress=False, train_examples_per_class=4)
    assert [p.stat().st_mtime_ns for p in checkpoints] == stamps, "the trained copies must be reused"
    assert again.to_dict() == result.to_dict()
    record = json.loads(json.dumps(result.to_dict()))
    assert record["instability"] == result.instability and record["endpoint_errors"] == list(result.endpoint_errors)
    assert LMCResult.from_dict(record) == result


def test_same_data_seed_gives_identical_copies_and_zero_instability(conv_ticket, tmp_path):
    data = load_dataset(CONV_DATA)
    for root in (tmp_path / "a", tmp_path / "b"):
        train_ticket(conv_ticket, data, PROTOCOL, data_seed=4, root=root, progress=False)
    a, b = (trained_state(conv_ticket, data, PROTOCOL, data_seed=4, root=r) for r in (tmp_path / "a", tmp_path / "b"))
    assert all(torch.equal(a[k], b[k]) for k in a), "training on CPU must be exactly reproducible"

    # Without a root, each copy trains on its own in a temporary directory.
    result = linear_mode_connectivity(conv_ticket, data, PROTOCOL, data_seeds=(4, 4), points=4, bn="recompute",
                                      bn_batches=2, progress=False)
    assert result.run_dirs is None and result.bn_layers == 9 and result.bn_batches == 2
    assert result.instability == 0.0
    assert len(set(result.test_errors)) == 1


def test_lmc_settings_errors(mlp_ticket):
    data = load_dataset(MLP_DATA)
    for kwargs, message in [({"data_seeds": (0, 1, 2)}, "two data seeds"), ({"bn": "freeze"}, "bn must be"),
                            ({"points": 1}, "at least 2 points"), ({"bn_batches": 0}, "at least one batch")]:
        with pytest.raises(LMCError, match=message):
            linear_mode_connectivity(mlp_ticket, data, PROTOCOL, progress=False, **kwargs)


# -- the command -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ticket_files(tmp_path_factory, mlp_ticket, conv_ticket):
    d = tmp_path_factory.mktemp("lmc_tickets")
    mlp, conv = d / "mlp.safetensors", d / "conv.safetensors"
    save_ticket(mlp_ticket, mlp)
    save_ticket(conv_ticket, conv)
    return mlp, conv


def elth_lmc(capsys, *argv):
    code = cli.main(["lmc", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_end_to_end(ticket_files, tmp_path, capsys):
    mlp, conv = ticket_files
    root = tmp_path / "runs"
    args = [mlp, conv, "--preset", "smoke", "--points", "5", "--bn-batches", "2", "--train-per-class", "2",
            "--root", root, "--label", "MLP ticket", "--label", "ResNet ticket", "--no-progress"]
    code, out, err = elth_lmc(capsys, *args)
    assert code == 0, err
    (out_dir,) = root.glob("lmc-*")
    assert f"wrote {out_dir / 'lmc.json'} and {out_dir / 'lmc.png'}" in out
    record = json.loads((out_dir / "lmc.json").read_text())
    mlp_result, conv_result = (LMCResult.from_dict(r) for r in record["results"])
    assert (mlp_result.label, conv_result.label) == ("MLP ticket", "ResNet ticket")
    assert mlp_result.protocol["length"] == "12it" and record["settings"]["data_seeds"] == [0, 1]
    assert conv_result.bn == "recompute" and conv_result.bn_layers == 9 and mlp_result.bn_layers == 0
    assert len(conv_result.train_errors) == 5 and conv_result.train_examples == 6
    assert len(list(root.glob("train-*"))) == 4  # two copies of each ticket
    assert "MLP ticket: copies trained to test error" in out and "no BN layers" in out
    assert "BN recomputed from 2 training batches" in out
    for r in (mlp_result, conv_result):
        for alpha, error in zip(r.alphas, r.test_errors):
            assert f"{alpha:>6.3f}  {100 * error:>9.2f}%" in out
        assert f"instability: {100 * r.instability:.2f} percentage points" in out
    assert (out_dir / "lmc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Again with --out and the default labels: the trainings are reused, the numbers are the same.
    code, out, err = elth_lmc(capsys, *args[:-5], "--out", tmp_path / "again", "--no-progress")
    assert code == 0, err
    again = json.loads((tmp_path / "again" / "lmc.json").read_text())["results"]
    assert [r["label"] for r in again] == ["Random", "Random"]
    assert [r["test_errors"] for r in again] == [r["test_errors"] for r in record["results"]]
    assert len(list(root.glob("train-*"))) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing.safetensors"], "no such ticket file"),
        (["{mlp}", "--seeds", "0"], "exactly two data seeds"),
        (["{mlp}", "--seeds", "a,b"], "two comma-separated integers"),
        (["{mlp}", "--seeds", "1,1"], "the two copies need different data seeds"),
        (["{mlp}", "--points", "1"], "at least 2 points"),
        (["{mlp}", "--points", "100000000"], "at most 1000 points (each is a test evaluation"),
        (["{mlp}", "--bn-batches", "0"], "--bn-batches must be at least 1"),
        (["{mlp}", "{conv}", "--label", "only one"], "once per ticket"),
        (["{mlp}", "--dataset", CONV_DATA], "cannot train on"),
        (["{mlp}", "--preset", "smoke", "--lr", "-1"], "learning rate must be"),
    ],
)
def test_cli_errors_exit_2_with_one_line(ticket_files, tmp_path, capsys, args, message):
    mlp, conv = ticket_files
    argv = [a.format(mlp=mlp, conv=conv) for a in args]
    code, out, err = elth_lmc(capsys, *argv, "--root", tmp_path / "runs", "--no-progress")
    assert code == 2
    assert err.startswith("elth lmc: error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("runs/lmc-*")), "nothing is written after an error"
