import json
import tempfile
from pathlib import Path

import pytest

from elth.cli import main
from elth.data import DatasetNotFoundError, load_dataset


@pytest.fixture
def workdir(monkeypatch):
    with tempfile.TemporaryDirectory(prefix="elth-train-cli-") as d:
        monkeypatch.chdir(d)
        yield Path(d)


def train_cli(*args: str) -> int:
    return main(["train", "--no-progress", *args])


def test_smoke_run_writes_outputs_and_a_rerun_reuses_them(workdir, capsys):
    args = ("--model", "mlp_1", "--dataset", "synthetic_1x8x8_n64", "--preset", "smoke", "--seed", "3")
    assert train_cli(*args) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    runs = list((workdir / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("train_mlp_1_synthetic_1x8x8_n64-")
    assert str(runs[0].relative_to(workdir)) in out
    for name in ("checkpoint.pt", "metrics.jsonl", "result.json", "run.json", "hparams.json"):
        assert (runs[0] / name).is_file(), name
    info = json.loads((runs[0] / "run.json").read_text())
    assert info["data_seed"] == 3 and info["protocol"]["length"] == "12it"
    result = json.loads((runs[0] / "result.json").read_text())
    assert result["step"] == 12

    assert train_cli(*args) == 0  # finished: prints the recorded result
    assert capsys.readouterr().out.splitlines()[-2] == out.splitlines()[-2]
    assert len(list((workdir / "runs").iterdir())) == 1

    assert train_cli(*args, "--data-seed", "4") == 0  # other settings, other directory
    assert len(list((workdir / "runs").iterdir())) == 2


def test_overrides_and_explicit_out(workdir, capsys):
    assert train_cli("--model", "cifar_resnet_8", "--dataset", "synthetic_3x8x8_c4_n32", "--length", "1ep3it",
                     "--batch-size", "16", "--lr", "0.02", "--milestones", "1ep", "--warmup", "2it",
                     "--eval-every", "none", "--out", "mine") == 0
    info = json.loads((workdir / "mine" / "run.json").read_text())
    assert info["protocol"] == {"length": "1ep3it", "batch_size": 16, "lr": 0.02, "momentum": 0.9,
                                "weight_decay": 1e-4, "milestones": ["1ep"], "gamma": 0.1, "warmup": "2it",
                                "augment": True}
    assert info["end_step"] == 5
    rows = [json.loads(line) for line in (workdir / "mine" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["test_accuracy"] is not None) for r in rows] == [(2, False), (4, False), (5, True)]
    assert "warning" not in capsys.readouterr().err


def test_a_schedule_that_never_takes_effect_is_a_warning(workdir, capsys):
    """`--epochs` on a preset with later milestones: it trains (as asked) and says the LR never decays."""
    assert train_cli("--model", "mlp_1", "--dataset", "synthetic_1x8x8_n64", "--preset", "short", "--epochs", "2",
                     "--warmup", "3ep") == 0
    assert capsys.readouterr().err.splitlines() == [
        "warning: the batch size 128 is larger than the 64 training examples of synthetic_1x8x8_n64: every step "
        "trains on all of them (one full batch per epoch)",
        "warning: LR milestone(s) 2ep lie at or beyond the end of training (2ep, 2 steps), so the LR is never "
        "decayed there (give --milestones to set them)",
        "warning: the warmup (3ep) is longer than the training (2ep): the LR never reaches its peak 0.1"]


def test_digits_trains_with_nothing_installed(workdir, capsys):
    assert train_cli("--model", "mlp_2", "--dataset", "digits", "--epochs", "3") == 0
    result = json.loads(next((workdir / "runs").glob("train_mlp_2_digits-*/result.json")).read_text())
    assert result["step"] == 36 and result["test_accuracy"] >= 0.8


@pytest.mark.parametrize(
    "args, message",
    [
        (("--epochs", "2", "--length", "5it"), "either --epochs or --length"),
        (("--length", "five"), "cannot read the step count"),
        (("--epochs", "0"), "--epochs"),
        (("--milestones", "1ep,later"), "cannot read the step count"),
        (("--eval-every", "often"), "cannot read the step count"),
        (("--lr", "-1"), "learning rate"),
    ],
)
def test_bad_options_are_one_line_errors(workdir, capsys, args, message):
    assert train_cli("--model", "mlp_1", "--dataset", "digits", *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_unknown_model_and_dataset(workdir, capsys):
    assert train_cli("--model", "resnet_20", "--dataset", "digits") == 2
    assert "unknown model" in capsys.readouterr().err
    assert train_cli("--model", "mlp_1", "--dataset", "cifar100") == 2
    assert "unknown dataset" in capsys.readouterr().err


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--model", "--dataset", "--data-dir", "--preset", "--epochs", "--length", "--lr",
                   "--batch-size", "--milestones", "--warmup", "--seed", "--data-seed", "--precision",
                   "--device", "--eval-every", "--out", "--no-progress", "160ep", "paper", "short", "smoke"):
        assert option in text, option


def test_version_names_elth_and_torch(capsys):
    from importlib.metadata import version

    import elth

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"elth {elth.__version__} (torch {version('torch')})"
    assert version("elth") == elth.__version__  # the package's metadata reads the one definition


@pytest.mark.real_data
def test_real_fashion_mnist_mlp_learns(workdir, capsys):
    try:
        load_dataset("fashion_mnist")
    except DatasetNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")
    assert train_cli("--model", "mlp_2", "--dataset", "fashion_mnist", "--length", "300it", "--out", "fm") == 0
    result = json.loads((workdir / "fm" / "result.json").read_text())
    assert result["step"] == 300 and result["test_accuracy"] >= 0.78
