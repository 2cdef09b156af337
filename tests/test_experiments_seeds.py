"""Every cpu-scale spec runs enough seeds for a paired 95% interval to decide a claim."""
from elth.experiments import get_experiment
from elth.experiments.shipped import EXPERIMENTS
from elth.experiments.verdicts import MIN_SEEDS


def test_every_cpu_scale_runs_at_least_three_seeds():
    cpu = [(e.name, s) for e in EXPERIMENTS.values() for name, setups in e.scales if name == "cpu" for s in setups]
    assert len(cpu) >= 8
    for name, setup in cpu:
        assert setup.seeds >= MIN_SEEDS, f"{name} runs {setup.seeds} seed(s) at cpu scale"


def test_cpu_mlp_protocols_decay_the_learning_rate():
    for name in ("fc_table5", "demo"):
        for setup in get_experiment(name).setups("cpu"):
            milestones = dict(setup.protocol).get("milestones")
            assert milestones, f"{name}: constant LR at cpu scale"
