"""Ticket files: round trip, validation of every kind of bad file, atomic writes."""
import json

import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

from elth.data.base import DatasetInfo
from elth.errors import ElthError
from elth.files import tensors_hash
from elth.masks import eligible_names, full_mask, magnitude_prune
from elth.models import build_model
from elth.tickets import (
    Ticket,
    TicketError,
    check_dataset,
    from_model,
    load_ticket,
    save_ticket,
    validate,
)

INFO = DatasetInfo("digits", (1, 8, 8), 10)


def make_ticket(model_name="mlp_1", seed=0, fraction=0.5) -> Ticket:
    model = build_model(model_name, INFO.input_shape, INFO.num_classes, seed=seed)
    mask = magnitude_prune(dict(model.named_parameters()), full_mask(model), fraction, eligible_names(model))
    return from_model(
        model, INFO, mask, rewind_step=7, rewind="7it",
        protocol={"length": "2ep", "batch_size": 128},
        provenance={"method": "imp", "level": 3, "description": "IMP level 3 of run imp-test"},
    )


def write_raw(path, tensors, meta):
    """A ticket-like file with chosen tensors and metadata (checksum recomputed unless given)."""
    meta = dict(meta)
    meta.setdefault("checksum", tensors_hash(tensors))
    save_file(tensors, str(path), metadata={"elth": json.dumps(meta)})


def test_round_trip(tmp_path):
    ticket = make_ticket()
    path = save_ticket(ticket, tmp_path / "sub" / "t.safetensors")
    back = load_ticket(path)
    assert back.model == "mlp_1" and back.dataset == INFO
    assert (back.rewind_step, back.rewind) == (7, "7it")
    assert back.protocol == ticket.protocol and back.provenance == ticket.provenance
    assert list(back.state) == list(ticket.state) and list(back.mask) == list(ticket.mask)
    for k in ticket.state:
        assert torch.equal(back.state[k], ticket.state[k])
    for k in ticket.mask:
        assert back.mask[k].dtype == torch.bool and torch.equal(back.mask[k], ticket.mask[k])
    assert back.sparsity == pytest.approx(ticket.sparsity)
    assert back.content_hash() == ticket.content_hash()
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["t.safetensors"]


def test_build_gives_the_masked_rewind_weights():
    ticket = make_ticket()
    model = ticket.build()
    for k, v in model.state_dict().items():
        assert torch.equal(v, ticket.state[k])
    weights = dict(model.named_parameters())
    for k, m in ticket.mask.items():
        assert bool((weights[k][~m] == 0).all())


def test_content_hash_follows_weights_not_provenance():
    a, b = make_ticket(), make_ticket()
    b.provenance = {"method": "other"}
    assert a.content_hash() == b.content_hash()
    assert make_ticket(seed=1).content_hash() != a.content_hash()
    c = make_ticket()
    c.rewind_step = 8
    assert c.content_hash() != a.content_hash()


def test_save_refuses_nonzero_pruned_weights(tmp_path):
    ticket = make_ticket()
    k = "hidden.0.weight"
    ticket.state[k] = ticket.state[k].clone()
    ticket.state[k][~ticket.mask[k]] = 1.0
    with pytest.raises(TicketError, match="non-zero where the mask prunes"):
        save_ticket(ticket, tmp_path / "t.safetensors")
    assert not (tmp_path / "t.safetensors").exists()


def test_crash_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    dest = tmp_path / "t.safetensors"

    def crashing_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 100)  # half a file...
        raise OSError("disk full")  # ...then the process dies

    monkeypatch.setattr(safetensors.torch, "save_file", crashing_save_file)
    with pytest.raises(OSError):
        save_ticket(make_ticket(), dest)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.undo()
    old = make_ticket(seed=0)
    save_ticket(old, dest)
    monkeypatch.setattr(safetensors.torch, "save_file", crashing_save_file)
    with pytest.raises(OSError):
        save_ticket(make_ticket(seed=1), dest)
    assert [p.name for p in tmp_path.iterdir()] == ["t.safetensors"]
    assert load_ticket(dest).content_hash() == old.content_hash()


def test_missing_file(tmp_path):
    with pytest.raises(TicketError, match="no such ticket file"):
        load_ticket(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, 0.99])
