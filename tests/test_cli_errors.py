"""Every bad input to the `elth` CLI: exit status 2, one line on stderr, no traceback, nothing written or printed.

Each case runs the real CLI in its own process (`cli_runner.py` forks one per case after a single
torch import) in a fresh copy of a workspace holding a ticket, a regular file `afile`, an empty
directory `adir`, crafted tickets with unusable settings and results tables.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from elth.cli import main
from elth.data import dataset_info
from elth.experiments.results import Row, write_results
from elth.masks import full_mask
from elth.models import build_model
from elth.tickets import from_model, save_ticket
from elth.training import preset

HUGE = str(2**70)
LONG = "x" * 300
SMOKE = ["--preset", "smoke", "--no-progress"]
MLP = ["--model", "mlp_2", "--dataset", "digits", *SMOKE]
PRUNE = ["prune", *MLP, "--method", "magnitude", "--sparsity", "0.5"]
DST = ["dst", "--method", "rigl", *MLP, "--sparsity", "0.5"]
TRAIN_TICKET = ["train-ticket", "t.safetensors", *SMOKE]
TRANSFORM = ["transform", "t.safetensors", "--to", "mlp_3"]
LMC = ["lmc", "t.safetensors", *SMOKE, "--points", "3"]
EXPERIMENT = ["experiment", "smoke", "--scale", "smoke", "--no-progress"]
DEMO = ["demo", "--dataset", "digits", "--no-progress"]
NOT_A_DIR = "afile is a file, not a directory"

#: (case, argv, text the one error line must contain)
CASES = [
    # output paths: a parent that is a file, a file where a directory goes, a directory where a
    # file goes, a name too long for the file system, for every command that writes
    ("train --out under a file", ["train", *MLP, "--out", "afile/run"], NOT_A_DIR),
    ("train --out is a file", ["train", *MLP, "--out", "afile"], "is a file, not a directory"),
    ("train --out name too long", ["train", *MLP, "--out", LONG], "longer than 255 bytes"),
    ("train --root under a file", ["train", *MLP, "--root", "afile/r"], NOT_A_DIR),
    ("imp --root under a file", ["imp", *MLP, "--levels", "1", "--root", "afile/r"], NOT_A_DIR),
    ("imp --root name too long", ["imp", *MLP, "--levels", "1", "--root", LONG], "longer than"),
    ("train-ticket --root under a file", [*TRAIN_TICKET, "--root", "afile/r"], NOT_A_DIR),
    ("train-ticket --root name too long", [*TRAIN_TICKET, "--root", LONG], "longer than"),
    ("transform -o under a file", [*TRANSFORM, "-o", "afile/x.safetensors"], NOT_A_DIR),
    ("transform -o a directory", [*TRANSFORM, "-o", "adir"], "adir: is a directory"),
    ("transform -o name too long", [*TRANSFORM, "-o", LONG + ".safetensors"], "longer than"),
    ("prune -o under a file", [*PRUNE, "-o", "afile/x.safetensors"], NOT_A_DIR),
    ("prune -o a directory", [*PRUNE, "-o", "adir"], "adir: is a directory"),
    ("prune --root under a file", [*PRUNE, "--root", "afile/r", "-o", "x.safetensors"], NOT_A_DIR),
    ("dst --root under a file", [*DST, "--root", "afile/r"], NOT_A_DIR),
    ("lmc --root under a file", [*LMC, "--root", "afile/r"], NOT_A_DIR),
    ("lmc --out under a file", [*LMC, "--out", "afile/r"], NOT_A_DIR),
    ("experiment --root under a file", [*EXPERIMENT, "--root", "afile/r"], NOT_A_DIR),
    ("experiment --out under a file", [*EXPERIMENT, "--out", "afile/r"], NOT_A_DIR),
    ("report --out under a file", ["report", "res", "--out", "afile/r"], NOT_A_DIR),
    ("demo --root under a file", [*DEMO, "--root", "afile/r"], NOT_A_DIR),
    ("demo --out under a file", [*DEMO, "--out", "afile/r"], NOT_A_DIR),
    # hyperparameters that are not finite or out of range
    ("train --lr inf", ["train", *MLP, "--lr", "inf"], "learning rate must be a finite number"),
    ("train --lr nan", ["train", *MLP, "--lr", "nan"], "learning rate must be a finite number"),
    ("train --lr 0", ["train", *MLP, "--lr", "0"], "learning rate must be above 0"),
    ("imp --lr inf", ["imp", *MLP, "--levels", "1", "--lr", "inf"], "finite"),
    ("train-ticket --lr inf", [*TRAIN_TICKET, "--lr", "inf"], "finite"),
    ("prune --lr inf", [*PRUNE, "--lr", "inf", "-o", "x.safetensors"], "finite"),
    ("dst --lr inf", [*DST, "--lr", "inf"], "finite"),
    ("lmc --lr inf", [*LMC, "--lr", "inf"], "finite"),
    ("train --batch-size 0", ["train", *MLP, "--batch-size", "0"], "batch size must be a positive integer"),
    ("imp --prune-fraction nan", ["imp", *MLP, "--levels", "1", "--prune-fraction", "nan"], "--prune-fraction"),
    ("imp --prune-fraction 1", ["imp", *MLP, "--levels", "1", "--prune-fraction", "1"], "--prune-fraction"),
    ("imp --levels -1", ["imp", *MLP, "--levels", "-1"], "--levels"),
    ("prune --sparsity nan", ["prune", *MLP, "--method", "magnitude", "--sparsity", "nan", "-o", "x.safetensors"],
     "sparsity must be"),
    ("lmc --points 1", [*LMC[:-1], "1"], "at least 2 points"),
    # step counts
    ("train --length 0it", ["train", *MLP, "--length", "0it"], "training length must be at least one step"),
    ("train --length 0", ["train", *MLP, "--length", "0"], "training length must be at least one step"),
    # a value starting with '-' reaches its own check (argparse alone: "expected one argument")
    ("train --length -5it", ["train", *MLP, "--length", "-5it"], "cannot read the step count '-5it'"),
    ("imp --warmup -2ep", ["imp", *MLP, "--levels", "1", "--warmup", "-2ep"], "cannot read the step count '-2ep'"),
    ("train --epochs 0", ["train", *MLP, "--epochs", "0"], "--epochs must be at least 1"),
    ("train --eval-every 0it", ["train", *MLP, "--eval-every", "0it"], "--eval-every must be a positive number"),
    ("dst --eval-every 0ep", [*DST, "--eval-every", "0ep"], "--eval-every must be a positive number"),
    # seeds
    ("train --seed 2**70", ["train", *MLP, "--seed", HUGE], "seeds are integers from 0 to 4294967295"),
    ("train --seed -1", ["train", *MLP, "--seed", "-1"], "seeds are integers"),
    ("train --data-seed 2**70", ["train", *MLP, "--data-seed", HUGE], "seeds are integers"),
    ("imp --seed 2**70", ["imp", *MLP, "--levels", "1", "--seed", HUGE], "seeds are integers"),
    ("prune --seed 2**70", [*PRUNE, "--seed", HUGE, "-o", "x.safetensors"], "seeds are integers"),
    ("dst --seed 2**70", [*DST, "--seed", HUGE], "seeds are integers"),
    ("train-ticket --seed 2**70", [*TRAIN_TICKET, "--seed", HUGE], "seeds are integers"),
    ("transform --seed 2**70", [*TRANSFORM, "--random-replicas", "--seed", HUGE, "-o", "y.safetensors"],
     "seeds are integers"),
    ("lmc --seeds 0,2**70", [*LMC, "--seeds", f"0,{HUGE}"], "must be an integer from 0 to 4294967295"),
    # model sizes
    ("train mlp_100000000", ["train", "--model", "mlp_100000000", "--dataset", "digits", *SMOKE],
     "has 100,000,000 units"),
    ("train cifar_resnet_20_100000", ["train", "--model", "cifar_resnet_20_100000", "--dataset", "digits", *SMOKE],
     "elth builds models of at most 1,000,000,000"),
    # tickets whose recorded settings cannot be used
    ("train-ticket: recorded lr Infinity", ["train-ticket", "lr_inf.safetensors", *SMOKE], "not a number JSON allows"),
    ("inspect: recorded lr 1e999", ["inspect", "lr_huge.safetensors"], "learning rate must be a finite number"),
    ("inspect: rewind step 2.5", ["inspect", "step_frac.safetensors"], "rewind_step = 2.5, not an integer"),
    ("train-ticket: recorded data seed 2**70", ["train-ticket", "seed_huge.safetensors", *SMOKE],
     "the recorded data seed must be an integer"),
    ("inspect a directory", ["inspect", "adir"], "adir: is a directory, not a ticket file"),
    ("report: broken line 3", ["report", "broken"], "results.jsonl, line 3: unreadable results row"),
    ("report --index of a missing folder", ["report", "--index", "nowhere"], "nowhere: no such directory"),
    ("import-open-lth of a file", ["import-open-lth", "afile", "--out", "imported"], "afile: a file, not a directory"),
    ("transform --dataset unknown, checked first", [*TRANSFORM, "--dataset", "cifar11", "-o", "y.safetensors"],
     "unknown dataset 'cifar11'"),
    ("report: damaged experiment.json", ["report", "badmeta"],
     "experiment.json: a damaged record (not JSON); write it again with `elth experiment NAME --report-only`"),
    # argument problems
    ("train --lr x", ["train", *MLP, "--lr", "x"], "argument --lr: invalid float value"),
    ("train without --dataset", ["train", "--model", "mlp_2"], "required: --dataset"),
    ("unknown command", ["trian"], "invalid choice: 'trian'"),
    ("train --data-dir that does not exist", ["train", *MLP, "--data-dir", "nowhere"],
     "argument --data-dir: nowhere does not exist"),
    ("dst --data-dir a file", [*DST, "--data-dir", "afile"], "argument --data-dir: afile is not a folder"),
    ("experiment --status --report-only", [*EXPERIMENT, "--status", "--report-only"],
     "argument --report-only: not allowed with argument --status"),
    ("experiment --list --dry-run", [*EXPERIMENT, "--list", "--dry-run"],
     "argument --dry-run: not allowed with argument --list"),
    ("experiment --report-only, nothing finished", [*EXPERIMENT, "--report-only", "--root", "empty"],
     "nothing to report: no run of smoke (smoke) is finished in empty"),
    ("experiment --workers 0", [*EXPERIMENT, "--workers", "0"], "--workers must be at least 1"),
    ("experiment --seeds 0", [*EXPERIMENT, "--seeds", "0"], "--seeds must be from 1 to 100, got 0"),
    ("experiment --seeds 101", [*EXPERIMENT, "--seeds", "101"], "--seeds must be from 1 to 100, got 101"),
    ("experiment --nproc 2 --workers 2", [*EXPERIMENT, "--nproc", "2", "--workers", "2"],
     "--workers run trainings side by side in other processes; with several ranks"),
    ("experiment --nproc 2 --launcher slurm", [*EXPERIMENT, "--nproc", "2", "--launcher", "slurm"],
     "--launcher slurm run trainings side by side"),
    ("experiment --lease-timeout -5", [*EXPERIMENT, "--lease-timeout", "-5"], "--lease-timeout must be at least 1, got -5.0"),
    ("experiment --lease-timeout nan", [*EXPERIMENT, "--lease-timeout", "nan"], "--lease-timeout must be a finite number"),
    ("dst --sparsity 0.99999", [*DST[:-1], "0.99999"], "dense (excluded) layers alone hold more than 0.001% of"),
    ("imp --levels 1000", ["imp", *MLP, "--levels", "1000"],
     "IMP cannot reach level 1000 of mlp_2: level 23 would prune into the 1,000 weights of the excluded layers"),
    ("dst --multiplier 101", [*DST, "--multiplier", "101"], "length multiplier must be a whole number from 1 to 100"),
    ("an option the command lacks", [*TRANSFORM, "--strategy", "x"],
     "elth transform: error: unrecognized arguments: --strategy x (see elth transform --help)"),
    ("a misspelt option", ["train", *MLP, "--lrr", "0.1"],
     "elth train: error: unrecognized arguments: --lrr 0.1; did you mean --lr? (see elth train --help)"),
    ("a misspelt required option", ["train", "--modle", "mlp_2", "--dataset", "digits"],
     "required: --model (--modle is not an option of elth train; did you mean --model?)"),
    ("unknown model", ["train", "--model", "mlp_x", "--dataset", "digits"], "unknown model 'mlp_x'"),
    # digits other than 0-9 (Python's int() and \\d take them; names and run kinds do not)
    ("train mlp_\u0661 (an Arabic-Indic digit)", ["train", "--model", "mlp_\u0661", "--dataset", "digits", *SMOKE],
     "unknown model 'mlp_\u0661'"),
    ("train --length \u0661ep", ["train", *MLP, "--length", "\u0661ep"], "cannot read the step count '\u0661ep'"),
    # ticket metadata of the wrong type (the checksum covers the tensors only)
    ("inspect: sparsity 'lots'", ["inspect", "sparsity_lots.safetensors"],
     'sparsity_lots.safetensors: ticket metadata has sparsity = "lots", not a number'),
    ("transform: sparsity 'lots'", ["transform", "sparsity_lots.safetensors", "--to", "mlp_3", "-o", "y.safetensors"],
     'ticket metadata has sparsity = "lots", not a number'),
    ("inspect: dataset classes 'ten'", ["inspect", "classes_ten.safetensors"],
     "a dataset's num_classes must be a positive integer, not 'ten'"),
    # 0 classes once built a model with zero-element layers: torch's warnings, then a shape message
    ("inspect: dataset of 0 classes", ["inspect", "classes_zero.safetensors"],
     "a dataset's num_classes must be a positive integer, not 0"),
    # results with numbers that are not finite
    ("report: a NaN accuracy", ["report", "nan_accuracy"],
     "results.jsonl, line 1: unreadable results row (accuracy = nan is not a finite number)"),
    ("report: an Infinity sparsity in results.csv", ["report", "inf_sparsity"],
     "results.csv, line 3: unreadable results row (sparsity = 'Infinity' is not a finite number)"),
    ("report: an accuracy of 7", ["report", "big_accuracy"], "line 1: unreadable results row (accuracy = 7 is not a fraction in [0, 1])"),
    ("transform --block-mapping that leaves a unit empty", [*TRANSFORM, "--block-mapping", "0:0;2:3", "-o", "y.safetensors"],
     "--block-mapping '0:0;2:3': target unit(s) 1, 2 of stage 1 are filled by no source unit"),
    # places nothing can be written in, though permissions allow it (root in /proc)
    ("experiment --out in /proc", [*EXPERIMENT, "--root", "store", "--out", "/proc/elth-x"],
     "--out /proc/elth-x: cannot write in /proc"),
    ("transform -o in /proc", [*TRANSFORM, "-o", "/proc/elth-x.safetensors"],
     "-o /proc/elth-x.safetensors: cannot write in /proc"),
]


def _write_ticket_with(path: Path, source: Path, change) -> None:
    """A copy of the ticket at `source` whose metadata JSON text went through `change` (checksum intact)."""
    with safe_open(str(source), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(path), metadata={"elth": change(meta["elth"])})


def _meta_edit(edit):
    def change(text: str) -> str:
        meta = json.loads(text)
        edit(meta)
        return json.dumps(meta)
    return change


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cli-errors")
    info = dataset_info("digits")
    model = build_model("mlp_2", info.input_shape, info.num_classes, seed=0)
    protocol = preset("smoke", "digits", "mlp_2").to_dict()
    save_ticket(from_model(model, info, full_mask(model), protocol=protocol, provenance={"data_seed": 0}),
                d / "t.safetensors")
    src = d / "t.safetensors"
    _write_ticket_with(d / "lr_inf.safetensors", src,
                       lambda t: t.replace('"lr": 0.05', '"lr": Infinity'))
    _write_ticket_with(d / "lr_huge.safetensors", src, lambda t: t.replace('"lr": 0.05', '"lr": 1e999'))
    _write_ticket_with(d / "step_frac.safetensors", src, _meta_edit(lambda m: m.update(rewind_step=2.5)))
    _write_ticket_with(d / "seed_huge.safetensors", src,
                       _meta_edit(lambda m: m["provenance"].update(data_seed=2**70)))
    _write_ticket_with(d / "sparsity_lots.safetensors", src, _meta_edit(lambda m: m.update(sparsity="lots")))
    _write_ticket_with(d / "classes_ten.safetensors", src, _meta_edit(lambda m: m["dataset"].update(num_classes="ten")))
    _write_ticket_with(d / "classes_zero.safetensors", src, _meta_edit(lambda m: m["dataset"].update(num_classes=0)))
    (d / "afile").write_text("a regular file\n")
    (d / "adir").mkdir()
    rows = [Row("smoke", "smoke", "digits", "mlp_2", "imp", "", "", level, 1 - 0.8**level, 0, 0.9, 10, 1e6, 0.0,
                f"level_{level}/ticket.safetensors") for level in range(4)]
    write_results(rows, d / "res")
    write_results(rows, d / "badmeta")
    (d / "badmeta" / "experiment.json").write_text('{"name": "smoke", ')
    for name, edit in [("nan_accuracy", lambda t: t.replace('"accuracy": 0.9', '"accuracy": NaN', 1)),
                       ("big_accuracy", lambda t: t.replace('"accuracy": 0.9', '"accuracy": 7', 1))]:
        (d / name).mkdir()
        (d / name / "results.jsonl").write_text(edit((d / "res" / "results.jsonl").read_text()))
    (d / "inf_sparsity").mkdir()
    csv_lines = (d / "res" / "results.csv").read_text().splitlines()
    csv_lines[2] = csv_lines[2].replace(",1,0.19999999999999996,", ",1,Infinity,", 1)
    (d / "inf_sparsity" / "results.csv").write_text("\n".join(csv_lines) + "\n")
    (d / "broken").mkdir()
    lines = (d / "res" / "results.jsonl").read_text().splitlines()
    lines[2] = lines[2][:40]
    (d / "broken" / "results.jsonl").write_text("\n".join(lines) + "\n")
    return d


def _tree(d: Path) -> dict[str, int]:
    return {str(p.relative_to(d)): p.stat().st_mtime_ns for p in d.rglob("*")}


@pytest.fixture(scope="module")
def outcomes(template, tmp_path_factory) -> dict[str, tuple[dict, dict, dict]]:
    """case -> (runner result, files before, files after), every case run once, two at a time."""
    base = tmp_path_factory.mktemp("cli-error-cases")
    cases, before = [], []
    for i, (_, argv, _) in enumerate(CASES):
        cwd = base / f"case_{i}"
        shutil.copytree(template, cwd)
        before.append(_tree(cwd))
        cases.append({"argv": argv, "cwd": str(cwd)})
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("cli_runner.py"))],
                          input=json.dumps(cases), capture_output=True, text=True, timeout=900, check=True)
    results = json.loads(proc.stdout)
    return {name: (r, b, _tree(base / f"case_{i}"))
            for i, ((name, _, _), r, b) in enumerate(zip(CASES, results, before))}


@pytest.mark.parametrize("name, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line(outcomes, name, argv, message):
    result, before, after = outcomes[name]
    err = result["stderr"]
    assert result["code"] == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    command = argv[0] if argv[0] != "trian" else ""
    assert lines[0].startswith(f"elth {command}: error: " if command else "elth: error: "), lines[0]
    assert message in lines[0]
    assert result["stdout"] == "", "nothing is printed as if work had begun"
    assert after == before, f"files changed: {sorted(set(after) ^ set(before))}"


def test_an_unexpected_exception_keeps_its_traceback_and_says_it_is_a_bug(monkeypatch, capsys):
    import elth.commands.inspect as inspect_command

    def broken(args):
        raise ZeroDivisionError("something elth did not expect")

    monkeypatch.setattr(inspect_command, "run", broken)
    assert main(["inspect", "x.safetensors"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "ZeroDivisionError: something elth did not expect" in err
    assert err.splitlines()[-1].startswith("elth inspect: internal error: this is a bug in elth")


def test_an_os_error_during_work_is_one_line(monkeypatch, capsys):
    import errno

    import elth.commands.inspect as inspect_command

    def disk_full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "runs/x/checkpoint.pt")

    monkeypatch.setattr(inspect_command, "run", disk_full)
    assert main(["inspect", "x.safetensors"]) == 2
    assert capsys.readouterr().err == "elth inspect: error: runs/x/checkpoint.pt: no space left on the device\n"


def test_sigterm_stops_a_command_as_ctrl_c_does():
    """`kill` (SIGTERM) unwinds the command like Ctrl-C (leases released, attempts recorded): one line, status 143."""
    script = """
