"""Tickets made by `prune_ticket`: rewind weights, sparsity matching, random/reinit/snip-extra rules."""
from __future__ import annotations

import pytest
import torch

from elth.data import load_dataset
from elth.elastic import transform
from elth.errors import ElthError
from elth.masks import count
from elth.models import build_model
from elth.sparsity.baselines import SCORE_METHODS, ScoringOptions
from elth.tickets import Ticket, load_ticket, save_ticket
from elth.training import preset
from elth.workflows.baseline_tickets import prune_ticket
from elth.workflows.rewind import rewind_point

DATASET = "synthetic_1x8x8_c3_n96"
RESNET, DEEPER = "cifar_resnet_14_2", "cifar_resnet_20_2"  # 2 and 3 blocks per stage
REWIND = "4it"  # trained once per module (cached under `root`); other tests rewind to 0
FAST = ScoringOptions(score_examples=4, synflow_rounds=5)


@pytest.fixture(scope="module")
def data():
    return load_dataset(DATASET)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("runs")


def _protocol(model=RESNET):
    return preset("smoke", DATASET, model)


def _prune(method, data, root, model=RESNET, **kw):
    kw.setdefault("rewind", "0")
    kw.setdefault("options", FAST)
    return prune_ticket(method, model, data, _protocol(model), root=root, progress=False, **kw)


def _rewind_state(data, root, model=RESNET, seed=0, rewind=REWIND):
    m, step = rewind_point(model, data, _protocol(model), rewind, seed=seed, data_seed=0, root=root,
                           progress=False)
    return {k: v.detach() for k, v in m.state_dict().items()}, step


@pytest.mark.parametrize("method", SCORE_METHODS)
def test_score_methods_prune_the_rewind_weights_to_the_sparsity(method, data, root, tmp_path):
    res = _prune(method, data, root, sparsity=0.7379, rewind=REWIND)
    t = res.ticket
    kept, total = count(t.mask)
    assert kept == total - round(0.7379 * total)
    assert res.requested_sparsity == 0.7379
    state, step = _rewind_state(data, root)
    assert step == 4 and t.rewind_step == 4 and t.rewind == REWIND
    for k, v in state.items():
        expected = v * t.mask[k].to(v.dtype) if k in t.mask else v
        assert torch.equal(t.state[k], expected), k
    p = t.provenance
    assert p["method"] == method and p["like"] is None and p["mask_seconds"] >= 0
    assert p["score_examples"] == (12 if method in ("snip", "grasp") else 0)
    assert p["requested_sparsity"] == 0.7379 and p["kept"] == kept
    assert t.protocol == _protocol().to_dict()
    loaded = load_ticket(save_ticket(t, tmp_path / "t.safetensors"))
    assert loaded.provenance == p


def test_like_matches_a_same_model_ticket_to_the_weight(data, root):
    source = _prune("magnitude", data, root, sparsity=0.5).ticket
    # An oddly sized ticket: remove three more weights by hand.
    mask = {k: v.clone() for k, v in source.mask.items()}
    flat = mask["layer1.0.conv1.weight"].view(-1)
    flat[flat.nonzero()[:3]] = False
    odd = Ticket(source.model, source.dataset, {k: v.clone() for k, v in source.state.items()}, mask,
                 source.rewind_step, source.rewind, source.protocol, {})
    for k, m in mask.items():
        odd.state[k] = odd.state[k] * m
    for method in ("magnitude", "synflow", "random"):
        res = _prune(method, data, root, like=odd)
        assert count(res.ticket.mask) == count(odd.mask), method
        assert res.requested_sparsity == odd.sparsity


def test_like_of_another_model_matches_the_fraction(data, root):
    other = _prune("magnitude", data, root, model=DEEPER, sparsity=0.6).ticket
    res = _prune("snip", data, root, like=other)
    kept, total = count(res.ticket.mask)
    assert abs((1 - kept / total) - other.sparsity) <= 0.5 / total
    assert res.ticket.provenance["like"]["model"] == DEEPER


