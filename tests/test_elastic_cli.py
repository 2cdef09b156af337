"""`elth transform`: dry-run table, written tickets, and errors (exit 2, nothing written)."""
import re

import pytest
import torch

from elth import cli
from elth.data.base import DatasetInfo
from elth.elastic import model_view
from elth.tickets import Ticket, load_ticket, save_ticket


def random_ticket(name: str, seed: int, density: float = 0.3) -> Ticket:
    view = model_view(name, (3, 32, 32), 10)
    g = torch.Generator().manual_seed(seed)
    state = {
        k: torch.tensor(5) if k.endswith("num_batches_tracked") else torch.rand(shape, generator=g) + 0.1
        for k, shape in view.shapes
    }
    mask = {k: torch.rand(state[k].shape, generator=g) < density for k in view.prunable}
    dense = {k: state[k] for k in mask}
    for k, m in mask.items():
        state[k] = state[k] * m
    return Ticket(name, DatasetInfo("cifar10", (3, 32, 32), 10), state, mask, provenance={"method": "test"},
                  dense=dense)


@pytest.fixture(scope="module")
def tickets(tmp_path_factory):
    d = tmp_path_factory.mktemp("tickets")
    r20, r56 = d / "r20.safetensors", d / "r56.safetensors"
    save_ticket(random_ticket("cifar_resnet_20", 0), r20)
    save_ticket(random_ticket("cifar_resnet_56", 1), r56)
    return r20, r56


@pytest.fixture
def elth(capsys):

    def run(*argv):
        code = cli.main(["transform", *map(str, argv)])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def test_transform_is_registered():
    assert cli.COMMANDS["transform"][0] == "transform"


def test_dry_run_stretch_prints_the_plan_and_writes_nothing(elth, tickets, tmp_path):
    out_path = tmp_path / "r56.safetensors"
    code, out, err = elth(tickets[0], "--to", "cifar_resnet_56", "--dry-run", "-o", out_path)
    assert code == 0, err
    assert "plan: 0,1,2,1,2,1,2,1,2;0,1,2,1,2,1,2,1,2;0,1,2,1,2,1,2,1,2" in out
    assert re.search(r"^1\s+layer1\.0\s+<-\s+layer1\.0\s+transition$", out, re.M)
    assert re.search(r"^2\s+layer2\.3\s+<-\s+layer2\.1\s+replica$", out, re.M)
    assert re.search(r"^3\s+layer3\.8\s+<-\s+layer3\.2\s+replica$", out, re.M)
    assert len(re.findall(r"<-", out)) == 27
    assert re.search(r"sparsity: source \d+\.\d\d% .* -> target \d+\.\d\d%", out)
    assert "nothing written" in out and not out_path.exists()


def test_dry_run_squeeze_marks_dropped_units(elth, tickets):
    code, out, _ = elth(tickets[1], "--to", "cifar_resnet_20", "--squeeze", "interval", "--dry-run")
    assert code == 0
    assert "plan: 0,1,5;0,1,5;0,1,5" in out
    assert re.search(r"^2\s+layer2\.2\s+<-\s+layer2\.5$", out, re.M)
    dropped = re.findall(r"^(\d)\s+-\s+(layer\d\.\d)\s+dropped$", out, re.M)
    assert dropped[:6] == [("1", f"layer1.{u}") for u in (2, 3, 4, 6, 7, 8)] and len(dropped) == 18


def test_dry_run_marks_random_replicas(elth, tickets):
    code, out, _ = elth(tickets[0], "--to", "cifar_resnet_32", "--random-replicas", "--dry-run")
    assert code == 0 and re.search(r"layer1\.3\s+<-\s+layer1\.1\s+replica, random mask", out)


def test_run_writes_the_ticket_with_provenance(elth, tickets, tmp_path):
    out_path = tmp_path / "out" / "r32.safetensors"
    code, out, err = elth(tickets[0], "--to", "cifar_resnet_32", "--order", "interpolation", "-o", out_path)
    assert code == 0, err
    assert f"wrote {out_path}" in out and "sparsity: source" in out
    result, source = load_ticket(out_path), load_ticket(tickets[0])
    assert result.model == "cifar_resnet_32"
    assert result.provenance["plan"] == "0,1,1,2,2;0,1,1,2,2;0,1,1,2,2"
    assert result.provenance["source"]["path"] == str(tickets[0])
    assert result.provenance["source"]["checksum"] == source.checksum()
    assert torch.equal(result.state["layer2.2.conv2.weight"], source.state["layer2.1.conv2.weight"])


def test_explicit_plan(elth, tickets, tmp_path):
    out_path = tmp_path / "r32.safetensors"
    code, _, err = elth(tickets[0], "--to", "cifar_resnet_32", "--plan", "0,2,2,1,1", "--random-replicas",
                        "--seed", "4", "-o", out_path)
    assert code == 0, err
    p = load_ticket(out_path).provenance
    assert p["plan"] == "0,2,2,1,1;0,2,2,1,1;0,2,2,1,1" and p["random_replicas"] and p["replica_seed"] == 4


@pytest.mark.parametrize(
    "args, fragment",
    [(["--to", "cifar_vgg_13"], "one family and width"),
     (["--to", "cifar_resnet_32", "--plan", "0,1,2,1"], "leaving layer1.4 unfilled"),
     (["--to", "cifar_resnet_32", "--plan", "1,1,2,1,2"], "transition"),
     (["--to", "cifar_resnet_32", "--plan", "0,1,2,1,9"], "names source unit 9"),
     (["--to", "cifar_resnet_32", "--plan", "0,1,2,1,2;0,1,2,0,2;0,1,2,1,2"], "cannot take source unit layer2.0"),
     (["--to", "cifar_resnet_32", "--plan", "0,1,2,1,2", "--order", "appending"], "replaces the strategy options"),
     (["--to", "cifar_resnet_32", "--units", "3"], "cannot replicate unit 3"),
     (["--to", "cifar_resnet_14", "--drop", "0"], "transition"),
     (["--to", "no_such_model"], "unknown model")],
)
def test_errors_exit_2_and_write_nothing(elth, tickets, tmp_path, args, fragment):
    out_path = tmp_path / "never.safetensors"
    code, out, err = elth(tickets[0], *args, "-o", out_path)
    assert code == 2 and fragment in err and err.startswith("elth transform: error: ")
    assert not out_path.exists() and list(tmp_path.iterdir()) == []


def test_random_replicas_of_a_ticket_without_dense_weights_exit_2(elth, tmp_path):
    source = random_ticket("cifar_resnet_20", 2)
    source.dense = None
    path = save_ticket(source, tmp_path / "old.safetensors")
    out_path = tmp_path / "never.safetensors"
    code, _, err = elth(path, "--to", "cifar_resnet_32", "--random-replicas", "-o", out_path)
    assert code == 2 and "random replicas need a ticket with dense rewind weights" in err
    assert not out_path.exists()


def test_missing_output_or_ticket_exit_2(elth, tickets, tmp_path):
    code, _, err = elth(tickets[0], "--to", "cifar_resnet_32")
    assert code == 2 and "-o OUT.safetensors" in err
    code, _, err = elth(tmp_path / "none.safetensors", "--to", "cifar_resnet_32", "--dry-run")
    assert code == 2 and "no such ticket file" in err


def test_help_documents_the_plan_syntax(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["transform", "--help"])
    text = capsys.readouterr().out
    assert info.value.code == 0
    assert "Plan syntax" in text and "--plan 0,1,2,1,2" in text and "--random-replicas" in text
