"""Logs a cluster user can read: bars on a terminal only, plain lines elsewhere; TensorBoard events."""
import dataclasses
import io
import json

import pytest

from elth.console import PlainProgress, progress_bar, use_bars
from elth.experiments import get_experiment, run_experiment
from elth.training.metrics import enable_tensorboard


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.delenv("ELTH_PROGRESS", raising=False)
    assert use_bars(_Terminal()) and not use_bars(io.StringIO())
    assert type(progress_bar(total=3, file=_Terminal())).__name__ == "tqdm"
    assert isinstance(progress_bar(total=3, file=io.StringIO()), PlainProgress)
    monkeypatch.setenv("ELTH_PROGRESS", "lines")
    assert not use_bars(_Terminal())
    monkeypatch.setenv("ELTH_PROGRESS", "bars")
    assert use_bars(io.StringIO())


def test_plain_lines_every_so_often_and_at_the_end():
    out = io.StringIO()
    bar = PlainProgress(total=100, desc="IMP level 1/3", file=out, every=3600)
    for _ in range(40):
        bar.update(1)
    assert out.getvalue() == ""  # nothing before the interval has passed
    bar.set_postfix({"loss": "0.512"})
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1
    assert text.startswith("IMP level 1/3: 40/100 it (40%), ") and "eta " in text and text.endswith("loss=0.512\n")
    out = io.StringIO()
    items = list(PlainProgress(range(5), desc="points", unit="pt", file=out, every=0))
    assert items == list(range(5)) and out.getvalue().splitlines()[-1].startswith("points: 5/5 pt (100%)")


@pytest.fixture
def tensorboard_on():
    pytest.importorskip("tensorboard", reason="tensorboard is an optional extra: pip install 'elth[tensorboard]'")
    yield
    enable_tensorboard(False)


def test_tensorboard_events_beside_the_metrics(tensorboard_on, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    smoke = get_experiment("smoke")
    part = dataclasses.replace(smoke.setups("smoke")[0], members=("mlp_2",), levels=(1,), baselines=(), seeds=1)
    run_experiment(smoke, "smoke", root=tmp_path / "store", out_dir=tmp_path / "out", setups=(part,),
                   progress=False, tensorboard=True)
    metrics = sorted((tmp_path / "store").rglob("metrics.jsonl"))
    assert len(metrics) == 3  # IMP levels 0, 1, 2
    for path in metrics:
        assert list(path.parent.glob("events.out.tfevents.*"))
        events = EventAccumulator(str(path.parent))
        events.Reload()
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        logged = [(r["step"], r["train_loss"]) for r in rows if r.get("train_loss") is not None]
        scalars = [(e.step, e.value) for e in events.Scalars("train_loss")]
        assert [s for s, _ in scalars] == [s for s, _ in logged]
        assert [v for _, v in scalars] == pytest.approx([v for _, v in logged], rel=1e-6)
        assert "test_accuracy" in events.Tags()["scalars"]


def test_percent_never_rounds_a_fraction_to_exactly_0_or_100():
    from elth.console import percent

    assert [percent(x) for x in (0, 1, 0.5, 0.123456)] == ["0.00%", "100.00%", "50.00%", "12.35%"]
    assert percent(0.99999) == "99.999%" and percent(1e-5) == "0.001%" and percent(0.9999996) == "99.99996%"
    assert percent(1 - 1e-13) not in ("100%", "100.00%")