def test_random_with_like_permutes_each_layer_on_the_rewind_weights(data, root):
    like = _prune("snip", data, root, sparsity=0.8).ticket
    a = _prune("random", data, root, like=like, seed=1).ticket
    b = _prune("random", data, root, like=like, seed=1).ticket
    c = _prune("random", data, root, like=like, seed=2).ticket
    for k, m in like.mask.items():
        assert int(a.mask[k].sum()) == int(m.sum()), k
        assert torch.equal(a.mask[k], b.mask[k])
    assert not all(torch.equal(a.mask[k], like.mask[k]) for k in like.mask)
    assert not all(torch.equal(a.mask[k], c.mask[k]) for k in like.mask)
    state, _ = _rewind_state(data, root, seed=1, rewind="0")  # --seed selects the rewind point, as for IMP
    for k, m in a.mask.items():
        assert torch.equal(a.state[k], state[k] * m)


def test_random_without_like_is_uniform_over_eligible_layers(data, root):
    t = _prune("random", data, root, model="mlp_1", sparsity=0.9).ticket
    assert t.mask["fc.weight"].all()  # the MLP's output layer stays dense by default
    kept, total = count(t.mask)
    assert kept == total - round(0.9 * total)
    eligible = [k for k in t.mask if k != "fc.weight"]
    density = (kept - t.mask["fc.weight"].numel()) / sum(t.mask[k].numel() for k in eligible)
    for k in eligible:
        assert abs(int(t.mask[k].sum()) - density * t.mask[k].numel()) < 1.0


def test_reinit_keeps_the_mask_with_fresh_weights_from_step_zero(data, root):
    like = _prune("magnitude", data, root, sparsity=0.7).ticket
    a = _prune("reinit", data, root, like=like, seed=0).ticket
    b = _prune("reinit", data, root, like=like, seed=0).ticket
    c = _prune("reinit", data, root, like=like, seed=5).ticket
    assert a.rewind_step == 0 and a.rewind == "0"
    init0, _ = rewind_point(RESNET, data, _protocol(), "0", seed=0, data_seed=0, root=root, progress=False)
    w = "layer1.0.conv1.weight"
    for k in like.mask:
        assert torch.equal(a.mask[k], like.mask[k])
        assert torch.equal(a.state[k], b.state[k])
    alive = like.mask[w]
    assert not torch.allclose(a.state[w][alive], like.state[w][alive])
    assert not torch.allclose(a.state[w][alive], init0.state_dict()[w][alive])  # not the seed-0 init
    assert not torch.allclose(a.state[w][alive], c.state[w][alive])
    assert a.provenance["reinit_seed"] == 0 and a.provenance["seed"] != 0


def test_collapse_is_a_ticket_warning(data, root):
    like = _prune("magnitude", data, root, sparsity=0.5).ticket
    mask = {k: v.clone() for k, v in like.mask.items()}
    mask["layer2.0.conv2.weight"][:] = False
    state = {k: (v * mask[k] if k in mask else v.clone()) for k, v in like.state.items()}
    collapsed = Ticket(like.model, like.dataset, state, mask, like.rewind_step, like.rewind, like.protocol, {})
    for method in ("random", "reinit"):
        t = _prune(method, data, root, like=collapsed).ticket
        assert t.warnings == ["layer collapse: layer2.0.conv2.weight has no weights left"], method


def _source_ticket(data, root, sparsity=0.8):
    return _prune("magnitude", data, root, sparsity=sparsity, rewind=REWIND).ticket


def test_snip_extra_keeps_source_masks_and_snip_masks_extra_units(data, root):
    source = _source_ticket(data, root)
    res = _prune("snip-extra", data, root, model=DEEPER, like=source)
    assert source.model == RESNET
    t = res.ticket
    stretched = transform(source, DEEPER, order="appending")
    extra_prefixes = ("layer1.2.", "layer2.2.", "layer3.2.")
    assert count(t.mask) == count(stretched.mask)
    assert res.requested_sparsity == pytest.approx(stretched.sparsity)
    for k, m in stretched.mask.items():
        if k.startswith(extra_prefixes):
            assert int(t.mask[k].sum()) == int(m.sum()), k  # the copied mask's layerwise sparsity
        else:
            assert torch.equal(t.mask[k], m), k  # units present in the source keep their masks
            assert torch.equal(t.state[k], stretched.state[k]), k
    assert set(t.provenance["snip_layers"]) == {k for k in t.mask if k.startswith(extra_prefixes)}
    assert not all(torch.equal(t.mask[k], stretched.mask[k]) for k in t.provenance["snip_layers"])
    # Extra units carry the source's dense rewind weights of the unit they replicate (appending: 2 <- 1).
    dense, _ = _rewind_state(data, root)
    for k in t.provenance["snip_layers"]:
        src = k.replace(".2.", ".1.", 1)
        assert torch.equal(t.state[k], dense[src] * t.mask[k]), k
    assert t.rewind_step == source.rewind_step and t.provenance["score_examples"] == 12


