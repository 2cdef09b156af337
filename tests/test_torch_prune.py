"""Export to and import from torch.nn.utils.prune's weight_orig/weight_mask form."""
import dataclasses

import pytest
import torch
from torch.nn.utils import prune

from elth.data.base import DatasetInfo
from elth.masks import eligible_names, full_mask, magnitude_prune
from elth.models import build_model
from elth.tickets import from_model
from elth.workflows.torch_prune import (
    TorchPruneError,
    from_torch_prune,
    split_pruned_state_dict,
    ticket_from_torch_prune,
    ticket_to_torch_prune,
    to_torch_prune,
)

SMALL = DatasetInfo("small_images", (3, 8, 8), 10)


def resnet_ticket():
    model = build_model("cifar_resnet_8", SMALL.input_shape, SMALL.num_classes, seed=0)
    mask = magnitude_prune(dict(model.named_parameters()), full_mask(model), 0.6, eligible_names(model))
    return from_model(model, SMALL, mask, rewind_step=3, provenance={"method": "test"})


def test_export_has_torch_prune_form_and_same_forward():
    ticket = resnet_ticket()
    plain = ticket.build().eval()
    pruned = ticket_to_torch_prune(ticket).eval()
    keys = set(pruned.state_dict())
    for name in ticket.mask:
        base = name[: -len(".weight")]
        assert f"{base}.weight_orig" in keys and f"{base}.weight_mask" in keys and name not in keys
        module = dict(pruned.named_modules())[base]
        assert prune.is_pruned(module)
        assert torch.equal(getattr(module, "weight_mask").bool(), ticket.mask[name])
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(plain(x), pruned(x))


def test_round_trip_gives_back_the_same_ticket():
    ticket = resnet_ticket()
    pruned = ticket_to_torch_prune(ticket)
    back = ticket_from_torch_prune(pruned, SMALL, rewind_step=3)
    assert back.dense is None  # the pruned entries' rewind values do not survive torch.nn.utils.prune form
    assert back.checksum() == dataclasses.replace(ticket, dense=None).checksum()
    assert not any(k.endswith(("_orig", "_mask")) for k in pruned.state_dict())


def test_training_in_torch_prune_form_keeps_pruned_weights_zero():
    ticket = resnet_ticket()
    model = ticket_to_torch_prune(ticket).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss = model(torch.randn(8, 3, 8, 8)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    mask = from_torch_prune(model)
    assert all(torch.equal(mask[k], ticket.mask[k]) for k in ticket.mask)
    weights = dict(model.named_parameters())
    assert all(bool((weights[k][~m] == 0).all()) for k, m in mask.items())


def test_state_dict_of_a_pruned_model_imports():
    ticket = resnet_ticket()
    state = ticket_to_torch_prune(ticket).state_dict()
    plain, mask = split_pruned_state_dict(state)
    fresh = build_model("cifar_resnet_8", SMALL.input_shape, SMALL.num_classes, seed=5)
    fresh.load_state_dict(plain)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, ticket.state[k])
    assert set(mask) == set(ticket.mask)
    assert all(torch.equal(mask[k], ticket.mask[k]) for k in mask)


def test_layers_without_torch_mask_import_as_dense():
    model = build_model("mlp_1", (1, 28, 28), 10, seed=0)
    prune.l1_unstructured(model.hidden[0], "weight", amount=0.5)
    mask = from_torch_prune(model)
    assert mask["hidden.0.weight"].float().mean().item() == pytest.approx(0.5)
    assert bool(mask["fc.weight"].all()) and bool(mask["bottleneck.weight"].all())


def test_bad_inputs_are_clear_errors():
    model = build_model("mlp_1", (1, 28, 28), 10)
    with pytest.raises(TorchPruneError, match="no weight"):
        to_torch_prune(model, {"nothing.weight": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(TorchPruneError, match="shape"):
        to_torch_prune(model, {"fc.weight": torch.ones(3, dtype=torch.bool)})
    to_torch_prune(model, full_mask(model))
    with pytest.raises(TorchPruneError, match="already"):
        to_torch_prune(model, {"fc.weight": torch.ones(10, 100, dtype=torch.bool)})
    with pytest.raises(TorchPruneError, match="no matching"):
        split_pruned_state_dict({"fc.weight_orig": torch.ones(2)})
    with pytest.raises(TorchPruneError, match="no matching"):
        split_pruned_state_dict({"fc.weight_mask": torch.ones(2)})
    with pytest.raises(TorchPruneError, match="not binary"):
        split_pruned_state_dict({"fc.weight_orig": torch.ones(2), "fc.weight_mask": torch.tensor([0.5, 1.0])})
