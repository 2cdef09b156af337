"""The store's shared helpers: the tensor hash keeps the values stores were written with; records read back."""
import pytest
import torch

from elth.files import tensors_hash

TENSORS = {
    "b.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
    "a.mask": torch.tensor([True, False, True]),
    "c": torch.arange(4, dtype=torch.int64),
}


def test_ticket_record_hash_is_the_one_ticket_files_carry():
    # value of the ticket checksum function before the hash functions were merged
    assert tensors_hash(TENSORS) == "cbac722eefe29510fc6f72252a8af76e49c300d95ccd39e828676930923e9a13"


def test_checkpoint_record_hash_is_the_one_checkpoint_keys_carry():
    # value of the checkpoint fingerprint function before the hash functions were merged
    assert tensors_hash(TENSORS, "checkpoint") == "055876767cbe0c3b"


def test_hash_sees_values_names_and_dtypes():
    base = tensors_hash(TENSORS)
    assert tensors_hash({**TENSORS, "c": torch.arange(4, dtype=torch.int32)}) != base
    assert tensors_hash({**TENSORS, "c": torch.tensor([0, 1, 2, 4])}) != base
    assert tensors_hash({("d" if k == "c" else k): v for k, v in TENSORS.items()}) != base


def test_read_record_missing_damaged_and_unusable(tmp_path):
    from elth.errors import ElthError
    from elth.files import read_record

    path = tmp_path / "result.json"
    assert read_record(path) is None
    path.write_text('{"a": 1}')
    assert read_record(path) == {"a": 1} and read_record(path, lambda r: r["a"] + 1) == 2
    with pytest.raises(ElthError, match=r"result.json: a damaged record \(KeyError: 'b'\); delete it to have that "
                                        "work done again"):
        read_record(path, lambda r: r["b"])
    path.write_text('{"a": 1')
    with pytest.raises(ElthError, match=r"result.json: a damaged record \(not JSON\)"):
        read_record(path)


def test_an_attempt_after_a_torn_last_line_starts_a_line_of_its_own(tmp_path):
    from elth.experiments.attempts import read_attempts, record
    from elth.files import ATTEMPTS_FILE

    record(tmp_path, "start")
    with open(tmp_path / ATTEMPTS_FILE, "a") as f:
        f.write('{"event": "finish", "ti')  # a writer killed mid-line
    record(tmp_path, "start", attempt=2)
    lines = (tmp_path / ATTEMPTS_FILE).read_text().splitlines()
    assert len(lines) == 3 and lines[1] == '{"event": "finish", "ti'
    assert [e["event"] for e in read_attempts(tmp_path)] == ["start", "start"]
    assert read_attempts(tmp_path)[1]["attempt"] == 2
