"""`elth prune` on synthetic data: output, the written ticket, and error exits."""
from __future__ import annotations

import pytest

from elth.cli import main
from elth.masks import count
from elth.tickets import load_ticket

DATASET = "synthetic_1x8x8_c3_n96"
COMMON = ["--dataset", DATASET, "--preset", "smoke", "--no-progress"]


def _prune(tmp_path, *args):
    return main(["prune", *COMMON, "--root", str(tmp_path / "runs"), *args])


def test_prune_writes_a_ticket_at_the_requested_sparsity(tmp_path, capsys):
    out = tmp_path / "snip.safetensors"
    rc = _prune(tmp_path, "--model", "mlp_1", "--method", "snip", "--sparsity", "73.79%",
                "--score-examples", "2", "-o", str(out))
    assert rc == 0
    text = capsys.readouterr().out
    t = load_ticket(out)
    kept, total = count(t.mask)
    assert kept == total - round(0.7379 * total)
    assert "method: snip" in text
    assert "sparsity: requested 73.7900%, actual" in text
    assert f"({kept:,} of {total:,} weights kept)" in text
    assert "mask time:" in text and "(6 scoring examples)" in text
    assert f"wrote {out}" in text
    assert t.provenance["method"] == "snip" and t.provenance["score_examples"] == 6
    assert t.provenance["options"]["score_examples_per_class"] == 2
    assert t.rewind == "0"  # the paper's default for MLPs


def test_collapse_warning_like_and_reinit_through_the_cli(tmp_path, capsys):
    # One-shot magnitude pruning at 97% on a width-2 ResNet leaves some layers empty.
    source = tmp_path / "mag.safetensors"
    assert _prune(tmp_path, "--model", "cifar_resnet_14_2", "--method", "magnitude", "--sparsity", "0.97",
                  "--rewind", "0", "-o", str(source)) == 0
    like = load_ticket(source)
    assert like.warnings, "expected layer collapse at 97% sparsity"
    assert all(w.startswith("layer collapse: ") for w in like.warnings)
    text = capsys.readouterr().out
    assert all(f"warning: {w}" in text for w in like.warnings)

    out = tmp_path / "reinit.safetensors"
    assert _prune(tmp_path, "--method", "reinit", "--like", str(source), "--seed", "3", "-o", str(out)) == 0
    text = capsys.readouterr().out
    t = load_ticket(out)
    assert t.model == like.model and count(t.mask) == count(like.mask)
    assert t.rewind_step == 0
    assert t.provenance["like"]["path"] == str(source)
    assert t.warnings == like.warnings and all(f"warning: {w}" in text for w in t.warnings)

    out2 = tmp_path / "synflow.safetensors"
    assert _prune(tmp_path, "--model", "cifar_resnet_14_2", "--method", "synflow", "--like", str(source),
                  "--synflow-rounds", "4", "--rewind", "0", "-o", str(out2)) == 0
    assert count(load_ticket(out2).mask) == count(like.mask)
    assert load_ticket(out2).provenance["options"]["synflow_rounds"] == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "mlp_1", "--method", "snip"], "give --sparsity S or --like TICKET"),
        (["--model", "mlp_1", "--method", "reinit", "--sparsity", "0.5"], "needs --like TICKET"),
        (["--model", "mlp_1", "--method", "snip", "--like", "missing.safetensors"], "no such ticket file"),
        (["--model", "resnet_99", "--method", "snip", "--sparsity", "0.5"], "unknown model"),
        (["--method", "snip", "--sparsity", "0.5"], "give --model"),
        (["--model", "mlp_1", "--method", "magnitude", "--sparsity", "0.5", "--exclude", "nosuch"],
         "cannot exclude"),
        (["--model", "mlp_1", "--method", "magnitude", "--sparsity", "0.5", "--rewind", "soon"],
         "cannot read the step count"),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    rc = _prune(tmp_path, *args, "-o", str(tmp_path / "x.safetensors"))
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("elth prune: error:") and message in err
    assert not (tmp_path / "x.safetensors").exists()