import os, signal, sys
import elth.commands.inspect as inspect_command
from elth.cli import main

def killed(args):
    os.kill(os.getpid(), signal.SIGTERM)
    print("not reached: the signal raises in the command", flush=True)

inspect_command.run = killed
code = main(["inspect", "x.safetensors"])
assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # as it was before
sys.exit(code)
"""
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert p.returncode == 143, p.stderr
    assert p.stdout == ""
    assert p.stderr == "elth inspect: terminated (finished work is kept; run again to resume)\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="permissions do not stop root")
def test_a_directory_without_write_permission_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    monkeypatch.chdir(tmp_path)
    assert main(["train", *MLP, "--out", "locked/run"]) == 2
    assert "no permission to write in locked" in capsys.readouterr().err
    assert list(locked.iterdir()) == []


def test_the_console_script_gives_the_same_one_line(template, tmp_path):
    """The installed `elth` entry point (not the forking runner) on one case."""
    shutil.copytree(template, tmp_path / "w")
    elth = Path(sys.executable).with_name("elth")
    argv = [str(elth)] if elth.is_file() else [sys.executable, "-m", "elth.cli"]
    p = subprocess.run([*argv, "train", *MLP, "--lr", "inf"], cwd=tmp_path / "w", capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2
    assert p.stderr == "elth train: error: learning rate must be a finite number, got inf\n"


@pytest.mark.parametrize("variable, value, says", [
    ("ELTH_PROGRESS", "sparkles", "ELTH_PROGRESS='sparkles': expected bars or lines (or leave it unset)"),
    ("ELTH_LOG_EVERY", "abc", "ELTH_LOG_EVERY='abc': expected seconds between progress lines, a number >= 0"),
    ("ELTH_LOG_EVERY", "nan", "ELTH_LOG_EVERY='nan': expected seconds"),
])
def test_settings_from_the_environment_are_checked_at_the_start(template, tmp_path, monkeypatch, capsys,
                                                                  variable, value, says):
    shutil.copytree(template, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    monkeypatch.setenv(variable, value)
    assert main(["train", *MLP]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"elth train: error: {says}" + captured.err.split(says, 1)[1] and captured.out == ""
    assert len(captured.err.splitlines()) == 1 and not (tmp_path / "w" / "runs").exists()


def test_a_batch_larger_than_the_training_set_is_said(template, tmp_path, monkeypatch, capsys):
    shutil.copytree(template, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")
    assert main(["train", *MLP, "--batch-size", "1000000000", "--length", "1it"]) == 0
    assert ("warning: the batch size 1,000,000,000 is larger than the 1,437 training examples of digits: every step "
            "trains on all of them (one full batch per epoch)") in capsys.readouterr().err
