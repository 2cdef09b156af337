"""A store written by an earlier version of elth is found again: re-running its experiment trains nothing."""
import hashlib
import importlib.util
import shutil
from pathlib import Path

from elth.experiments.results import read_lmc, read_results
from elth.experiments.runner import run_experiment
from elth.training.step import SGDStep

FIXTURES = Path(__file__).parent / "fixtures"
OLD = FIXTURES / "old_store"


def _tiny_experiment():
    spec = importlib.util.spec_from_file_location("old_store", FIXTURES / "old_store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TINY


def _contents(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_an_old_store_is_reused_and_nothing_trains(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the store and results at the relative paths they were recorded with
    store = Path("store")
    shutil.copytree(OLD / "store", store)
    before = _contents(store)

    def no_training(self, step, x, y):
        raise AssertionError(f"step {step} trained: a finished run in the old store was not found")

    monkeypatch.setattr(SGDStep, "__call__", no_training)
    run_experiment(_tiny_experiment(), "smoke", root=store, out_dir="results", progress=False)

    assert _contents(store) == before  # no run directory added, no file rewritten with other bytes
    assert read_results("results") == read_results(OLD / "results")
    assert read_lmc("results") == read_lmc(OLD / "results")