def test_truncated_file(tmp_path, keep):
    path = save_ticket(make_ticket(), tmp_path / "t.safetensors")
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])
    with pytest.raises(TicketError, match="truncated or corrupted"):
        load_ticket(path)


def test_garbage_file(tmp_path):
    path = tmp_path / "t.safetensors"
    path.write_bytes(b"this is not a ticket at all" * 10)
    with pytest.raises(TicketError):
        load_ticket(path)


def test_corrupted_tensor_bytes(tmp_path):
    path = save_ticket(make_ticket(), tmp_path / "t.safetensors")
    data = bytearray(path.read_bytes())
    data[-1000] ^= 0x40  # flip one bit of some weight
    path.write_bytes(bytes(data))
    with pytest.raises(TicketError, match="checksum"):
        load_ticket(path)


def test_plain_safetensors_without_metadata(tmp_path):
    path = tmp_path / "t.safetensors"
    save_file({"x": torch.zeros(3)}, str(path))
    with pytest.raises(TicketError, match="without elth ticket metadata"):
        load_ticket(path)


@pytest.mark.parametrize("key", ["model", "dataset", "rewind_step", "provenance", "protocol", "checksum"])
def test_missing_metadata(tmp_path, key):
    ticket = make_ticket()
    meta = ticket.metadata()
    del meta[key]
    path = tmp_path / "t.safetensors"
    save_file(ticket.file_tensors(), str(path), metadata={"elth": json.dumps(meta)})
    with pytest.raises(TicketError, match=f"lacks {key}"):
        load_ticket(path)


def test_malformed_metadata(tmp_path):
    ticket = make_ticket()
    path = tmp_path / "t.safetensors"
    save_file(ticket.file_tensors(), str(path), metadata={"elth": "{broken json"})
    with pytest.raises(TicketError, match="malformed"):
        load_ticket(path)
    meta = ticket.metadata()
    meta["dataset"] = {"name": "x"}
    write_raw(path, ticket.file_tensors(), meta)
    with pytest.raises(TicketError, match="malformed"):
        load_ticket(path)


def test_other_model_than_the_weights(tmp_path):
    ticket = make_ticket("mlp_1")
    meta = ticket.metadata()
    meta["model"] = "mlp_2"
    path = tmp_path / "t.safetensors"
    write_raw(path, ticket.file_tensors(), meta)
    with pytest.raises(TicketError, match="do not match mlp_2"):
        load_ticket(path)


def test_other_dataset_shape_than_the_weights(tmp_path):
    ticket = make_ticket("mlp_1")
    meta = ticket.metadata()
    meta["dataset"] = {"name": "cifar10", "input_shape": [3, 32, 32], "num_classes": 10}
    path = tmp_path / "t.safetensors"
    write_raw(path, ticket.file_tensors(), meta)
    with pytest.raises(TicketError, match="hidden.0.weight: shape"):
        load_ticket(path)


def test_unknown_model(tmp_path):
    ticket = make_ticket()
    meta = ticket.metadata()
    meta["model"] = "transformer_9"
    path = tmp_path / "t.safetensors"
    write_raw(path, ticket.file_tensors(), meta)
    with pytest.raises(TicketError, match="unknown model"):
        load_ticket(path)


def test_non_binary_mask(tmp_path):
    ticket = make_ticket()
    tensors = ticket.file_tensors()
    tensors["mask.hidden.0.weight"] = tensors["mask.hidden.0.weight"].clone()
    tensors["mask.hidden.0.weight"][0, 0] = 2
    path = tmp_path / "t.safetensors"
    write_raw(path, tensors, ticket.metadata() | {"checksum": tensors_hash(tensors)})
    with pytest.raises(TicketError, match="not binary"):
        load_ticket(path)


def test_missing_mask_tensor(tmp_path):
    ticket = make_ticket()
    tensors = ticket.file_tensors()
    del tensors["mask.bottleneck.weight"]
    path = tmp_path / "t.safetensors"
    write_raw(path, tensors, ticket.metadata() | {"checksum": tensors_hash(tensors)})
    with pytest.raises(TicketError, match="mask does not cover"):
        load_ticket(path)


