"""Run directories named by a hash of their hparams: stable names, reuse, mismatch detection, atomic writes."""
import json

import pytest

from elth.errors import ElthError
from elth.files import atomic_path, write_json_atomic
from elth.runs import hparams_hash, run_dir


def test_hash_is_stable_and_canonical():
    a = {"model": "mlp_2", "protocol": {"lr": 0.1, "milestones": ("80ep", "120ep")}, "seed": 0}
    b = {"seed": 0, "protocol": {"milestones": ["80ep", "120ep"], "lr": 0.1}, "model": "mlp_2"}
    assert hparams_hash(a) == hparams_hash(b)
    assert len(hparams_hash(a)) == 12 and int(hparams_hash(a), 16) >= 0
    # The scheme is part of the on-disk format: changing it would orphan every existing run.
    assert hparams_hash({"a": 1}) == "015abd7f5cc5"


@pytest.mark.parametrize("change", [{"seed": 1}, {"model": "mlp_3"}, {"protocol": {"lr": 0.2}}])
def test_hash_changes_with_any_value(change):
    base = {"model": "mlp_2", "seed": 0, "protocol": {"lr": 0.1}}
    assert hparams_hash(base) != hparams_hash({**base, **change})


def test_hash_rejects_non_json_values():
    with pytest.raises(TypeError):
        hparams_hash({"x": object()})
    with pytest.raises(TypeError):
        hparams_hash({"x": float("nan")})


def test_run_dir_creates_records_and_reuses(tmp_path):
    hp = {"model": "mlp_2", "seed": 3}
    d = run_dir(tmp_path, "imp", hp)
    assert d == tmp_path / f"imp-{hparams_hash(hp)}" and d.is_dir()
    assert json.loads((d / "hparams.json").read_text()) == hp
    (d / "marker").write_text("finished work")
    assert run_dir(tmp_path, "imp", dict(reversed(list(hp.items())))) == d
    assert (d / "marker").read_text() == "finished work"
    assert run_dir(tmp_path, "train", hp) != d


def test_run_dir_detects_a_directory_made_with_other_hparams(tmp_path):
    hp = {"model": "mlp_2", "seed": 3}
    d = run_dir(tmp_path, "imp", hp)
    (d / "hparams.json").write_text(json.dumps({"model": "mlp_2", "seed": 4}))
    with pytest.raises(ElthError, match="different hparams"):
        run_dir(tmp_path, "imp", hp)
    (d / "hparams.json").write_text("{not json")
    with pytest.raises(ElthError, match="unreadable"):
        run_dir(tmp_path, "imp", hp)


def test_run_dir_rejects_bad_kind(tmp_path):
    with pytest.raises(ValueError):
        run_dir(tmp_path, "../x", {})


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path):
    target = tmp_path / "summary.json"
    write_json_atomic(target, {"levels": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"levels": 2, "trunc')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"levels": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
    write_json_atomic(target, {"levels": 2})
    assert json.loads(target.read_text()) == {"levels": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
