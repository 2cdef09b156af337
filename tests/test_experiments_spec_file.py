"""Experiments as TOML spec files: the shipped ones are such files, any experiment prints as one and
reads back to the same runs, a bad file is one error naming the key, and the README's own runs."""
import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_readme_api import _own_family_workspace, code_blocks

from elth.cli import main
from elth.experiments.shipped import EXPERIMENTS
from elth.experiments.spec import expand
from elth.experiments.spec_file import experiment_toml, load_experiment_file
from elth.experiments.verdicts import claims_of
from elth.runs import canonical_json

FIXTURES = Path(__file__).parent / "fixtures"


def _digest(setup) -> str:
    """What decides a setup's run directories: its context fields and its runs' identities."""
    runs = expand(setup)
    context = {k: getattr(setup, k) for k in ("dataset", "members", "preset", "protocol", "rewind", "prune_fraction")}
    identity = {"context": context, "imp": [dataclasses.asdict(r) for r in runs.imp],
                "tickets": [r.hparams() for r in runs.tickets],
                "lmc": [[r.target, r.level, r.seed, r.points, r.ticket.hparams() if r.ticket else None] for r in runs.lmc]}
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def test_the_shipped_spec_files_give_the_runs_their_python_definitions_gave():
    """Digests of what decides every shipped setup's run directories, recorded from the experiments
    as they were written in Python: the same runs, so the same directories (stores are found again)."""
    pinned = json.loads((FIXTURES / "shipped_runs.json").read_text())
    now = {f"{name}/{scale}": [_digest(s) for s in setups] for name, e in EXPERIMENTS.items() for scale, setups in e.scales}
    assert now == pinned


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_experiment_prints_as_a_file_that_reads_back_to_the_same_runs_and_claims(name, tmp_path):
    experiment = EXPERIMENTS[name]
    claims = [(c.where, c.statement, c.effect, c.margin, c.measure) for c in claims_of(name)]
    path = tmp_path / f"{name}.toml"
    path.write_text(experiment_toml(experiment))
    back = load_experiment_file(path, shipped=True)
    assert dataclasses.replace(back, source="") == experiment
    assert [(c.where, c.statement, c.effect, c.margin, c.measure) for c in claims_of(name)] == claims


GOOD = """name = "mine"
title = "Mine"

[[scales.smoke]]
dataset = "synthetic_1x8x8_n128"
members = ["mlp_1", "mlp_2"]
levels = [1]
preset = "smoke"
rewind = "2it"
seeds = 1

[[claims]]
statement = "on par"
measure = "ett_vs_imp"
margin = 0.5
"""


@pytest.mark.parametrize("change, says", [
    (("members = ", "member = "), "scales.smoke[0].member: unknown key (did you mean 'members'?)"),
    (("seeds = 1", 'seeds = "1"'), 'scales.smoke[0].seeds: "1" is not an integer'),
    (('"mlp_2"]', '"mlp_0"]'), "scales.smoke[0].members[1]: unknown model 'mlp_0'"),
    (('"mlp_2"]', '"cifar_resnet_8_8"]'), "scales.smoke[0].transfers: mlp_1 -> cifar_resnet_8_8 crosses families"),
    (('measure = "ett_vs_imp"', 'measure = "ett_vs_dpf"'),
     "claims[0].measure: ett_vs_dpf needs dpf among the baselines, which no scale of the experiment makes"),
    (('measure = "ett_vs_imp"', 'measure = "ett_vs_imps"'), "claims[0].measure: unknown measure 'ett_vs_imps' (did you mean 'ett_vs_imp'?)"),
    (("[[scales.smoke]]", "[[scales.tiny]]"), "scales.tiny: unknown scale"),
    (("levels = [1]", "levels = [1"), "not valid TOML"),
    (('title = "Mine"\n', 'title = "Mine"\nplugins = ["nosuch.py"]\n'), "plugins[0]: 'nosuch.py': no such file"),
    (("margin = 0.5", "margin = 0.5\nparams = { depth = 14 }"), "claims[0].params.depth: ett_vs_imp has no parameter 'depth'"),
])
def test_a_bad_spec_file_is_one_error_naming_the_key_and_nothing_runs(change, says, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert GOOD.count(change[0]) == 1
    Path("mine.toml").write_text(GOOD.replace(*change))
    assert main(["experiment", "mine.toml", "--scale", "smoke", "--root", "store", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("elth experiment: error: mine.toml: ") and says in err, err
    assert len(err.strip().splitlines()) == 1
    assert not Path("store").exists()


def test_show_prints_a_shipped_experiment_as_a_file_to_start_from(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "--show", "demo"]) == 0
    Path("mine.toml").write_text(capsys.readouterr().out.replace('name = "demo"', 'name = "mine"'))
    assert main(["experiment", "mine.toml", "--scale", "smoke", "--dry-run"]) == 0
    assert "runs in all" in capsys.readouterr().out


def test_the_readme_spec_file_of_ones_own_runs_as_printed(tmp_path):
    """The README's my_family.toml beside my_models.py, run with the printed command in a fresh
    process (no ELTH_PLUGINS: the file names its plugin); its report judges the file's claim, and
    `elth report` in another process judges it again from the file."""
    text, env = _own_family_workspace(tmp_path)
    (spec,) = [b for b in code_blocks(text, "toml") if b.startswith("# my_family.toml")]
    (tmp_path / "my_family.toml").write_text(spec)
    (command,) = [b for b in code_blocks(text) if b.startswith("elth experiment my_family.toml")]
    p = subprocess.run(["bash", "-euc", command], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    out = tmp_path / "runs" / "experiments" / "my_family-cpu"
    rows = (out / "results.csv").read_text().splitlines()
    assert sum(",ett," in r for r in rows) == 6  # my_net_2 <-> my_net_4, three seeds
    verdict = [line for line in (out / "report.md").read_text().splitlines() if "on par with IMP" in line]
    assert len(verdict) == 1 and "| 3 |" in verdict[0]
    (out / "report.md").unlink()
    p = subprocess.run([sys.executable, "-m", "elth", "report", str(out)], cwd=tmp_path, capture_output=True, text=True,
                       timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    assert "on par with IMP" in (out / "report.md").read_text()
