"""The experiments elth ships: the paper's figures and tables, a smoke test and the demo, each a spec
file in `spec_files/` (the same form as an experiment of one's own: `spec_file`), with its claims.

At `cpu` scale the runs are sized for a 2-core CPU on Fashion-MNIST (a few hours at most); each
setup's `note` says what differs from the paper. Lengths there are in iterations at batch 128
(469 iterations = one Fashion-MNIST epoch).
"""
from __future__ import annotations

import difflib
from pathlib import Path

from elth.experiments.spec import Experiment, SpecError
from elth.experiments.spec_file import load_experiment_file

SPEC_FILES = Path(__file__).parent / "spec_files"
#: The order `elth experiment --list` and the verdict tables follow.
ORDER = ("resnet_family", "resnet_depths", "ett_baselines", "replicate_units", "earlier_later", "vgg_family",
         "imagenet_table1", "dpf_table3", "rigl_table2", "lmc_figure8", "dataset_table6", "imagenet_table7",
         "fc_table5", "width_family", "vit_family", "smoke", "demo")

EXPERIMENTS: dict[str, Experiment] = {
    name: load_experiment_file(SPEC_FILES / f"{name}.toml", shipped=True) for name in ORDER}
SMOKE = EXPERIMENTS["smoke"]
DEMO = EXPERIMENTS["demo"]


def get_experiment(name: str) -> Experiment:
    try:
        return EXPERIMENTS[name]
    except KeyError:
        close = difflib.get_close_matches(name, EXPERIMENTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SpecError(f"unknown experiment {name!r}{hint}; the experiments are: {', '.join(EXPERIMENTS)} "
                        "(`elth experiment --list` describes them)") from None
