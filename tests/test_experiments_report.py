"""Aggregation, matched-sparsity comparisons, compute accounting and the report, on hand-made tables."""
import dataclasses
import math

import pytest

from elth.cli import main
from elth.experiments.aggregate import (
    HALF_LEVEL,
    aggregate,
    compare_ett,
    imp_curve,
    interpolate,
    read_at,
)
from elth.experiments.compute import elth_savings
from elth.experiments.report import summary_text, write_report
from elth.experiments.results import COLUMNS, Row, read_results, write_results
from elth.files import ACCURACY_FIGURE as FIGURE
from elth.files import REPORT_FILE as REPORT


def row(target, method, level, sparsity, seed, accuracy, source="", train_flops=10.0, mask_cost=0.0):
    return Row("hand", "cpu", "fashion_mnist", target, method, source,
               "appending" if source else "", level, sparsity, seed, accuracy, 100, train_flops, mask_cost,
               f"t/{target}/{method}/{level}/{seed}")


def table() -> list[Row]:
    rows = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for target in ("mlp_2", "mlp_3"):
            rows.append(row(target, "dense", 0, 0.0, seed, 0.90 + shift, train_flops=100.0, mask_cost=10.0))
            for level, acc in ((1, 0.89), (2, 0.88), (3, 0.86)):
                sp = 1 - 0.8 ** level
                rows.append(row(target, "imp", level, sp, seed, acc + shift,
                                train_flops=100.0 * 0.8 ** level, mask_cost=10.0 + 100.0 * level))
            rows.append(row(target, "snip", 2, 0.36, seed, 0.80 + shift, train_flops=64.0, mask_cost=11.0))
            rows.append(row(target, "random", 2, 0.36, seed, 0.70 + shift, train_flops=64.0, mask_cost=210.0))
        # mlp_3's ticket stretched from mlp_2 at level 2 lands sparser than IMP's level 2
        rows.append(row("mlp_3", "ett", 2, 0.40 + 0.002 * seed, seed, 0.85 + shift, source="mlp_2",
                        train_flops=60.0, mask_cost=210.0))
        rows.append(row("mlp_3", "ett", 3, 0.52, seed, 0.80 + shift, source="mlp_2",
                        train_flops=50.0, mask_cost=310.0))
        rows.append(row("mlp_2", "ett", 2, 0.30, seed, 0.87 + shift, source="mlp_3",
                        train_flops=70.0, mask_cost=210.0))
    return rows


def test_mean_and_sample_std_over_seeds():
    pts = {(p.target, p.method, p.level): p for p in aggregate(table())}
    p = pts[("mlp_3", "ett", 2)]
    assert p.n == 2
    assert p.accuracy == pytest.approx(0.86)
    assert p.accuracy_std == pytest.approx(0.02 / math.sqrt(2))  # sample std of {0.85, 0.87}
    assert p.sparsity == pytest.approx(0.401)
    assert pts[("mlp_2", "dense", 0)].accuracy == pytest.approx(0.91)


def test_reading_a_curve_at_a_sparsity():
    pts = aggregate(table())
    imp = imp_curve(pts, "mlp_3")  # dense (0%), 20%, 36%, 48.8%
    # exact points
    assert read_at(imp, 0.36).accuracy == pytest.approx(0.89)
    # between 36% and 48.8%: linear in log density
    x = math.log(0.6)
    w = (x - math.log(0.64)) / (math.log(0.512) - math.log(0.64))
    assert interpolate(imp, 0.40) == pytest.approx(0.89 + w * (0.87 - 0.89))
    # beyond the last point by less than half a level: the end segment extended, marked
    sp = 1 - 0.512 * math.exp(-0.5 * HALF_LEVEL)
    r = read_at(imp, sp)
    assert r.extrapolated
    slope = (0.87 - 0.89) / (math.log(0.512) - math.log(0.64))
    assert r.accuracy == pytest.approx(0.87 + slope * (-0.5 * HALF_LEVEL))
    assert interpolate(imp, sp) is None
    # further out: nothing
    assert read_at(imp, 1 - 0.512 * 0.8) is None
    # a one-point curve is read only near its point
    snip = [p for p in pts if p.target == "mlp_3" and p.method == "snip"]
    assert read_at(snip, 0.37).extrapolated and read_at(snip, 0.37).accuracy == pytest.approx(0.81)
    assert read_at(snip, 0.5) is None


def test_ett_compared_at_its_own_sparsity_not_its_level():
    comps = {(c.target, c.source, c.level): c for c in compare_ett(aggregate(table()))}
    c = comps[("mlp_3", "mlp_2", 2)]
    assert c.sparsity == pytest.approx(0.401)
    # IMP is read at 40.1%, between its level-2 (36%) and level-3 (48.8%) points: below level 2's 0.89
    assert c.imp_at_sparsity.accuracy < 0.89 and not c.imp_at_sparsity.extrapolated
    assert c.imp_at_sparsity.accuracy == pytest.approx(interpolate(imp_curve(aggregate(table()), "mlp_3"), 0.401))
    # the best baseline there is SNIP (0.81 > random's 0.71), read from its single point (extrapolated)
    assert c.best_baseline == "SNIP" and c.baseline_at_sparsity.accuracy == pytest.approx(0.81)
    assert c.baseline_at_sparsity.extrapolated


