"""Sparsity-matched ETT tickets: exactly the source's sparsity, only replicable units changed,
by rewind magnitude, deterministically."""
import pytest
import torch

from elth import cli
from elth.data.base import DatasetInfo
from elth.elastic import match_sparsity, model_view, transform
from elth.elastic.match import adjustable_keys
from elth.masks import count
from elth.tickets import Ticket, TicketError, load_ticket, save_ticket


def ticket(name: str, seed: int, density_of_unit, shape=(3, 32, 32)) -> Ticket:
    """Random rewind weights; each prunable layer's density set by its unit index (stem/head: 0.5)."""
    view = model_view(name, shape, 10)
    g = torch.Generator().manual_seed(seed)
    state = {k: torch.tensor(5) if k.endswith("num_batches_tracked") else torch.randn(s, generator=g)
             for k, s in view.shapes}
    mask, dense = {}, {}
    for k in view.prunable:
        part, _, unit = view.structure.part_of(k)
        density = density_of_unit(unit) if part == "unit" else 0.5
        mask[k] = torch.rand(state[k].shape, generator=g) < density
        dense[k] = state[k].clone()
        state[k] = state[k] * mask[k]
    info = DatasetInfo("cifar10", shape, 10)
    return Ticket(name, info, state, mask, provenance={"method": "test"}, dense=dense)


def assert_same_sparsity_to_the_weight(result: Ticket, source: Ticket) -> None:
    kept, total = count(result.mask)
    assert kept == total - round(source.sparsity * total)
    assert abs(result.sparsity - source.sparsity) <= 0.5 / total


def assert_only_replicable_units_changed(matched: Ticket, plain: Ticket) -> None:
    changeable = set(adjustable_keys(plain))
    assert changeable and matched.state.keys() == plain.state.keys()
    for k in plain.state:
        if k not in changeable:
            assert torch.equal(matched.state[k], plain.state[k]), f"{k} changed"
    for k in plain.mask:
        if k not in changeable:
            assert torch.equal(matched.mask[k], plain.mask[k]), f"mask of {k} changed"
    # the changed weights are rewind values under the new mask
    for k in changeable:
        assert torch.equal(matched.state[k], plain.dense[k] * matched.mask[k])


def test_stretch_that_lands_too_dense_prunes_the_smallest_rewind_weights():
    # later units denser than the rest: replicating them makes the stretched ticket denser
    source = ticket("cifar_resnet_20", 0, lambda u: 0.2 if u == 0 else 0.6)
    plain = transform(source, "cifar_resnet_32")
    assert plain.sparsity < source.sparsity - 0.01
    matched = match_sparsity(plain, source.sparsity)
    assert_same_sparsity_to_the_weight(matched, source)
    assert_only_replicable_units_changed(matched, plain)
    keys = adjustable_keys(plain)
    pruned = torch.cat([plain.dense[k][plain.mask[k] & ~matched.mask[k]].abs() for k in keys])
    kept = torch.cat([plain.dense[k][matched.mask[k]].abs() for k in keys])
    assert pruned.numel() == matched.provenance["match_sparsity"]["pruned"] > 0
    assert pruned.max() <= kept.min()
    assert all(not bool((matched.mask[k] & ~plain.mask[k]).any()) for k in keys)  # nothing restored


def test_squeeze_that_lands_too_sparse_restores_the_largest_dense_rewind_weights():
    # later units dense: dropping them leaves a sparser ticket
    source = ticket("cifar_resnet_32", 1, lambda u: 0.3 if u < 3 else 0.9)
    plain = transform(source, "cifar_resnet_20")
    assert plain.sparsity > source.sparsity + 0.01
    matched = match_sparsity(plain, source.sparsity)
    assert_same_sparsity_to_the_weight(matched, source)
    assert_only_replicable_units_changed(matched, plain)
    keys = adjustable_keys(plain)
    restored = torch.cat([plain.dense[k][matched.mask[k] & ~plain.mask[k]].abs() for k in keys])
    still_pruned = torch.cat([plain.dense[k][~matched.mask[k]].abs() for k in keys])
    assert restored.numel() == matched.provenance["match_sparsity"]["restored"] > 0
    assert restored.min() >= still_pruned.max()


def test_mlp_stretch_matches_and_records_its_provenance():
    source = ticket("mlp_2", 2, lambda u: 0.1 if u == 0 else 0.5, shape=(1, 28, 28))
    plain = transform(source, "mlp_3")
    matched = match_sparsity(plain, source.sparsity)
    assert_same_sparsity_to_the_weight(matched, source)
    assert_only_replicable_units_changed(matched, plain)
    record = matched.provenance["match_sparsity"]
    assert record["before"] == pytest.approx(plain.sparsity) and record["after"] == pytest.approx(matched.sparsity)
    assert record["wanted"] == source.sparsity and record["changed"] == ["hidden.1.weight", "hidden.2.weight"]
    assert matched.provenance["plan"] == plain.provenance["plan"]  # the transformation's record is kept


def test_appending_then_matching_is_deterministic():
    # ties everywhere: every rewind weight has the same magnitude
    source = ticket("cifar_resnet_20", 3, lambda u: 0.2 if u == 0 else 0.7)
    source.dense = {k: torch.full_like(v, 0.5) for k, v in source.dense.items()}
    source.state.update({k: source.dense[k] * source.mask[k] for k in source.mask})
    a = match_sparsity(transform(source, "cifar_resnet_32", order="appending"), source.sparsity)
    b = match_sparsity(transform(source, "cifar_resnet_32", order="appending"), source.sparsity)
    assert a.checksum() == b.checksum()
    assert_same_sparsity_to_the_weight(a, source)


def test_restoring_needs_dense_weights():
    source = ticket("cifar_resnet_32", 1, lambda u: 0.3 if u < 3 else 0.9)
    plain = transform(source, "cifar_resnet_20")
    plain.dense = None
    with pytest.raises(TicketError, match="dense rewind weights"):
        match_sparsity(plain, source.sparsity)


def test_cli_match_sparsity(tmp_path, capsys):
    src = tmp_path / "r20.safetensors"
    source = ticket("cifar_resnet_20", 0, lambda u: 0.2 if u == 0 else 0.6)
    save_ticket(source, src)
    out = tmp_path / "r32.safetensors"
    assert cli.main(["transform", str(src), "--to", "cifar_resnet_32", "--match-sparsity", "-o", str(out)]) == 0
    assert "sparsity matched" in capsys.readouterr().out
    written = load_ticket(out)
    assert_same_sparsity_to_the_weight(written, source)
    assert written.provenance["match_sparsity"]["pruned"] > 0
    assert cli.main(["transform", str(src), "--dataset", "cifar10", "--match-sparsity", "-o", str(out)]) == 2
