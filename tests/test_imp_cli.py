"""`elth imp`, `elth inspect` and `elth train-ticket` on synthetic data: outputs, exit codes, errors."""
import json
import re

import pytest

from elth.cli import main

DATASET = "synthetic_1x8x8_n64"
IMP = ["imp", "--model", "mlp_1", "--dataset", DATASET, "--preset", "smoke", "--no-progress"]


@pytest.fixture(scope="module")
def imp_run(tmp_path_factory):
    """An `elth imp` run to level 2, with what it printed."""
    root = tmp_path_factory.mktemp("cli")
    argv = IMP + ["--levels", "2", "--root", str(root)]
    out = run_cli(argv)
    return root, argv, out


def run_cli(argv, code=0) -> str:
    import contextlib
    import io

    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(argv)
    assert rc == code, f"exit status {rc}, stderr: {stderr.getvalue()}"
    return stdout.getvalue() if code == 0 else stderr.getvalue()


def table(out: str) -> list[tuple[int, float, float]]:
    """(level, sparsity %, test accuracy %) rows of `elth imp`'s table."""
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*(\d+)\s+([\d.]+)%\s+[\d,]+\s+([\d.]+)%", line)
        if m:
            rows.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    return rows


def test_imp_prints_a_table_and_writes_tickets(imp_run):
    root, _, out = imp_run
    rows = table(out)
    assert [(r[0], r[1]) for r in rows] == [(0, 0.0), (1, 20.0), (2, 36.0)]
    (run,) = root.glob("imp-*")
    assert f"outputs: {run}/" in out
    for level in range(3):
        assert (run / f"level_{level}" / "ticket.safetensors").is_file()
    summary = json.loads((run / "levels.json").read_text())
    assert [round(100 * s["test_accuracy"], 2) for s in summary] == [r[2] for r in rows]
    assert summary[2]["ticket_path"] == "level_2/ticket.safetensors"


def test_imp_again_reuses_the_run_and_extends_it(imp_run):
    root, argv, out = imp_run
    assert table(run_cli(argv)) == table(out)
    longer = table(run_cli([a if a != "2" else "3" for a in argv]))
    assert longer[:3] == table(out) and longer[3][:2] == (3, 48.8)
    assert len(list(root.glob("imp-*"))) == 1


def test_inspect_text_and_json(imp_run):
    root, _, _ = imp_run
    (ticket,) = root.glob("imp-*/level_2/ticket.safetensors")
    text = run_cli(["inspect", str(ticket)])
    assert "model       mlp_1" in text
    assert re.search(r"provenance  IMP level 2 of run imp-[0-9a-f]{12}", text)
    assert re.search(r"sparsity    36\.00% \(32,128 of 50,200 prunable weights kept\)", text)
    assert re.search(r"fc\.weight\s+1,000\s+1,000\s+0\.00%", text)
    assert "dense       yes: the rewind weights before masking are kept" in text

    info = json.loads(run_cli(["inspect", "--json", str(ticket)]))
    assert {"model", "sparsity", "layers", "dataset", "provenance", "rewind_step", "protocol"} <= set(info)
    assert info["model"] == "mlp_1" and info["sparsity"] == pytest.approx(0.36) and info["has_dense"] is True
    assert info["dataset"]["name"] == DATASET and info["provenance"]["level"] == 2
    assert list(info["layers"]) == ["hidden.0.weight", "bottleneck.weight", "fc.weight"]
    for layer in info["layers"].values():
        assert set(layer) == {"numel", "kept", "sparsity"}
        assert layer["sparsity"] == pytest.approx(1 - layer["kept"] / layer["numel"])
    assert sum(v["kept"] for v in info["layers"].values()) == 32_128


def test_train_ticket_reproduces_the_level_accuracy(imp_run, tmp_path):
    root, _, out = imp_run
    (ticket,) = root.glob("imp-*/level_1/ticket.safetensors")
    text = run_cli(["train-ticket", str(ticket), "--root", str(tmp_path), "--no-progress"])
    accuracy = float(re.search(r"test accuracy ([\d.]+)%", text).group(1))
    assert accuracy == table(out)[1][2]
    assert "the ticket's protocol" in text and len(list(tmp_path.glob("train-*"))) == 1
    other = run_cli(["train-ticket", str(ticket), "--root", str(tmp_path), "--no-progress", "--seed", "5",
                     "--length", "6it"])
    assert "data seed 5" in other and "from step 0 to 6" in other
    assert len(list(tmp_path.glob("train-*"))) == 2