def test_elth_saving_counts_one_imp_run_against_imp_on_every_target():
    savings = {(s.source, s.level): s for s in elth_savings(aggregate(table()))}
    s = savings[("mlp_2", 2)]
    assert s.targets == ("mlp_3",)
    imp2_total = 100.0 * 0.64 + 210.0  # IMP level-2 ticket: its training + mask cost
    assert s.elth_flops == pytest.approx(imp2_total + 60.0)
    assert s.imp_each_flops == pytest.approx(2 * imp2_total)
    assert s.ratio == pytest.approx(2 * imp2_total / (imp2_total + 60.0))


def test_results_round_trip_through_jsonl_and_csv(tmp_path):
    rows = table()
    jl, csv_path = write_results(rows, tmp_path)
    assert sorted(read_results(jl), key=repr) == sorted(rows, key=repr)
    assert sorted(read_results(csv_path), key=repr) == sorted(rows, key=repr)
    assert csv_path.read_text().splitlines()[0].split(",") == list(COLUMNS)


def test_report_states_actual_sparsities_and_writes_the_figure(tmp_path):
    write_results(table(), tmp_path)
    report = write_report(tmp_path)
    text = report.read_text()
    assert report.name == REPORT and (tmp_path / FIGURE).stat().st_size > 10_000
    assert "86.00 ± 1.41 (40.1%)" in text  # the ETT ticket's actual sparsity, not its level's 36%
    assert "| level 2 (36.00%) | level 3 (48.80%) |" in text
    assert "## Source × target" in text and "## Compute" in text and "E-LTH saving" in text
    assert "ETT − IMP" in text
    # IMP's seed spread: accuracies 0.02 apart at every level, so a std of 1.41 points everywhere
    assert ("Seed-to-seed spread of IMP's accuracy (standard deviation over 2 seeds, in points, mean over "
            "levels 1-3; a protocol aims at 0.3 or less): MLP-2 1.41 (at most 1.41, level 1); MLP-3 1.41") in text


def test_a_smoke_scale_report_says_its_numbers_are_a_plumbing_check(tmp_path):
    import dataclasses

    write_results(table(), tmp_path / "cpu")
    write_results([dataclasses.replace(r, scale="smoke") for r in table()], tmp_path / "smoke")
    note = "**A plumbing check, not a result.**"
    assert note not in write_report(tmp_path / "cpu").read_text()
    smoke = write_report(tmp_path / "smoke").read_text().splitlines()
    assert smoke[2].startswith(f"> {note} The `smoke` scale trains for a few iterations")


def test_single_level_experiments_get_a_bar_chart(tmp_path):
    rows = [r for r in table() if r.method in ("dense", "imp", "ett", "snip") and r.level != 3]
    write_results(rows, tmp_path)
    write_report(tmp_path)
    assert (tmp_path / FIGURE).is_file()
    assert "level 2 (36.00%)" in (tmp_path / REPORT).read_text()


def test_report_command(tmp_path, capsys):
    write_results(table(), tmp_path / "exp")
    assert main(["report", str(tmp_path / "exp" / "results.csv"), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / REPORT).is_file() and (tmp_path / "rep" / FIGURE).is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such results file" in capsys.readouterr().err


def test_a_source_keeps_its_colour_whether_stretched_or_squeezed():
    from dataclasses import replace

    from elth.experiments.plots import _ett_curves, _style

    rows = [replace(row(t, "ett", 2, 0.4, 0, 0.8, source="mlp_2"), strategy=s)
            for t, s in (("mlp_3", "appending"), ("mlp_1", "consecutive"), ("mlp_3", "interpolation 1"))]
    points = aggregate(rows)
    keys = _ett_curves(points, ["mlp_1", "mlp_2", "mlp_3"])
    colour = {p.strategy: _style(p.key, keys)["color"] for p in points}
    assert colour["appending"] == colour["consecutive"]  # one source, one colour in every panel
    assert colour["interpolation 1"] != colour["appending"]  # an ablation's other strategy stands apart


def test_a_collapsed_bar_does_not_set_the_axis():
    from elth.experiments.plots import _far_below

    assert _far_below([86.6, 85.7, 83.4, 32.2, 78.0]) == {3}
    assert _far_below([86.6, 85.7, 83.4]) == set()  # nothing far below: every bar sets the axis
    assert _far_below([50.0, 90.0]) == set()  # too few bars to call one an outlier


def test_terminal_table_columns_fit_the_longest_label():
    matched = [dataclasses.replace(row("mlp_3", "ett", 2, 0.36, seed, 0.84, source="mlp_2"), strategy="appending matched")
               for seed in (0, 1)]
    header, *lines = summary_text(table() + matched).splitlines()
    assert any("(appending matched)" in line for line in lines)
    # the sparsity column ends where its heading does on every line, however long a method's label
    assert {line.index("%") + 1 for line in lines} == {header.index("sparsity") + len("sparsity")}