def test_snip_extra_same_result_from_dense_weights_or_a_rebuilt_rewind_point(data, root):
    source = _source_ticket(data, root)
    assert source.dense is not None  # made by from_model: carries the dense rewind weights
    stripped = Ticket(source.model, source.dataset, source.state, source.mask, source.rewind_step, source.rewind,
                      source.protocol, source.provenance)
    a = _prune("snip-extra", data, root, model=DEEPER, like=source).ticket
    b = _prune("snip-extra", data, root, model=DEEPER, like=stripped).ticket
    assert a.provenance["dense_source"] == "ticket"
    assert b.provenance["dense_source"] == "rebuilt rewind point"
    for k in a.mask:
        assert torch.equal(a.mask[k], b.mask[k]), k
        assert torch.equal(a.dense[k], b.dense[k]), k
    for k in a.state:
        assert torch.equal(a.state[k], b.state[k]), k


def test_snip_extra_errors(data, root):
    source = _source_ticket(data, root)
    with pytest.raises(ElthError, match="shallower"):
        _prune("snip-extra", data, root, model=RESNET, like=source)
    with pytest.raises(ElthError, match="needs a ticket"):
        _prune("snip-extra", data, root, model=DEEPER)
    state = {k: v.clone() for k, v in source.state.items()}
    state["layer1.1.conv1.weight"] *= 1.5  # not the network the recorded seeds rebuild
    wrong = Ticket(source.model, source.dataset, state, source.mask, source.rewind_step, source.rewind,
                   source.protocol, source.provenance)  # no dense weights: the rewind point is rebuilt
    with pytest.raises(ElthError, match="do not match"):
        _prune("snip-extra", data, root, model=DEEPER, like=wrong)


def test_request_errors(data, root):
    like = _source_ticket(data, root)
    with pytest.raises(ElthError, match="needs a ticket"):
        _prune("reinit", data, root, sparsity=0.5)
    with pytest.raises(ElthError, match="not both or neither"):
        _prune("snip", data, root)
    with pytest.raises(ElthError, match="not both or neither"):
        _prune("snip", data, root, sparsity=0.5, like=like)
    with pytest.raises(ElthError, match="reuses the --like ticket's mask"):
        _prune("reinit", data, root, model=DEEPER, like=like)
    with pytest.raises(ElthError, match="unknown pruning method"):
        _prune("obd", data, root, sparsity=0.5)
    with pytest.raises(ElthError, match="out of reach"):
        _prune("magnitude", data, root, sparsity=0.9, exclude=["layer3.1.conv1", "layer3.1.conv2"])
    other = load_dataset("synthetic_1x8x8_c4_n96")
    with pytest.raises(ElthError, match="cannot train on"):
        prune_ticket("random", RESNET, other, _protocol(), rewind=REWIND, like=like, root=root, progress=False)


def test_exclude_keeps_layers_dense_and_counts_them(data, root):
    t = _prune("magnitude", data, root, sparsity=0.5, exclude=["conv", "fc"]).ticket
    assert t.mask["conv.weight"].all() and t.mask["fc.weight"].all()
    kept, total = count(t.mask)
    model = build_model(RESNET, (1, 8, 8), 3)
    assert total == sum(model.get_parameter(n).numel() for n in model.prunable_names())
    assert kept == total - round(0.5 * total)
    assert t.provenance["options"]["excluded"] == ["conv.weight", "fc.weight"]