def test_out_still_names_the_store_where_it_used_to_with_a_deprecation_note(imp_run, tmp_path, capsys):
    root, _, _ = imp_run
    (ticket,) = root.glob("imp-*/level_1/ticket.safetensors")
    assert main(["train-ticket", str(ticket), "--out", str(tmp_path), "--length", "2it", "--no-progress"]) == 0
    assert "--out DIR for the run store is deprecated; write --root DIR" in capsys.readouterr().err
    assert len(list(tmp_path.glob("train-*"))) == 1


def test_elth_help_lists_every_command_without_importing_torch():
    import subprocess
    import sys

    code = ("import sys\nfrom elth.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("no torch")
    for command in ("train", "imp", "inspect", "train-ticket", "transform", "prune", "dst", "lmc", "experiment",
                    "report", "demo"):
        assert command in out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--levels", "-1"], "--levels must be >= 0"),
        (["--levels", "1", "--prune-fraction", "1"], "--prune-fraction must be between 0 and 1"),
        (["--levels", "1", "--exclude", "conv9"], "no such prunable weight"),
        (["--levels", "1", "--rewind", "12it"], "not before the end of training"),
        (["--levels", "1", "--rewind", "soon"], "cannot read the step count"),
    ],
)
def test_imp_bad_input_exits_2_with_a_message(tmp_path, extra, message):
    err = run_cli(IMP + ["--root", str(tmp_path)] + extra, code=2)
    assert message in err and err.startswith("elth imp: error:")
    assert "Traceback" not in err
    assert not list(tmp_path.glob("imp-*"))


def test_imp_unknown_model_and_dataset(tmp_path):
    err = run_cli(["imp", "--model", "mlp_x", "--dataset", DATASET, "--levels", "1", "--root", str(tmp_path)], code=2)
    assert "unknown model 'mlp_x'" in err
    err = run_cli(["imp", "--model", "mlp_1", "--dataset", "nope", "--levels", "1", "--root", str(tmp_path)], code=2)
    assert "unknown dataset 'nope'" in err


def test_inspect_and_train_ticket_reject_bad_files(tmp_path, imp_run):
    err = run_cli(["inspect", str(tmp_path / "missing.safetensors")], code=2)
    assert "no such ticket file" in err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 50)
    assert "truncated or corrupted" in run_cli(["inspect", str(bad)], code=2)
    assert "truncated or corrupted" in run_cli(["train-ticket", str(bad)], code=2)
    root, _, _ = imp_run
    (ticket,) = root.glob("imp-*/level_1/ticket.safetensors")
    err = run_cli(["train-ticket", str(ticket), "--dataset", "synthetic", "--root", str(tmp_path)], code=2)
    assert "cannot train on synthetic (input (3, 32, 32), 10 classes)" in err


def test_help_explains_every_option():
    import contextlib
    import io

    for command, options in [
        ("imp", ["--model", "--dataset", "--data-dir", "--levels", "--rewind", "--prune-fraction", "--exclude",
                 "--preset", "--epochs", "--length", "--seed", "--data-seed", "--precision", "--device", "--root",
                 "--no-progress", "1 - 0.8^L"]),
        ("inspect", ["TICKET", "--json", "numel", "kept", "sparsity"]),
        ("train-ticket", ["TICKET", "--dataset", "--data-dir", "--preset", "--epochs", "--seed", "--precision",
                          "--device", "--root", "the ticket's protocol"]),
    ]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main([command, "--help"])
        for option in options:
            assert option in out.getvalue(), (command, option)


@pytest.mark.real_data
def test_real_fashion_mnist_imp(tmp_path):
    from elth.data import DatasetNotFoundError, load_dataset

    try:
        load_dataset("fashion_mnist")
    except DatasetNotFoundError as e:
        pytest.skip(f"Fashion-MNIST is not installed: {e}")
    out = run_cli(["imp", "--model", "mlp_1", "--dataset", "fashion_mnist", "--levels", "1", "--length", "40it",
                   "--no-progress", "--root", str(tmp_path)])
    rows = table(out)
    assert [(r[0], r[1]) for r in rows] == [(0, 0.0), (1, 20.0)]
    assert all(r[2] > 65.0 for r in rows)  # 40 SGD steps already get well past chance (10%)