def test_pruned_weight_not_zero_in_file(tmp_path):
    ticket = make_ticket()
    tensors = ticket.file_tensors()
    w = tensors["state.hidden.0.weight"].clone()
    w[~ticket.mask["hidden.0.weight"]] = 0.5
    tensors["state.hidden.0.weight"] = w
    path = tmp_path / "t.safetensors"
    write_raw(path, tensors, ticket.metadata() | {"checksum": tensors_hash(tensors)})
    with pytest.raises(TicketError, match="non-zero where the mask prunes"):
        load_ticket(path)


def test_sparsity_metadata_must_match_the_mask(tmp_path):
    ticket = make_ticket()
    path = tmp_path / "t.safetensors"
    write_raw(path, ticket.file_tensors(), ticket.metadata() | {"sparsity": 0.1})
    with pytest.raises(TicketError, match="metadata says sparsity"):
        load_ticket(path)


@pytest.mark.parametrize("field, value, says", [
    ("sparsity", "lots", 'sparsity = "lots", not a number'),
    ("sparsity", True, "sparsity = true, not a number"),
    ("rewind_step", "3", 'rewind_step = "3", not an integer'),
    ("version", 2.0, "version = 2.0, not an integer"),
    ("model", 5, "model = 5, not a string"),
    ("rewind", 7, "rewind = 7, not a string"),
    ("warnings", "abc", 'warnings = "abc", not a list of strings'),
    ("layer_sparsity", {"fc.weight": "x"}, "layer_sparsity = {\"fc.weight\": \"x\"}, not an object of numbers"),
    ("provenance", [], "provenance = [], not an object"),
    ("protocol", "paper", 'protocol = "paper", not an object'),
    ("dataset", {"name": 3, "input_shape": [1, 8, 8], "num_classes": 10}, "name must be a non-empty string, not 3"),
    ("dataset", {"name": "d", "input_shape": "abc", "num_classes": 10}, "input_shape must be three positive integers"),
    ("dataset", {"name": "d", "input_shape": [1, -8, 8], "num_classes": 10}, "input_shape must be three positive"),
    ("dataset", {"name": "d", "input_shape": [1, 8, 8], "num_classes": "ten"}, "num_classes must be a positive integer"),
])
def test_metadata_of_the_wrong_type_is_refused_naming_the_field(tmp_path, field, value, says):
    # The checksum covers the tensors, so such a file passes it: every field's type is checked on load.
    ticket = make_ticket()
    path = tmp_path / "t.safetensors"
    write_raw(path, ticket.file_tensors(), ticket.metadata() | {field: value})
    with pytest.raises(TicketError) as e:
        load_ticket(path)
    assert str(path) in str(e.value) and says in str(e.value)


def test_non_finite_weights_are_rejected():
    ticket = make_ticket()
    ticket.state["hidden.0.bias"] = ticket.state["hidden.0.bias"].clone()
    ticket.state["hidden.0.bias"][0] = float("nan")
    with pytest.raises(TicketError, match="not all finite"):
        validate(ticket)


def test_errors_are_user_errors_naming_the_file(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"")
    with pytest.raises(ElthError, match="bad.safetensors"):
        load_ticket(path)


def test_dataset_compatibility():
    ticket = make_ticket()
    check_dataset(ticket, DatasetInfo("synthetic_1x8x8", (1, 8, 8), 10))  # same shape and classes: fine
    with pytest.raises(TicketError, match="cannot train on cifar10"):
        check_dataset(ticket, DatasetInfo("cifar10", (3, 32, 32), 10))
    with pytest.raises(TicketError, match="100 classes"):
        check_dataset(ticket, DatasetInfo("other", (1, 8, 8), 100))


def test_resnet_ticket_round_trip_keeps_buffers(tmp_path):
    model = build_model("cifar_resnet_8", seed=0)
    model.bn.running_mean.add_(1.5)
    mask = magnitude_prune(dict(model.named_parameters()), full_mask(model), 0.2, eligible_names(model))
    ticket = from_model(model, DatasetInfo("cifar10", (3, 32, 32), 10), mask)
    back = load_ticket(save_ticket(ticket, tmp_path / "r.safetensors"))
    assert torch.equal(back.state["bn.running_mean"], model.bn.running_mean)
    assert back.state["bn.num_batches_tracked"].dtype == torch.int64


# --- dense rewind weights ---------------------------------------------------------------------------

