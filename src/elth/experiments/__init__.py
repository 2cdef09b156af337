"""The paper's figures and tables as runnable specs: expansion into runs, execution, results, reports."""
from elth.experiments.results import COLUMNS, Row, read_results, write_results
from elth.experiments.runner import ExperimentFailed, Outcome, run_experiment
from elth.experiments.shipped import EXPERIMENTS, get_experiment
from elth.experiments.spec import SCALES, Experiment, Setup, SpecError, Transfer, expand

__all__ = [
    "COLUMNS",
    "EXPERIMENTS",
    "Experiment",
    "ExperimentFailed",
    "Outcome",
    "Row",
    "SCALES",
    "Setup",
    "SpecError",
    "Transfer",
    "expand",
    "get_experiment",
    "read_results",
    "run_experiment",
    "write_results",
]