@pytest.mark.parametrize("bad", ["1.0", "-0.1", "abc", "120%"])
def test_bad_sparsity_is_rejected_by_the_parser(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as e:
        _prune(tmp_path, "--model", "mlp_1", "--method", "snip", "--sparsity", bad, "-o", "x.safetensors")
    assert e.value.code == 2
    assert "sparsity" in capsys.readouterr().err


def test_sparsity_and_like_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        _prune(tmp_path, "--model", "mlp_1", "--method", "snip", "--sparsity", "0.5", "--like", "t.safetensors",
               "-o", "x.safetensors")
    assert e.value.code == 2


def test_like_supplies_protocol_rewind_and_seeds(tmp_path, capsys):
    source = tmp_path / "mag.safetensors"
    assert _prune(tmp_path, "--model", "cifar_resnet_14_2", "--method", "magnitude", "--sparsity", "0.5",
                  "--rewind", "3it", "--seed", "2", "-o", str(source)) == 0
    like = load_ticket(source)
    out = tmp_path / "snip.safetensors"
    # No --preset, --rewind or --seed: the like-ticket's setting, hence the same rewind weights.
    assert main(["prune", "--method", "snip", "--like", str(source), "--no-progress", "--score-examples", "2",
                 "--root", str(tmp_path / "runs"), "-o", str(out)]) == 0
    t = load_ticket(out)
    assert t.rewind == "3it" and t.rewind_step == 3
    assert t.protocol == like.protocol
    assert t.provenance["seed"] == 2 and t.provenance["data_seed"] == 2
    for k, v in like.state.items():
        if k in like.mask:
            both = like.mask[k] & t.mask[k]
            assert both.any() and (v[both] == t.state[k][both]).all(), k
        else:
            assert (v == t.state[k]).all(), k


def test_a_baseline_like_a_transformed_ticket_takes_the_source_seeds(tmp_path, capsys):
    # The README's typical session: transform a ticket, then prune a baseline --like the new one.
    source = tmp_path / "mag.safetensors"
    assert _prune(tmp_path, "--model", "mlp_2", "--method", "magnitude", "--sparsity", "0.5", "--seed", "2",
                  "-o", str(source)) == 0
    stretched = tmp_path / "m4.safetensors"
    assert main(["transform", str(source), "--to", "mlp_4", "-o", str(stretched), "--seed", "0"]) == 0
    s = load_ticket(stretched).provenance
    assert (s["seed"], s["data_seed"], s["replica_seed"]) == (2, 2, None)
    out = tmp_path / "snip.safetensors"
    assert main(["prune", "--method", "snip", "--like", str(stretched), "--no-progress", "--score-examples", "2",
                 "--root", str(tmp_path / "runs"), "-o", str(out)]) == 0
    t = load_ticket(out)
    assert t.model == "mlp_4" and count(t.mask) == count(load_ticket(stretched).mask)
    assert (t.provenance["seed"], t.provenance["data_seed"]) == (2, 2)


def test_a_baseline_like_a_ticket_that_records_a_null_seed(tmp_path, capsys):
    # Transformed tickets of earlier versions recorded "seed": null; that is no seed, not an error.
    from elth.tickets import save_ticket

    source = tmp_path / "mag.safetensors"
    assert _prune(tmp_path, "--model", "mlp_2", "--method", "magnitude", "--sparsity", "0.5", "-o", str(source)) == 0
    ticket = load_ticket(source)
    ticket.provenance["seed"] = None
    save_ticket(ticket, tmp_path / "null.safetensors")
    out = tmp_path / "snip.safetensors"
    assert main(["prune", "--method", "snip", "--like", str(tmp_path / "null.safetensors"), "--no-progress",
                 "--score-examples", "2", "--root", str(tmp_path / "runs"), "-o", str(out)]) == 0
    assert load_ticket(out).provenance["seed"] == 0