def test_from_model_keeps_the_dense_rewind_weights():
    model = build_model("mlp_1", INFO.input_shape, INFO.num_classes, seed=0)
    ticket = make_ticket()
    assert ticket.has_dense and list(ticket.dense) == list(ticket.mask)
    weights = dict(model.named_parameters())
    for k, m in ticket.mask.items():
        assert torch.equal(ticket.dense[k], weights[k].detach())
        assert bool((ticket.dense[k][~m] != 0).all())  # pruned positions keep their real values
    assert from_model(model, INFO, ticket.mask, keep_dense=False).dense is None


def test_round_trip_with_dense(tmp_path):
    ticket = make_ticket()
    back = load_ticket(save_ticket(ticket, tmp_path / "t.safetensors"))
    assert back.has_dense and list(back.dense) == list(ticket.mask)
    for k, d in ticket.dense.items():
        assert back.dense[k].dtype == d.dtype and torch.equal(back.dense[k], d)
    assert back.checksum() == ticket.checksum() and back.content_hash() == ticket.content_hash()
    assert back.summary()["has_dense"] is True


def test_dense_weights_are_in_the_checksum_but_not_the_content_hash(tmp_path):
    with_dense = make_ticket()
    without = make_ticket()
    without.dense = None
    assert with_dense.checksum() != without.checksum()
    assert with_dense.content_hash() == without.content_hash()  # both train the same
    path = save_ticket(with_dense, tmp_path / "t.safetensors")
    data = bytearray(path.read_bytes())
    header_size = int.from_bytes(data[:8], "little")
    start, _ = json.loads(data[8:8 + header_size])["dense.hidden.0.weight"]["data_offsets"]
    data[8 + header_size + start + 2] ^= 0x40  # one bit of one dense weight
    path.write_bytes(bytes(data))
    with pytest.raises(TicketError, match="checksum"):
        load_ticket(path)


def test_old_ticket_without_dense_still_loads(tmp_path):
    ticket = make_ticket()
    ticket.dense = None
    tensors = ticket.file_tensors()
    assert not any(k.startswith("dense.") for k in tensors)
    path = tmp_path / "old.safetensors"
    write_raw(path, tensors, ticket.metadata() | {"version": 1})
    back = load_ticket(path)
    assert back.dense is None and not back.summary()["has_dense"]
    assert back.content_hash() == make_ticket().content_hash()


def _drop_a_layer(dense, mask):
    del dense["hidden.0.weight"]


def _wrong_shape(dense, mask):
    dense["hidden.0.weight"] = dense["hidden.0.weight"][:, :-1].clone()


def _wrong_dtype(dense, mask):
    dense["fc.weight"] = dense["fc.weight"].double()


def _not_finite(dense, mask):
    dense["hidden.0.weight"].view(-1)[0] = float("inf")


def _differs_where_kept(dense, mask):
    k = "hidden.0.weight"
    kept_position = int(mask[k].view(-1).nonzero()[0])
    dense[k].view(-1)[kept_position] += 1e-3


@pytest.mark.parametrize(
    "spoil, fragment",
    [(_drop_a_layer, "dense weights do not cover"), (_wrong_shape, "have shape"),
     (_wrong_dtype, "are torch.float64"), (_not_finite, "not all finite"),
     (_differs_where_kept, "differ from the weights where the mask keeps them")],
)
def test_validation_of_dense_weights(spoil, fragment):
    ticket = make_ticket()
    ticket.dense = {k: v.clone() for k, v in ticket.dense.items()}
    spoil(ticket.dense, ticket.mask)
    with pytest.raises(TicketError, match=fragment):
        validate(ticket)


def test_dense_weights_may_differ_from_zero_only_where_pruned():
    ticket = make_ticket()
    k = "hidden.0.weight"
    dense = ticket.dense[k].clone()
    dense[~ticket.mask[k]] = 123.0  # any value where pruned: the mask does not select it
    ticket.dense[k] = dense
    validate(ticket)


def test_file_with_dense_disagreeing_with_state_is_rejected(tmp_path):
    ticket = make_ticket()
    tensors = ticket.file_tensors()
    k = "hidden.0.weight"
    d = tensors[f"dense.{k}"].clone()
    d[ticket.mask[k]] += 1.0
    tensors[f"dense.{k}"] = d
    path = tmp_path / "t.safetensors"
    write_raw(path, tensors, ticket.metadata() | {"checksum": tensors_hash(tensors)})
    with pytest.raises(TicketError, match="differ from the weights where the mask keeps them"):
        load_ticket(path)
